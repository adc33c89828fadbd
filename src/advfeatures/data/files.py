"""Dataset files: ours (safetensors with `images` and `labels`) and the authors' released folders.

The released D_R / D_NR / D_rand / D_det folders hold `CIFAR_ims` and `CIFAR_lab`, torch-saved lists of tensor
chunks. They are pickles, so they are read only with `torch.load(..., weights_only=True)`: a file that needs
anything beyond plain tensors and lists is refused and nothing in it runs.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import torch

from ..errors import BadInputError, CorruptFileError
from ..io import load_tensors, save_tensors
from .base import check_images_labels

RELEASED_FILES = ("CIFAR_ims", "CIFAR_lab")


def save_dataset_file(path: str | Path, images: torch.Tensor, labels: torch.Tensor, **metadata: str) -> None:
    """Write a constructed dataset atomically as safetensors: `images` (N,C,H,W) in [0,1], `labels` int64."""
    check_images_labels(images, labels, source=str(path))
    save_tensors(
        path,
        {"images": images.float(), "labels": labels.long()},
        {k: str(v) for k, v in metadata.items()},
    )


def _refusal_reason(err: Exception) -> str:
    """The one informative line of torch's weights_only refusal (which global or opcode it met)."""
    for line in str(err).splitlines():
        line = line.strip().removeprefix("WeightsUnpickler error:").strip()
        if line.startswith(("Trying to load", "Unsupported", "Can only", "Only persistent")):
            return line.split(". Please")[0].rstrip(".")
    return "it needs objects other than tensors and lists"


def _load_released_tensor(path: Path) -> torch.Tensor:
    """One released file (a torch-saved tensor or list of tensor chunks) as one tensor; nothing else loads."""
    fix = "unpack it again from the authors' release_datasets tarball"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols it did not write itself
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "truncated" in str(err):
            raise CorruptFileError(f"{path}: truncated torch file; {fix}") from err
        raise CorruptFileError(
            f"{path}: refused - it is a pickle that needs more than plain tensors to load "
            f"({_refusal_reason(err)}); nothing in it was run. Use the files of the original release ({fix})"
        ) from err
    except Exception as err:  # truncated zip (RuntimeError), cut short (EOFError), junk (KeyError, ...)
        reason = (str(err).splitlines() or [""])[0][:200]
        raise CorruptFileError(
            f"{path}: not a readable torch tensor file ({type(err).__name__}: {reason}); "
            f"it may be truncated - {fix}"
        ) from err
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(t, torch.Tensor) for t in obj):
        try:
            return torch.cat(list(obj))
        except RuntimeError as err:
            raise CorruptFileError(f"{path}: its tensor chunks do not fit together ({err}); {fix}") from err
    found = f"a {type(obj).__name__}" + (" of other things" if isinstance(obj, (list, tuple)) and obj else "")
    raise CorruptFileError(f"{path}: expected a tensor or a list of tensor chunks, found {found}; {fix}")


def load_released_folder(folder: Path) -> dict[str, torch.Tensor]:
    """The authors' released folder (CIFAR_ims, CIFAR_lab) as {"images", "labels"}, every check made."""
    folder = Path(folder)
    missing = [name for name in RELEASED_FILES if not (folder / name).is_file()]
    if missing:  # checked before loading anything: both files are needed
        raise BadInputError(
            f"{folder}: {' and '.join(missing)} missing; a released dataset folder must hold both "
            f"{' and '.join(RELEASED_FILES)} (unpack the authors' release_datasets tarball again)"
        )
    images = _load_released_tensor(folder / RELEASED_FILES[0])
    labels = _load_released_tensor(folder / RELEASED_FILES[1])
    if images.dim() == 0 or labels.dim() == 0 or images.shape[0] != labels.shape[0]:
        raise BadInputError(
            f"{folder}: {RELEASED_FILES[0]} holds {tuple(images.shape)} but {RELEASED_FILES[1]} holds "
            f"{tuple(labels.shape)}; they need one label per image - the two files come from different "
            "releases or one is incomplete (unpack both from the same release_datasets folder)"
        )
    if images.dtype == torch.uint8:
        images = images.float() / 255
    if images.dim() == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = images.permute(0, 3, 1, 2)  # NHWC -> NCHW
    check_images_labels(images, labels, source=str(folder))  # bool or float labels refused, not converted
    return {"images": images.float().contiguous(), "labels": labels.long()}


def _check_not_pickle(path: Path) -> None:
    """Refuse a single released file or a torch/pickle file where a safetensors file is expected."""
    if path.name in RELEASED_FILES:
        raise BadInputError(
            f"{path}: give the folder holding {' and '.join(RELEASED_FILES)} ({path.parent}), not a file"
        )
    with open(path, "rb") as f:
        head = f.read(9)
    # safetensors: an 8-byte little-endian header length, then the JSON header. The length's first byte may be
    # 0x80 (a 128-byte header), so look for the '{' before taking 0x80 for a pickle's PROTO opcode.
    if head[8:9] == b"{":
        return
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        raise CorruptFileError(
            f"{path}: a torch/pickle file, not a safetensors file; pickles are never loaded here - save the "
            "dataset with advfeatures.save_dataset_file, or pass a released folder (CIFAR_ims, CIFAR_lab)"
        )


def _check_label_range(path: Path, labels: torch.Tensor, num_classes: int | None) -> None:
    if num_classes is None or not labels.numel() or labels.is_floating_point() or labels.dtype == torch.bool:
        return
    low, high = (int(v) for v in torch.stack(torch.aminmax(labels)).tolist())
    if low < 0 or high >= num_classes:
        raise BadInputError(
            f"{path}: labels must lie in 0..{num_classes - 1} for a {num_classes}-class task, found "
            f"[{low}, {high}]; the file belongs to another dataset - use the one built for this task"
        )


def load_dataset_file(path: str | Path, num_classes: int | None = None) -> dict[str, torch.Tensor]:
    """Read a constructed dataset: our `.safetensors` file or a released folder (CIFAR_ims, CIFAR_lab).

    Returns {"images": float (N, C, H, W) in [0, 1], "labels": int64 (N,)}; never executes a pickle. Raises
    BadInputError / CorruptFileError naming the path for a missing, truncated, refused or inconsistent input,
    and for labels outside 0..num_classes-1 when num_classes is given.
    """
    path = Path(path)
    if path.is_dir():
        data = load_released_folder(path)
    elif path.is_file():
        _check_not_pickle(path)
        tensors, _ = load_tensors(path, required=("images", "labels"))
        data = {"images": tensors["images"].float(), "labels": tensors["labels"]}
        if data["labels"].is_floating_point() or data["labels"].dtype == torch.bool:
            found = data["labels"].dtype
            raise CorruptFileError(f"{path}: labels must be integers, found {found}; recreate the file")
        data["labels"] = data["labels"].long()
    else:
        raise BadInputError(
            f"{path}: no such file or folder; give a .safetensors file written by advfeatures or a folder "
            f"holding {' and '.join(RELEASED_FILES)}"
        )
    _check_label_range(path, data["labels"], num_classes)
    check_images_labels(data["images"], data["labels"], num_classes, source=str(path))
    return data
