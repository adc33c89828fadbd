"""An airbench-class network: the whole CIFAR-10 paper on one GPU in minutes (preset `cifar10_fast`).

Why it exists: the paper's ResNet-50 (and even ResNet-18) spends most of its arithmetic at full resolution in
thin convolutions that fill neither a GPU nor a CPU; every stage of the paper (adversarial training, 1,000-step
inversion, 100-step relabelling, the APGD cascade) multiplies that cost. The idea taken from airbench (K. Jordan,
"94% on CIFAR-10 in 3.29 seconds on a single GPU", 2024) is a network of few, wide layers that leaves full
resolution at once: a stem, then three groups of conv -> 2x2 max-pool -> batch norm -> GELU -> conv -> batch
norm -> GELU at widths (w, 4w, 4w), a global max-pool and one linear layer. At width 64 it has 1.97M parameters
and costs ~0.27 GFLOP per 32x32 forward, against ResNet-18's 0.56 and ResNet-50's 1.3.

The representation inverted for D_R / D_NR is, as for every model here, the input of the last linear layer: the
globally pooled 4w features.

airbench's speed tricks, and what is kept (each one is a preset choice, measured before use; see
benchmarks/RESULTS.md, "cifar10_fast"):
* `whiten=True`: a frozen 2x2 patch-whitening convolution as the stem, set from the training images'
  patch covariance (`init_from_data`). It speeds up standard training, but it rescales the input space: directions
  of low pixel variance (fine texture, i.e. the non-robust features) are amplified by up to 1/sqrt(eigenvalue), so
  an L2 ball in pixel space is stretched where the adversary already has leverage. Off by default; the stem is
  then an ordinary trainable 3x3 convolution with batch norm.
* label smoothing, test-time flipping and lookahead are training or inference choices, not architecture: the
  presets decide (test-time augmentation is never used, because the evaluated function must be the model).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BadInputError
from .base import ImageClassifier
from .cifar import cifar_stats


class PatchWhitening(nn.Module):
    """A frozen convolution that whitens k x k patches: filters W / sqrt(eigenvalue) and their negatives.

    Its weight is a buffer (saved with the model, never trained), set by `fit(images)` from the patch covariance
    of (normalised) training images; until then it is the identity on the centre pixel of each patch, so an unfit
    layer is still a well-defined map.
    """

    def __init__(self, in_channels: int, kernel: int = 2, eps: float = 5e-4):
        super().__init__()
        self.kernel, self.eps = kernel, eps
        d = in_channels * kernel * kernel
        self.out_channels = 2 * d
        eye = torch.eye(d).view(d, in_channels, kernel, kernel)
        self.register_buffer("weight", torch.cat([eye, -eye]))

    @torch.no_grad()
    def fit(self, images: torch.Tensor) -> None:
        """Set the filters from the k x k patches of `images` (N, C, H, W), already normalised."""
        c, k = images.shape[1], self.kernel
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)  # (N, C, H', W', k, k)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k).double()
        patches = patches - patches.mean(0, keepdim=True)
        covariance = patches.T @ patches / max(patches.shape[0] - 1, 1)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        filters = (eigenvectors.T / (eigenvalues.clamp_min(0) + self.eps).sqrt()[:, None]).float()
        filters = filters.view(-1, c, k, k).to(self.weight.device)
        self.weight.copy_(torch.cat([filters, -filters]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.to(x.dtype))


def conv_group(cin: int, cout: int) -> nn.Sequential:
    """airbench's unit: conv at the incoming resolution, halve it, then a second conv; BN + GELU after each."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.MaxPool2d(2, ceil_mode=True),
        nn.BatchNorm2d(cout), nn.GELU(),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.GELU(),
    )


class FastNet(ImageClassifier):
    """Stem, three conv groups at widths (w, 4w, 4w), global max-pool, linear head (module docstring).

    `width` 64 is airbench94's size (1.97M parameters); `whiten` picks the frozen patch-whitening stem (call
    `init_from_data` with training images before training) instead of a trainable 3x3 conv + batch norm.
    """

    def __init__(
        self, in_channels: int, num_classes: int, image_size: int, mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None, width: int = 64, whiten: bool = False,
    ):
        super().__init__(in_channels, *cifar_stats(in_channels, mean, std))
        if not isinstance(width, int) or isinstance(width, bool) or width < 1:
            raise BadInputError(f"FastNet: width must be an integer >= 1, got {width!r}")
        stem_width = 2 * in_channels * 4  # what a 2x2 whitening stem produces: 24 channels for RGB
        if whiten:
            stem: nn.Module = nn.Sequential(PatchWhitening(in_channels, 2), nn.GELU())
        else:
            stem = nn.Sequential(nn.Conv2d(in_channels, stem_width, 3, padding=1, bias=False),
                                 nn.BatchNorm2d(stem_width), nn.GELU())
        widths = (width, 4 * width, 4 * width)
        self.body = nn.Sequential(
            stem,
            conv_group(stem_width, widths[0]),
            conv_group(widths[0], widths[1]),
            conv_group(widths[1], widths[2]),
            nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(widths[2], num_classes)

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor, limit: int = 5000) -> None:
        """Fit the whitening stem (if any) to the first `limit` training images in [0, 1]; else nothing."""
        stem = self.body[0][0]
        if isinstance(stem, PatchWhitening):
            stem.fit(self.normalize(images[:limit].to(self.mean.device)))
