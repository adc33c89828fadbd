"""Folders of image files: a generic class-per-folder dataset and the paper's Restricted ImageNet.

Both are lazy: the folder scan happens once (file names only), each image is decoded with PIL when indexed.
Items are (float image (3, H, W) in [0, 1], int label); `num_classes`, `classes` and `samples` (path, label)
are exposed. Images are always converted to RGB. Pass `size` to get equal-sized images that batch together.

imagefolder layout: ROOT/train/<class>/<image> and ROOT/test/<class>/<image> (ROOT/val is accepted for the
test split). A root without split folders is refused rather than split on the fly: the train/test split has
to be the same on every machine, and one invented here would be easy to get wrong silently. Class indices are
the sorted class-folder names of ROOT/train, so both splits share one labelling.

restricted_imagenet layout: the standard ImageNet train/val folders, ROOT/train/n01440764/... and
ROOT/val/n01440764/... (val sorted into synset folders); ROOT may also be the data root holding imagenet/.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..errors import BadInputError, CorruptFileError
from .torchvision_sets import Root, data_root

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp")

# Restricted ImageNet (Ilyas et al. 2019, and the authors' robustness library): 9 superclasses, each an
# inclusive range of indices into the 1000 sorted ImageNet synsets. The label is the position in this list.
RESTRICTED_IMAGENET_RANGES: dict[str, tuple[int, int]] = {
    "dog": (151, 268),
    "cat": (281, 285),
    "frog": (30, 32),
    "turtle": (33, 37),
    "bird": (80, 100),
    "primate": (365, 382),
    "fish": (389, 397),
    "crab": (118, 121),
    "insect": (300, 319),
}
IMAGENET_CLASSES = 1000
IMAGENET_RESIZE_RATIO = 256 / 224  # resize the short side to 256, centre-crop 224 (the standard test view)


class ImageFileDataset(Dataset):
    """(image path, label) pairs read lazily with PIL; a broken image raises CorruptFileError naming it."""

    def __init__(self, samples: list[tuple[Path, int]], classes: list[str], transform: Callable, source: str):
        self.samples = samples
        self.classes = classes
        self.num_classes = len(classes)
        self.transform = transform
        self.source = source

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image, UnidentifiedImageError

        path, label = self.samples[index]
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
        except (OSError, UnidentifiedImageError, ValueError) as err:  # truncated, not an image, unreadable
            raise CorruptFileError(f"{path}: not a readable image ({err}); replace or delete it") from err
        return self.transform(rgb), label

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]


# ---------------------------------------------------------------------------------------------------------
# Folder scanning


def class_folders(folder: Path) -> list[str]:
    """Sorted names of the visible sub-folders of `folder` (the class folders)."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def image_files(folder: Path) -> list[Path]:
    """Image files under `folder` (recursively), in a sorted, machine-independent order."""
    found = []
    for parent, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(parent) / f for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
    return found


def _split_folder(root: Path, split: str, test_names: tuple[str, ...]) -> Path:
    """ROOT/train for the train split, the first existing ROOT/<name> in test_names for the test split."""
    names = ("train",) if split == "train" else test_names
    for name in names:
        if (root / name).is_dir():
            return root / name
    if not root.is_dir():
        test = " or ".join(f"{n}/" for n in test_names)  # the folders both splits need, each named once
        raise BadInputError(f"{root}: no such folder; give the folder holding train/ and {test}")
    wanted = " or ".join(f"{root / n}/" for n in names)
    raise BadInputError(
        f"{root}: no {split} split folder ({wanted} is missing); lay the images out as "
        f"ROOT/train/<class>/... and ROOT/{names[0] if split == 'test' else 'test'}/<class>/..."
    )


# ---------------------------------------------------------------------------------------------------------
# Transforms


def _to_tensor_transform(size: int | None) -> Callable:
    """PIL -> float tensor in [0, 1]; with `size`, resize the short side and centre-crop to size x size."""
    from torchvision import transforms

    steps = [] if size is None else [transforms.Resize(size), transforms.CenterCrop(size)]
    return transforms.Compose(steps + [transforms.ToTensor()])


def imagenet_transform(size: int = 224, augment: bool = False) -> Callable:
    """The authors' ImageNet views: test Resize(256)+CenterCrop(224); train RandomResizedCrop(224)+flip.

    `size` rescales both (test resizes to round(size * 256 / 224)). The authors' train view also jittered
    colour and lighting; `augment=True` keeps only the crop and flip.
    """
    from torchvision import transforms

    if augment:
        steps = [transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip()]
    else:
        steps = [transforms.Resize(round(size * IMAGENET_RESIZE_RATIO)), transforms.CenterCrop(size)]
    return transforms.Compose(steps + [transforms.ToTensor()])


def _check_size(size: int | None) -> None:
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise BadInputError(f"size must be a positive integer (pixels), got {size!r}")


# ---------------------------------------------------------------------------------------------------------
# Loaders


def load_imagefolder(split: str, root: Root = None, size: int | None = None) -> ImageFileDataset:
    """Images under ROOT/<split>/<class>/ (test: ROOT/test or ROOT/val); labels = sorted class names."""
    if root is None:
        raise BadInputError("imagefolder needs a root: a folder with train/<class>/... and test/<class>/...")
    _check_size(size)
    root = Path(root).expanduser()
    folder = _split_folder(root, split, ("test", "val"))
    train_folder = root / "train"
    classes = class_folders(train_folder if train_folder.is_dir() else folder)
    if not classes:
        raise BadInputError(f"{folder}: no class folders; put each class's images in {folder}/<class name>/")
    unknown = sorted(set(class_folders(folder)) - set(classes))
    if unknown:
        raise BadInputError(
            f"{folder}: class folders {unknown[:5]} are not in {train_folder}; the splits need one class list"
        )
    samples = [(path, label) for label, name in enumerate(classes) for path in image_files(folder / name)]
    if not samples:
        raise BadInputError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in its class folders")
    return ImageFileDataset(samples, classes, _to_tensor_transform(size), source=str(folder))


def _imagenet_root(root: Root) -> Path:
    """ROOT itself when it holds train/ or val/, else ROOT/imagenet (so a shared data root works too)."""
    base = data_root(root)
    if not any((base / s).is_dir() for s in ("train", "val")) and (base / "imagenet").is_dir():
        return base / "imagenet"
    return base


def restricted_imagenet_samples(split_folder: Path) -> list[tuple[Path, int]]:
    """(path, superclass label) for every image in the 9 superclass ranges; other synsets are never listed."""
    synsets = class_folders(split_folder)
    if len(synsets) != IMAGENET_CLASSES:
        raise BadInputError(
            f"{split_folder}: found {len(synsets)} class folders, expected the {IMAGENET_CLASSES} ImageNet "
            "synset folders (n01440764, ...): a class index is the position of its folder in sorted order, "
            "so all 1000 must be present (empty ones are fine); val images must be sorted into synset folders"
        )
    samples = []
    for label, (first, last) in enumerate(RESTRICTED_IMAGENET_RANGES.values()):
        for index in range(first, last + 1):
            samples += [(path, label) for path in image_files(split_folder / synsets[index])]
    return samples


def load_restricted_imagenet(
    split: str, root: Root = None, size: int = 224, augment: bool = False
) -> ImageFileDataset:
    """The paper's 9-class Restricted ImageNet from an ImageNet folder (train: ROOT/train, test: ROOT/val).

    Without `augment` both splits use the deterministic test view, so the data are the same on every run.
    """
    _check_size(size)
    base = _imagenet_root(root)
    folder = _split_folder(base, split, ("val",))
    samples = restricted_imagenet_samples(folder)
    if not samples:
        raise BadInputError(f"{folder}: no image files in the synset folders of the 9 superclass ranges")
    classes = list(RESTRICTED_IMAGENET_RANGES)
    return ImageFileDataset(samples, classes, imagenet_transform(size, augment), source=str(folder))
