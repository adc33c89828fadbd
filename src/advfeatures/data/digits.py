"""scikit-learn's 8x8 handwritten digits (1797 images, inside scikit-learn: no download)."""

from __future__ import annotations

import torch

from .base import TensorImageDataset

TEST_FRACTION = 0.2  # 1437 train / 360 test, stratified
SPLIT_SEED = 0  # fixed: the same split on every machine


def load_digits_split(split: str) -> TensorImageDataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # pixel values are 0..16
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    index = torch.arange(len(labels)).numpy()
    train_idx, test_idx = train_test_split(
        index, test_size=TEST_FRACTION, stratify=labels.numpy(), random_state=SPLIT_SEED
    )
    chosen = torch.as_tensor(train_idx if split == "train" else test_idx)
    return TensorImageDataset(images[chosen], labels[chosen], num_classes=10, source="digits")
