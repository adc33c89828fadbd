"""Planted-feature images: robust and non-robust class patterns with known ground truth.

Every image is

    x = background + r[s] + n[y] + noise,  clipped to [0, 1]

where y is the label, n[y] is class y's *non-robust* pattern and r[s] a *robust* pattern of class s, with
s = y for a fraction `robust_agreement` of the images and a uniformly random other class otherwise.

* Robust patterns: orthogonal +-1 block patterns (rows of a 16x16 Hadamard matrix on a 4x4 grid of blocks),
  scaled to L2 norm `robust_norm` (4.0), far above the threat model's eps (1.0): an L2 adversary with budget
  eps cannot move an image from one robust pattern to another (they are 4*sqrt(2) apart). They are only
  `robust_agreement` (75%) predictive, so a model that uses them alone tops out near 75% accuracy.
* Non-robust patterns: smooth low-frequency cosine gratings (2-D DCT basis functions), orthogonalised against
  the robust ones, scaled to L2 norm `nonrobust_norm` (0.4), far below eps. They predict the label perfectly,
  so a standard model needs them to pass 75%, and relies on them - while an adversary can rewrite them.
  They are smooth on purpose: a random-sign pixel pattern of the same size was ignored by a standard CNN in
  an earlier try here (it settled for the robust pattern alone at ~79%).
* Noise: i.i.d. Gaussian, std `noise_std` per pixel.

Because the patterns are known, any image can be audited: its projection onto each class's robust and
non-robust pattern says how much evidence of that class it carries (`PlantedFeatures.evidence`, `.audit`).
The generator is deterministic from `seed`; train and test come from separate streams of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import BadInputError
from .base import TensorImageDataset


@dataclass(frozen=True)
class SyntheticSpec:
    """Every parameter of the generator, in one place."""

    image_size: int = 16  # 16x16 grey: big enough for smooth patterns, cheap enough for CPU minutes
    num_classes: int = 10
    n_train: int = 2000  # enough for ~100% standard accuracy; construction cost scales with it
    n_test: int = 500
    robust_norm: float = 4.0  # L2 norm of r[c]; 4x the threat model's eps 1.0
    robust_agreement: float = 0.75  # P(s = y): how predictive the robust pattern is
    nonrobust_norm: float = 0.4  # L2 norm of n[c]; 0.4x eps - an adversary can swap it for another class's
    noise_std: float = 0.05  # per-pixel Gaussian noise
    background: float = 0.5  # mid-grey so that patterns stay inside [0, 1]
    seed: int = 0


def _hadamard(n: int) -> torch.Tensor:
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def _dct_basis(size: int, u: int, v: int) -> torch.Tensor:
    i = torch.arange(size, dtype=torch.float64)
    cu = torch.cos(math.pi * (i + 0.5) * u / size)
    cv = torch.cos(math.pi * (i + 0.5) * v / size)
    return torch.outer(cu, cv)


# Lowest-frequency 2-D cosines except the constant one, in order: the smoothest class patterns there are.
_LOW_FREQUENCIES = [(0, 1), (1, 0), (1, 1), (0, 2), (2, 0), (1, 2), (2, 1), (2, 2), (0, 3), (3, 0), (3, 1), (1, 3)]


class PlantedFeatures:
    """The ground-truth patterns of a synthetic dataset, and the audit of any image against them."""

    def __init__(self, spec: SyntheticSpec):
        size, classes = spec.image_size, spec.num_classes
        if size % 4 or classes > 12 or classes < 2:
            raise BadInputError("synthetic: image_size must be a multiple of 4 and num_classes in 2..12")
        self.spec = spec
        g = torch.Generator().manual_seed(spec.seed)
        rows = torch.randperm(15, generator=g)[:classes] + 1  # skip the constant Hadamard row
        blocks = _hadamard(16)[rows].reshape(classes, 4, 4).double()
        robust = torch.kron(blocks, torch.ones(size // 4, size // 4, dtype=torch.float64))
        robust = robust.reshape(classes, -1)
        robust_unit = robust / robust.norm(dim=1, keepdim=True)
        smooth = torch.stack([_dct_basis(size, u, v).reshape(-1) for u, v in _LOW_FREQUENCIES[:classes]])
        # Remove any component along the robust patterns so that the two audits do not mix.
        smooth = smooth - (smooth @ robust_unit.T) @ robust_unit
        nonrobust_unit = torch.linalg.qr(smooth.T).Q.T  # orthonormal, still smooth
        nonrobust_unit *= torch.sign((nonrobust_unit * smooth).sum(1, keepdim=True))
        shape = (classes, 1, size, size)
        self.robust_unit = robust_unit.float().reshape(shape)
        self.nonrobust_unit = nonrobust_unit.float().reshape(shape)
        self.robust = self.robust_unit * spec.robust_norm
        self.nonrobust = self.nonrobust_unit * spec.nonrobust_norm

    def sample(self, n: int, stream: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """n images from stream `stream` (0 train, 1 test): (images, labels, robust-pattern classes)."""
        spec = self.spec
        g = torch.Generator().manual_seed(spec.seed * 1000 + 17 + stream)
        labels = torch.arange(n) % spec.num_classes
        labels = labels[torch.randperm(n, generator=g)]
        agree = torch.rand(n, generator=g) < spec.robust_agreement
        other = (labels + torch.randint(1, spec.num_classes, (n,), generator=g)) % spec.num_classes
        robust_class = torch.where(agree, labels, other)
        noise = torch.randn(n, 1, spec.image_size, spec.image_size, generator=g) * spec.noise_std
        images = spec.background + self.robust[robust_class] + self.nonrobust[labels] + noise
        return images.clamp(0, 1), labels, robust_class

    def evidence(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Projection of each image onto every class's patterns, in units of the planted pattern's norm.

        1.0 means "carries the full planted pattern of that class", 0 "none of it". Returns tensors (N, C).
        """
        centred = (images.float().mean(1, keepdim=True) - self.spec.background).flatten(1)
        robust = centred @ self.robust_unit.flatten(1).T / self.spec.robust_norm
        nonrobust = centred @ self.nonrobust_unit.flatten(1).T / self.spec.nonrobust_norm
        return {"robust": robust, "nonrobust": nonrobust}

    def audit(
        self, images: torch.Tensor, labels: torch.Tensor, original_labels: torch.Tensor | None = None
    ) -> dict[str, float]:
        """How much robust and non-robust evidence of the label (and of the original class) images carry.

        `*_agrees_label`: fraction of images whose strongest robust (non-robust) pattern is their label's.
        `*_of_label`: mean projection onto the label's pattern (1.0 = fully planted).
        """
        ev = self.evidence(images)
        labels = labels.long().cpu()
        out: dict[str, float] = {}
        targets = {"label": labels}
        if original_labels is not None:
            targets["original"] = original_labels.long().cpu()
        for kind in ("robust", "nonrobust"):
            scores = ev[kind].cpu()
            for name, lab in targets.items():
                out[f"{kind}_agrees_{name}"] = float((scores.argmax(1) == lab).float().mean())
                out[f"{kind}_of_{name}"] = float(scores.gather(1, lab[:, None]).mean())
        return out


class SyntheticDataset(TensorImageDataset):
    """A TensorImageDataset that also carries its ground truth: `.features` and `.robust_class`."""

    def __init__(self, images, labels, robust_class, features: PlantedFeatures):
        super().__init__(images, labels, num_classes=features.spec.num_classes, source="synthetic")
        self.robust_class = robust_class
        self.features = features


def load_synthetic_split(split: str, spec: SyntheticSpec | None = None) -> SyntheticDataset:
    spec = spec or SyntheticSpec()
    features = PlantedFeatures(spec)
    n = spec.n_train if split == "train" else spec.n_test
    images, labels, robust_class = features.sample(n, stream=0 if split == "train" else 1)
    return SyntheticDataset(images, labels, robust_class, features)
