"""Datasets behind one registry: `load_dataset(name, split, root)` -> Dataset of (image in [0,1], int label)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..errors import BadInputError
from .base import TensorImageDataset, check_images_labels
from .digits import load_digits_split
from .files import load_dataset_file, save_dataset_file
from .synthetic import PlantedFeatures, SyntheticDataset, SyntheticSpec, load_synthetic_split

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetEntry:
    loader: Callable[..., Dataset]  # loader(split, root, **options)
    description: str
    needs_root: bool = False  # True when the data must exist on disk (or be downloadable into root)


DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(name: str, loader: Callable[..., Dataset], description: str, needs_root: bool = False):
    DATASETS[name] = DatasetEntry(loader, description, needs_root)


register_dataset("digits", lambda split, root=None: load_digits_split(split), "scikit-learn 8x8 digits, offline")
register_dataset(
    "synthetic",
    lambda split, root=None, spec=None: load_synthetic_split(split, spec),
    "planted robust + non-robust features, 1x16x16, offline",
)

# Real datasets on disk. Root: the root argument, else $ADVFEATURES_DATA, else ~/data. Their modules import
# torchvision, scipy and PIL only when a loader runs, so importing the registry stays cheap.
from .imagefolders import load_imagefolder, load_restricted_imagenet  # noqa: E402
from .torchvision_sets import load_cifar10, load_cifar100, load_mnist, load_svhn  # noqa: E402

register_dataset("cifar10", load_cifar10, "CIFAR-10, 3x32x32 (ROOT/cifar-10-batches-py)", needs_root=True)
register_dataset("cifar100", load_cifar100, "CIFAR-100 fine labels (ROOT/cifar-100-python)", needs_root=True)
register_dataset("svhn", load_svhn, "SVHN digits, 3x32x32 (ROOT/{train,test}_32x32.mat)", needs_root=True)
register_dataset("mnist", load_mnist, "MNIST digits, 1x28x28 (ROOT/MNIST/raw)", needs_root=True)
register_dataset(
    "imagefolder", load_imagefolder, "ROOT/{train,test}/<class>/<image>; option size", needs_root=True
)
register_dataset(
    "restricted_imagenet",
    load_restricted_imagenet,
    "9 ImageNet superclasses from ROOT/{train,val}/<synset>/; options size=224, augment=False",
    needs_root=True,
)


def load_dataset(name: str, split: str = "train", root: str | Path | None = None, **options) -> Dataset:
    """A torch Dataset of (float image (C, H, W) in [0, 1], int label); the same split on every machine."""
    if name not in DATASETS:
        raise BadInputError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}")
    if split not in SPLITS:
        raise BadInputError(f"unknown split {split!r}; choose 'train' or 'test'")
    return DATASETS[name].loader(split, root, **options)


def as_tensors(dataset: Dataset, batch_size: int = 1024) -> TensorImageDataset:
    """Materialise any dataset of (image, label) as one TensorImageDataset (batched, for in-memory work)."""
    if isinstance(dataset, TensorImageDataset):
        return dataset
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    images, labels = zip(*[(x, torch.as_tensor(y)) for x, y in loader], strict=True)
    num_classes = getattr(dataset, "num_classes", None) or len(getattr(dataset, "classes", []) or []) or None
    return TensorImageDataset(torch.cat(images), torch.cat(labels), num_classes=num_classes)


__all__ = [
    "DATASETS",
    "PlantedFeatures",
    "SyntheticDataset",
    "SyntheticSpec",
    "TensorImageDataset",
    "as_tensors",
    "check_images_labels",
    "load_dataset",
    "load_dataset_file",
    "register_dataset",
    "save_dataset_file",
]
