"""The in-memory image dataset every part of the library passes around, and the checks on its contents."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from ..errors import BadInputError


def check_images_labels(
    images: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None, source: str = "data"
) -> None:
    """Raise BadInputError unless images are finite floats (N, C, H, W) in [0, 1] and labels int (N,) in range."""
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise BadInputError(f"{source}: images and labels must be torch tensors")
    if images.dim() != 4:
        raise BadInputError(
            f"{source}: images must have shape (N, C, H, W), got {tuple(images.shape)}; "
            "add a channel dimension for grey images (images.unsqueeze(1))"
        )
    if not images.is_floating_point():
        raise BadInputError(f"{source}: images must be floats in [0, 1], got dtype {images.dtype}; divide by 255")
    if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise BadInputError(
            f"{source}: labels must be an integer vector (N,), got {labels.dtype} {tuple(labels.shape)}"
        )
    if images.shape[0] != labels.shape[0]:
        raise BadInputError(
            f"{source}: {images.shape[0]} images but {labels.shape[0]} labels; they must have the same length"
        )
    if images.numel() and not torch.isfinite(images).all():
        raise BadInputError(f"{source}: images contain NaN or inf values; clean or regenerate the data")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise BadInputError(
            f"{source}: image values must lie in [0, 1], found [{images.min():.3g}, {images.max():.3g}]; "
            "rescale them (e.g. divide 8-bit images by 255)"
        )
    if num_classes is not None and labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise BadInputError(
            f"{source}: labels must lie in 0..{num_classes - 1}, found [{labels.min()}, {labels.max()}]"
        )


class TensorImageDataset(Dataset):
    """Images (N, C, H, W) float in [0, 1] and int64 labels held as two tensors; items are (image, int label).

    Keeping whole datasets as tensors lets training, attacks and construction run batched on one device
    with no DataLoader; `.images` and `.labels` are the public way in.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        num_classes: int | None = None,
        classes: list[str] | None = None,
        source: str = "data",
    ):
        labels = labels.long() if not labels.is_floating_point() else labels
        check_images_labels(images, labels, num_classes, source)
        self.images = images.float()
        self.labels = labels.long()
        self.num_classes = int(num_classes if num_classes is not None else int(labels.max()) + 1)
        self.classes = classes or [str(c) for c in range(self.num_classes)]

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def subset(self, n: int | None) -> TensorImageDataset:
        """The first n examples (all when n is None); for quick runs."""
        if n is None or n >= len(self):
            return self
        return TensorImageDataset(self.images[:n], self.labels[:n], self.num_classes, self.classes)
