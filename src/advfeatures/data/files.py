"""Dataset files: ours (safetensors with `images` and `labels`) and the authors' released folders.

The released D_R / D_NR / D_rand / D_det folders hold `CIFAR_ims` and `CIFAR_lab`, torch-saved lists of tensor
chunks. They are pickles, so they are read only with `torch.load(..., weights_only=True)`: a file that needs
anything beyond plain tensors and lists is refused and nothing in it runs.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from ..errors import BadInputError, CorruptFileError
from ..io import load_tensors, save_tensors
from .base import check_images_labels

RELEASED_FILES = ("CIFAR_ims", "CIFAR_lab")


def save_dataset_file(path: str | Path, images: torch.Tensor, labels: torch.Tensor, **metadata: str) -> None:
    """Write a constructed dataset atomically as safetensors (`images` float (N,C,H,W) in [0,1], `labels` int64)."""
    check_images_labels(images, labels, source=str(path))
    save_tensors(
        path,
        {"images": images.float(), "labels": labels.long()},
        {k: str(v) for k, v in metadata.items()},
    )


def _load_released_tensor(path: Path) -> torch.Tensor:
    if not path.is_file():
        raise BadInputError(
            f"{path}: missing; a released dataset folder must hold both {' and '.join(RELEASED_FILES)} "
            "(unpack the authors' release_datasets tarball again)"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CorruptFileError(
            f"{path}: refused - it needs arbitrary pickle code to load, and only plain tensors are accepted "
            f"({str(err).splitlines()[0]})"
        ) from err
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        raise CorruptFileError(f"{path}: not a readable torch tensor file ({err}); download it again") from err
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(t, torch.Tensor) for t in obj):
        return torch.cat(list(obj))
    raise CorruptFileError(f"{path}: expected a tensor or a list of tensor chunks, found {type(obj).__name__}")


def load_released_folder(folder: Path) -> dict[str, torch.Tensor]:
    images = _load_released_tensor(folder / RELEASED_FILES[0])
    labels = _load_released_tensor(folder / RELEASED_FILES[1])
    if images.dtype == torch.uint8:
        images = images.float() / 255
    if images.dim() == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = images.permute(0, 3, 1, 2)  # NHWC -> NCHW
    labels = labels.long() if not labels.is_floating_point() else labels
    check_images_labels(images, labels, source=str(folder))
    return {"images": images.float().contiguous(), "labels": labels.long()}


def load_dataset_file(path: str | Path, num_classes: int | None = None) -> dict[str, torch.Tensor]:
    """Read a constructed dataset: one of our `.safetensors` files or a released folder (CIFAR_ims, CIFAR_lab).

    Returns {"images": float (N, C, H, W) in [0, 1], "labels": int64 (N,)}; never executes a pickle.
    """
    path = Path(path)
    if path.is_dir():
        data = load_released_folder(path)
    elif path.is_file():
        tensors, _ = load_tensors(path, required=("images", "labels"))
        data = {"images": tensors["images"].float(), "labels": tensors["labels"]}
        if data["labels"].is_floating_point():
            raise CorruptFileError(f"{path}: labels must be integers")
        data["labels"] = data["labels"].long()
    else:
        raise BadInputError(
            f"{path}: no such file or folder; give a .safetensors file written by advfeatures or a folder "
            f"holding {' and '.join(RELEASED_FILES)}"
        )
    check_images_labels(data["images"], data["labels"], num_classes, source=str(path))
    return data
