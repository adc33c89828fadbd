"""CIFAR-10, CIFAR-100, SVHN and MNIST from the on-disk layouts torchvision uses, never running a pickle.

Where the files live (first that applies): the `root` argument, else the environment variable
ADVFEATURES_DATA, else `~/data`. Under that root the layouts are exactly those of torchvision's downloaders,
so a root already filled by torchvision works as is:

    ROOT/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
    ROOT/cifar-100-python/{train, test, meta}
    ROOT/{train,test}_32x32.mat                              (SVHN, MATLAB v5)
    ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte   (or the same files with .gz)

The CIFAR "python" batches are pickles (Python 2 cPickle, protocol 2). They are read by `load_cifar_pickle`,
an unpickler that hands out only numpy's array-rebuilding functions and refuses every other global, so a
doctored batch fails with CorruptFileError and its payload never runs. With `download=True`, missing files
are fetched with torchvision's download utilities (URL + md5 checked) and then read by the same code; none of
torchvision's own dataset classes ever opens a file.

Every loader returns a TensorImageDataset: float images (N, C, H, W) in [0, 1], int64 labels, class names.
"""

from __future__ import annotations

import gzip
import os
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import BadInputError, CorruptFileError
from .base import TensorImageDataset

try:  # numpy >= 2 moved the array-rebuilding helper; old CIFAR pickles still name numpy.core
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct

Root = str | os.PathLike | None  # a data root as users pass it

DATA_ROOT_ENV = "ADVFEATURES_DATA"
DEFAULT_DATA_ROOT = "~/data"

# Official sources and checksums (the same ones torchvision's dataset classes use).
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/{name}"
SVHN_MD5 = {
    "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
    "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
}
MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR_IMAGE_BYTES = 3 * 32 * 32
SPLIT_NAMES = ("train", "test")


# ---------------------------------------------------------------------------------------------------------
# Where the data lives, and getting it there


def data_root(root: Root = None) -> Path:
    """The data root: `root` if given, else $ADVFEATURES_DATA, else ~/data (user home expanded)."""
    chosen = root if root is not None else os.environ.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT
    return Path(chosen).expanduser()


def _check_split(split: str) -> None:
    if split not in SPLIT_NAMES:
        raise BadInputError(f"unknown split {split!r}; choose 'train' or 'test'")


def _ensure_present(
    name: str, root: Path, needed: Sequence[Path], download: bool, fetch: Callable[[Path], None], layout: str
) -> None:
    """Make sure every `needed` file exists, downloading into root first when allowed. Cheap: stats only."""
    if all(path.is_file() for path in needed):
        return
    if download:
        try:
            fetch(root)
        except (OSError, RuntimeError, ValueError) as err:  # URLError is an OSError; bad md5 a RuntimeError
            reason = " ".join(str(err).split())  # one line, whatever the downloader said
            raise BadInputError(
                f"{name}: could not download into {root} ({reason}); download on a machine with internet and "
                f"copy {layout} under {root}"
            ) from err
    missing = [path for path in needed if not path.is_file()]
    if not missing:
        return
    if not root.is_dir():
        problem = f"data root {root} " + ("is not a folder" if root.exists() else "does not exist")
    else:
        problem = f"{missing[0]} is missing" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
    if download:
        problem += " even after the download"
    raise BadInputError(
        f"{name}: {problem}; download it with `--download` (download=True) on a machine with internet, or "
        f"place {layout} under {root} (the data root is the root argument, else ${DATA_ROOT_ENV}, else "
        f"{DEFAULT_DATA_ROOT})"
    )


def _tv_download_utils():
    """torchvision's download helpers (fetch with md5 check, archive extraction), imported only when used."""
    from torchvision.datasets import utils

    return utils


# ---------------------------------------------------------------------------------------------------------
# CIFAR: pickles read with an allow-list unpickler


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """What `_codecs.encode` does for bytes pickled by Python 3 at protocol 2, limited to latin-1."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


# The only globals a CIFAR batch (or its meta file) refers to: numpy's array and dtype rebuilding. Both module
# spellings of _reconstruct occur (numpy 1 and numpy 2 writers); _codecs.encode and bytes appear in batches
# re-pickled by Python 3 at protocol 2; __builtin__ is the Python 2 name of builtins.
_ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_bytes,
    ("builtins", "bytes"): bytes,
    ("__builtin__", "bytes"): bytes,
}


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in _ALLOWED_GLOBALS; anything else is refused unrun."""

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="bytes")  # CIFAR batches are Python 2 pickles: str keys become bytes
        self.path = path

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise CorruptFileError(
                f"{self.path}: refused - the pickle asks for {module}.{name}, which no CIFAR file needs "
                "(nothing in it was run); delete it and download CIFAR again"
            ) from None

    def persistent_load(self, pid):
        raise CorruptFileError(f"{self.path}: refused - it uses pickle persistent ids, no CIFAR file has")


def _text(value) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


def load_cifar_pickle(path: Path) -> dict[str, object]:
    """Read one CIFAR python file (a batch or meta) safely; returns its dict with keys decoded to str.

    Raises CorruptFileError naming the path when the file is truncated, not a pickle, not a dict, or asks
    for anything beyond numpy arrays, lists, numbers and strings.
    """
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, path).load()
    except CorruptFileError:
        raise
    except MemoryError as err:
        raise CorruptFileError(f"{path}: implausibly large contents ({err}); download it again") from err
    except Exception as err:  # truncation (EOFError, UnpicklingError), garbage (ValueError, KeyError, ...)
        raise CorruptFileError(
            f"{path}: not a readable CIFAR python file ({type(err).__name__}: {err}); it may be truncated - "
            "delete it and download CIFAR again"
        ) from err
    if not isinstance(obj, dict):
        raise CorruptFileError(f"{path}: expected a dict, found {type(obj).__name__}; download it again")
    return {_text(key): value for key, value in obj.items()}


def _cifar_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 3, 32, 32) and int64 labels (N,) from one CIFAR batch, with every shape checked."""
    batch = load_cifar_pickle(path)
    data, labels = batch.get("data"), batch.get(label_key)
    fix = "delete it and download CIFAR again"
    if not isinstance(data, np.ndarray) or labels is None:
        raise CorruptFileError(f"{path}: expected keys 'data' (numpy array) and {label_key!r}; {fix}")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR_IMAGE_BYTES:
        raise CorruptFileError(
            f"{path}: 'data' must be uint8 of shape (N, {CIFAR_IMAGE_BYTES}), "
            f"got {data.dtype} {data.shape}; {fix}"
        )
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as err:
        raise CorruptFileError(f"{path}: {label_key!r} is not a list of integers ({err}); {fix}") from err
    if labels.shape != (data.shape[0],):
        raise CorruptFileError(
            f"{path}: {data.shape[0]} images but {label_key!r} has shape {labels.shape}; {fix}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise CorruptFileError(
            f"{path}: labels must lie in 0..{num_classes - 1}, found [{labels.min()}, {labels.max()}]; {fix}"
        )
    return data.reshape(-1, 3, 32, 32), labels  # rows are stored channel-major: 1024 R, 1024 G, 1024 B


def _cifar_dataset(
    folder: Path, files: Sequence[str], label_key: str, num_classes: int, classes: list[str], name: str
) -> TensorImageDataset:
    parts = [_cifar_batch(folder / f, label_key, num_classes) for f in files]
    images = torch.from_numpy(np.concatenate([p[0] for p in parts])).float().div_(255)
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return TensorImageDataset(images, labels, num_classes, classes, source=f"{name} {folder}")


def load_cifar10(split: str, root: Root = None, download: bool = False) -> TensorImageDataset:
    """CIFAR-10 (50000 train / 10000 test, 3x32x32) from ROOT/cifar-10-batches-py."""
    _check_split(split)
    base = data_root(root)
    folder = base / "cifar-10-batches-py"
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]

    def fetch(target: Path) -> None:
        _tv_download_utils().download_and_extract_archive(CIFAR10_URL, target, md5=CIFAR10_MD5)

    _ensure_present("cifar10", base, [folder / f for f in files], download, fetch, "cifar-10-batches-py/")
    return _cifar_dataset(folder, files, "labels", 10, CIFAR10_CLASSES, "cifar10")


def _cifar100_classes(folder: Path) -> list[str]:
    """Fine label names from cifar-100-python/meta when it is there (read safely), else '0'..'99'."""
    meta_path = folder / "meta"
    if not meta_path.is_file():
        return [str(i) for i in range(100)]
    names = load_cifar_pickle(meta_path).get("fine_label_names")
    if not isinstance(names, list) or len(names) != 100:
        raise CorruptFileError(f"{meta_path}: expected 100 'fine_label_names'; download CIFAR-100 again")
    return [_text(n) for n in names]


def load_cifar100(split: str, root: Root = None, download: bool = False) -> TensorImageDataset:
    """CIFAR-100 with its 100 fine labels (50000 train / 10000 test, 3x32x32) from ROOT/cifar-100-python."""
    _check_split(split)
    base = data_root(root)
    folder = base / "cifar-100-python"

    def fetch(target: Path) -> None:
        _tv_download_utils().download_and_extract_archive(CIFAR100_URL, target, md5=CIFAR100_MD5)

    _ensure_present("cifar100", base, [folder / split], download, fetch, "cifar-100-python/")
    return _cifar_dataset(folder, [split], "fine_labels", 100, _cifar100_classes(folder), "cifar100")


# ---------------------------------------------------------------------------------------------------------
# SVHN: MATLAB v5 files (scipy reads them without running anything)


def load_svhn(split: str, root: Root = None, download: bool = False) -> TensorImageDataset:
    """SVHN cropped digits (73257 train / 26032 test, 3x32x32) from ROOT/{train,test}_32x32.mat."""
    _check_split(split)
    base = data_root(root)
    name = f"{split}_32x32.mat"
    path = base / name

    def fetch(target: Path) -> None:
        _tv_download_utils().download_url(SVHN_URL.format(name=name), target, name, SVHN_MD5[name])

    _ensure_present("svhn", base, [path], download, fetch, name)
    images, labels = _read_svhn_mat(path)
    digits = [str(d) for d in range(10)]
    return TensorImageDataset(images, labels, num_classes=10, classes=digits, source=f"svhn {path}")


def _read_svhn_mat(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, 32, 32) in [0, 1], labels 0..9 from an SVHN .mat (X: 32x32x3xN uint8, y: Nx1, 1..10)."""
    from scipy.io import loadmat

    fix = "delete it and download SVHN again"
    try:
        mat = loadmat(path, variable_names=("X", "y"))
    except Exception as err:  # scipy raises ValueError, TypeError, OSError, zlib.error, NotImplementedError
        reason = f"{type(err).__name__}: {err}"
        raise CorruptFileError(f"{path}: not a readable MATLAB v5 file ({reason}); {fix}") from err
    x, y = mat.get("X"), mat.get("y")
    if x is None or y is None:
        raise CorruptFileError(f"{path}: expected variables 'X' and 'y'; {fix}")
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
        found = f"{x.dtype} {x.shape}"
        raise CorruptFileError(f"{path}: 'X' must be uint8 of shape (32, 32, 3, N), got {found}; {fix}")
    y = np.asarray(y).reshape(-1)
    if y.shape[0] != x.shape[3]:
        raise CorruptFileError(f"{path}: {x.shape[3]} images but {y.shape[0]} labels; {fix}")
    if y.size and (y.min() < 1 or y.max() > 10):
        raise CorruptFileError(f"{path}: SVHN labels must lie in 1..10, found [{y.min()}, {y.max()}]; {fix}")
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1))).float().div_(255)  # HWCN -> NCHW
    labels = torch.from_numpy((y % 10).astype(np.int64))  # the digit 0 is stored as 10
    return images, labels


# ---------------------------------------------------------------------------------------------------------
# MNIST: IDX files (big-endian header, raw uint8 payload)

_IDX_UBYTE = 0x08
MNIST_PREFIX = {"train": "train", "test": "t10k"}


def _mnist_file(folder: Path, stem: str) -> Path:
    """The raw file if present, else its .gz (the path named in errors is the raw one when neither exists)."""
    raw = folder / stem
    gz = folder / f"{stem}.gz"
    return gz if not raw.is_file() and gz.is_file() else raw


def read_idx(path: Path, expected_ndim: int) -> np.ndarray:
    """A uint8 IDX array (magic 2051 for images, 2049 for labels) as numpy, plain or gzip-compressed."""
    fix = "delete it and download MNIST again"
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            blob = f.read()
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise CorruptFileError(f"{path}: not readable ({err}); {fix}") from err
    magic = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else -1
    expected_magic = (_IDX_UBYTE << 8) | expected_ndim  # 2051 images, 2049 labels
    if magic != expected_magic:
        raise CorruptFileError(f"{path}: IDX magic number {magic}, expected {expected_magic}; {fix}")
    header = 4 + 4 * expected_ndim
    if len(blob) < header:
        raise CorruptFileError(f"{path}: truncated IDX header; {fix}")
    dims = [int.from_bytes(blob[4 + 4 * i : 8 + 4 * i], "big") for i in range(expected_ndim)]
    size = int(np.prod(dims))
    if len(blob) - header != size:
        raise CorruptFileError(
            f"{path}: header says {dims} ({size} bytes) but {len(blob) - header} bytes follow; "
            f"the file is truncated or padded - {fix}"
        )
    return np.frombuffer(blob, dtype=np.uint8, offset=header).reshape(dims)


def load_mnist(split: str, root: Root = None, download: bool = False) -> TensorImageDataset:
    """MNIST (60000 train / 10000 test, 1x28x28) from ROOT/MNIST/raw (raw IDX files or their .gz)."""
    _check_split(split)
    base = data_root(root)
    folder = base / "MNIST" / "raw"
    prefix = MNIST_PREFIX[split]
    images_path = _mnist_file(folder, f"{prefix}-images-idx3-ubyte")
    labels_path = _mnist_file(folder, f"{prefix}-labels-idx1-ubyte")

    def fetch(_: Path) -> None:
        _download_mnist(folder, prefix)

    _ensure_present("mnist", base, [images_path, labels_path], download, fetch, "MNIST/raw/")
    images_path = _mnist_file(folder, f"{prefix}-images-idx3-ubyte")  # a download may have added them
    labels_path = _mnist_file(folder, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(images_path, 3), read_idx(labels_path, 1)
    if images.shape[0] != labels.shape[0]:
        raise CorruptFileError(
            f"{images_path}: {images.shape[0]} images but {labels_path.name} has {labels.shape[0]} labels; "
            "the two files come from different splits or one is truncated - download MNIST again"
        )
    if labels.size and labels.max() > 9:
        raise CorruptFileError(f"{labels_path}: MNIST labels must lie in 0..9, found {labels.max()}")
    tensor = torch.from_numpy(images.copy()).unsqueeze(1).float().div_(255)
    digits = [str(d) for d in range(10)]
    labels_tensor = torch.from_numpy(labels.astype(np.int64))
    return TensorImageDataset(tensor, labels_tensor, 10, digits, source=f"mnist {folder}")


def _download_mnist(folder: Path, prefix: str) -> None:
    """Fetch and unpack the split's two .gz files into folder, trying each mirror in turn."""
    utils = _tv_download_utils()
    for kind in ("images-idx3", "labels-idx1"):
        filename = f"{prefix}-{kind}-ubyte.gz"
        errors = []
        for mirror in MNIST_MIRRORS:
            try:
                md5 = MNIST_MD5[filename]
                utils.download_and_extract_archive(mirror + filename, folder, filename=filename, md5=md5)
                break
            except (OSError, RuntimeError) as err:
                errors.append(f"{mirror}: {err}")
        else:
            raise OSError(f"every mirror failed for {filename} ({'; '.join(errors)})")
