"""The one interface every architecture follows: [0, 1] images in, logits out, representation exposed."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ImageClassifier(nn.Module):
    """Base class: normalisation inside the model, a body producing the representation, a linear head.

    Subclasses set `self.body` (normalised image -> flat representation, the input of the last linear layer)
    and `self.head` (nn.Linear). `representation(x)` is what representation inversion matches (D_R / D_NR).
    `clamp_input` clamps images to [0, 1] before normalising, as the paper authors' `robustness` library does
    (its InputNormalize); models imported from it keep that, so they compute exactly the authors' function.
    """

    def __init__(
        self, in_channels: int, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
        clamp_input: bool = False,
    ):
        super().__init__()
        mean = list(mean) if mean is not None else [0.5] * in_channels
        std = list(std) if std is not None else [0.25] * in_channels
        if len(mean) != in_channels or len(std) != in_channels:
            raise ValueError(f"mean/std need {in_channels} values, got {len(mean)}/{len(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.clamp_input = bool(clamp_input)
        self.body: nn.Module
        self.head: nn.Linear
        self.config: dict = {}

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.clamp_input:
            x = x.clamp(0, 1)
        return (x - self.mean) / self.std

    def representation(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate-layer features (N, D) of images x in [0, 1]."""
        return self.body(self.normalize(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.representation(x))
