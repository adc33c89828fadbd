"""Tiny files in the exact on-disk formats of the real datasets, for tests that must run offline.

- CIFAR python batches: written opcode by opcode as Python 2's cPickle wrote them (protocol 2, str keys and
  payloads as byte strings, the uint8 array rebuilt by numpy.core.multiarray._reconstruct + BUILD).
- SVHN: MATLAB v5 via scipy.io.savemat, X (32, 32, 3, N) uint8 and y (N, 1) with 10 standing for the digit 0.
- MNIST: IDX files (big-endian magic 2051 / 2049, then the dimensions, then raw uint8), optionally gzipped.
- ImageNet-style folders of tiny PNG/JPEG images, and the authors' released folders (torch-saved chunk lists).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch
from PIL import Image

# ---------------------------------------------------------------------------------------------------------
# Python 2 pickles (what `cPickle.dump(obj, f, 2)` produced for the CIFAR batches)


def _py2_str(data: bytes) -> bytes:
    """A Python 2 `str`: SHORT_BINSTRING below 256 bytes, else BINSTRING."""
    if len(data) < 256:
        return b"U" + bytes([len(data)]) + data
    return b"T" + struct.pack("<I", len(data)) + data


def _py2_int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)
    return b"J" + struct.pack("<i", value)


def _py2_global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _py2_uint8_array(array: np.ndarray) -> bytes:
    """numpy's ndarray.__reduce__ for a C-ordered uint8 array, in Python 2 opcodes."""
    shape = b"(" + b"".join(_py2_int(d) for d in array.shape) + b"t"
    dtype = (
        _py2_global("numpy", "dtype") + _py2_str(b"u1") + _py2_int(0) + _py2_int(1) + b"\x87R"
        + b"(" + _py2_int(3) + _py2_str(b"|") + b"NNN" + b"J\xff\xff\xff\xff" * 2 + _py2_int(0) + b"tb"
    )
    rebuild = (
        _py2_global("numpy.core.multiarray", "_reconstruct") + _py2_global("numpy", "ndarray")
        + _py2_int(0) + b"\x85" + _py2_str(b"b") + b"\x87R"
    )
    state = b"(" + _py2_int(1) + shape + dtype + b"\x89" + _py2_str(array.tobytes()) + b"tb"
    return rebuild + state


def _py2_value(value) -> bytes:
    if isinstance(value, np.ndarray):
        return _py2_uint8_array(value)
    if isinstance(value, str):
        return _py2_str(value.encode("latin1"))
    if isinstance(value, bytes):
        return _py2_str(value)
    if isinstance(value, int):
        return _py2_int(value)
    if isinstance(value, list):
        return b"](" + b"".join(_py2_value(v) for v in value) + b"e" if value else b"]"
    if isinstance(value, dict):
        items = b"".join(_py2_value(k) + _py2_value(v) for k, v in value.items())
        return b"}(" + items + b"u" if value else b"}"
    raise TypeError(f"no Python 2 pickle writer for {type(value).__name__}")


def py2_pickle(obj) -> bytes:
    """The bytes cPickle (protocol 2) wrote for a dict of str / int / list / uint8 array; no memo."""
    return b"\x80\x02" + _py2_value(obj) + b"."


# ---------------------------------------------------------------------------------------------------------
# CIFAR


def cifar_images(n: int, seed: int) -> np.ndarray:
    """Random uint8 images (n, 3, 32, 32)."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)


def write_cifar_batch(path: Path, images: np.ndarray, labels: list[int], label_key: str = "labels") -> None:
    """A CIFAR batch as the real files hold it: rows of 3072 bytes, the 1024 R then G then B values."""
    batch = {
        "batch_label": "training batch 1 of 5",
        label_key: list(labels),
        "data": images.reshape(len(images), -1),
        "filenames": [f"img_{i}.png" for i in range(len(images))],
    }
    if label_key == "fine_labels":
        batch["coarse_labels"] = [lab // 5 for lab in labels]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(py2_pickle(batch))


def make_cifar10(root: Path, per_batch: int = 4) -> dict[str, np.ndarray]:
    """ROOT/cifar-10-batches-py with 5 train batches and a test batch; returns the images written per file."""
    folder = root / "cifar-10-batches-py"
    written = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        images = cifar_images(per_batch, seed=i)
        write_cifar_batch(folder / name, images, [(i + j) % 10 for j in range(per_batch)])
        written[name] = images
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(py2_pickle({"label_names": names, "num_vis": 3072}))
    return written


def make_cifar100(root: Path, n: int = 6) -> dict[str, np.ndarray]:
    """ROOT/cifar-100-python/{train, test, meta} with fine labels 0, 17, 34, ... and 99."""
    folder = root / "cifar-100-python"
    written = {}
    for i, split in enumerate(("train", "test")):
        images = cifar_images(n, seed=10 + i)
        labels = [(17 * j) % 100 for j in range(n - 1)] + [99]
        write_cifar_batch(folder / split, images, labels, label_key="fine_labels")
        written[split] = images
    meta = {"fine_label_names": [f"fine{i}" for i in range(100)], "coarse_label_names": list("abcde" * 4)}
    (folder / "meta").write_bytes(py2_pickle(meta))
    return written


# ---------------------------------------------------------------------------------------------------------
# SVHN and MNIST


def make_svhn(root: Path, split: str, digits: list[int], seed: int = 0) -> np.ndarray:
    """ROOT/<split>_32x32.mat; returns X (32, 32, 3, N). The digit 0 is stored as 10, as in the real files."""
    from scipy.io import savemat

    x = np.random.default_rng(seed).integers(0, 256, size=(32, 32, 3, len(digits)), dtype=np.uint8)
    y = np.array([[10 if d == 0 else d] for d in digits], dtype=np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    savemat(root / f"{split}_32x32.mat", {"X": x, "y": y})
    return x


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file: 0, 0, type 0x08 (ubyte), ndim; big-endian int32 dimensions; the raw bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">i", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def make_mnist(root: Path, split: str, labels: list[int], gz: bool = False, seed: int = 0) -> np.ndarray:
    """ROOT/MNIST/raw/<prefix>-{images-idx3,labels-idx1}-ubyte[.gz]; returns the (N, 28, 28) images."""
    prefix = {"train": "train", "test": "t10k"}[split]
    images = np.random.default_rng(seed).integers(0, 256, size=(len(labels), 28, 28), dtype=np.uint8)
    folder = root / "MNIST" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    files = {f"{prefix}-images-idx3-ubyte": images, f"{prefix}-labels-idx1-ubyte": np.array(labels)}
    for stem, array in files.items():
        blob = idx_bytes(array)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(blob))
        else:
            (folder / stem).write_bytes(blob)
    return images


# ---------------------------------------------------------------------------------------------------------
# Image folders and released dataset folders


def write_image(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (12, 10)) -> None:
    """A solid-colour image of size (width, height); the format follows the suffix (.png is lossless)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)


def make_imagenet(root: Path, split_folder: str, images_per_class: dict[int, int], n_classes: int = 1000):
    """ROOT/<split_folder>/n00000000..: n_classes synset folders, images only in the indexed ones (cheap)."""
    folder = root / split_folder
    for index in range(n_classes):
        (folder / f"n{index:08d}").mkdir(parents=True, exist_ok=True)
    for index, count in images_per_class.items():
        for k in range(count):
            write_image(folder / f"n{index:08d}" / f"img{k}.JPEG", (index % 256, k * 40, 100), size=(40, 30))


def make_released_folder(folder: Path, images: torch.Tensor, labels: torch.Tensor, chunks: int = 2) -> None:
    """The authors' layout: CIFAR_ims and CIFAR_lab, each a torch-saved list of tensor chunks."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(list(images.chunk(chunks)), folder / "CIFAR_ims")
    torch.save(list(labels.chunk(chunks)), folder / "CIFAR_lab")


# ---------------------------------------------------------------------------------------------------------
# Whole data roots and run inputs for end-to-end CLI tests


def make_cifar10_root(root: Path, train_per_batch: int = 60, n_test: int = 100) -> Path:
    """ROOT/cifar-10-batches-py with 5 x train_per_batch training images and n_test test images, every class
    present in every file (labels cycle 0..9); returns ROOT. Same format as make_cifar10, chosen sizes."""
    folder = root / "cifar-10-batches-py"
    sizes = {f"data_batch_{k}": train_per_batch for k in range(1, 6)} | {"test_batch": n_test}
    for i, (name, n) in enumerate(sizes.items()):
        write_cifar_batch(folder / name, cifar_images(n, seed=100 + i), [j % 10 for j in range(n)])
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(py2_pickle({"label_names": names, "num_vis": 3072}))
    return root


RELEASED_CIFAR_FOLDERS = ("d_robust_CIFAR", "d_non_robust_CIFAR", "drand_CIFAR", "ddet_CIFAR")


def make_released_root(root: Path, n: int = 64, chunks: int = 4, seed: int = 0) -> dict[str, tuple]:
    """The authors' release_datasets layout: the four CIFAR folders, each with CIFAR_ims (float (n, 3, 32, 32)
    in [0, 1]) and CIFAR_lab (int64 (n,)) as torch-saved lists of chunks. Returns {folder: (images, labels)}."""
    gen = torch.Generator().manual_seed(seed)
    written = {}
    for folder in RELEASED_CIFAR_FOLDERS:
        images = torch.rand(n, 3, 32, 32, generator=gen)
        labels = torch.randint(0, 10, (n,), generator=gen, dtype=torch.int64)
        make_released_folder(root / folder, images, labels, chunks=chunks)
        written[folder] = (images, labels)
    return written


class ShellPayload:
    """A pickle payload: unpickling it runs `touch marker` (so a test can tell whether anything ran)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def write_malicious_torch_file(path: Path, marker: Path) -> None:
    """A torch.save zip file whose pickle runs `touch marker` when loaded without weights_only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save([torch.zeros(2), ShellPayload(marker)], path)


def write_malicious_pickle(path: Path, marker: Path, protocol: int = 2) -> None:
    """A plain pickle whose loading runs `touch marker`."""
    import pickle

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"data": ShellPayload(marker)}, protocol=protocol))
