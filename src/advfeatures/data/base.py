"""The in-memory image dataset every part of the library passes around, and the checks on its contents."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from ..validation import check_images_labels as _check


def check_images_labels(
    images: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None, source: str = "data"
) -> None:
    """Raise BadInputError unless images are finite floats (N, C, H, W) in [0, 1] and labels int (N,) in range
    (>= 0 always, < num_classes when given). The checks live in validation.py, shared with the library's
    evaluation functions and the CLI; the range and NaN checks are one reduction each."""
    _check(images, labels, num_classes, source)


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
        check_images_labels(images, labels, num_classes, source)  # before any conversion: bool labels are refused
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
