"""Library pieces of three responses in the Distill discussion of the paper (Distill, 2019, "A Discussion of
'Adversarial Examples Are Not Bugs, They Are Features'"):

* Nakkiran, "Adversarial examples are just bugs, too": besides D_det_bugs (targeted examples that fool the source
  model while an ensemble keeps the true label: `attacks.pgd_attack(keep_models=...)`,
  `construct.build_relabelled_dataset(keep_models=...)`), his "adversarial squares" toy, where a network that fits
  noisy labels is non-robust although a robust linear rule exists: `adversarial_squares`, `squares_linear_rule`,
  `linear_rule_robust_accuracy`.
* Goh, "Robust feature leakage": how much of D_rand's / D_det's signal is readable through the features of a
  robust *linear* model. `train_robust_linear` trains one with the exact worst-case margin of a linear model,
  `certified` / `certified_fraction` say where its prediction provably cannot change in the eps-ball, and
  `linear_leakage` fits a logistic regression on its C features of a constructed set and scores it on the real
  test set.
* Wallace, "Learning from incorrectly labeled data": a teacher relabels the training set and only the images it
  gets wrong are kept, with its wrong labels; a student trained on them still learns the task (distillation):
  `incorrectly_labelled_subset`.

Linear models here act on flattened images x in R^d: logits = W x + b with W (C, d), b (C,). A perturbation of
norm eps changes (w_c - w_j).x by at most eps * ||w_c - w_j||_*, the dual norm (L2 for L2, L1 for Linf), which is
what makes both the adversarial training loss and the certificates exact for linear models.

This module is the follow-ups' library (callable without a run); their stages are in stages.py, the report's
tables in section.py, their settings in presets.FollowupsConfig.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ...attacks import check_norm
from ...errors import BadInputError
from ...evaluation import predict

# ---------------------------------------------------------------- Nakkiran: adversarial squares

# Class 1 is a bright square at 0.5 + AMPLITUDE, class 0 a dark one at 0.5 - AMPLITUDE. With the default noise of
# 0.25 every pixel stays on its class's side of 0.5 and inside [0, 1] (no clamping), and the mean pixel sits
# 0.25 from the rule's threshold give or take ~0.02 (one standard deviation of the mean of 64 uniforms): at 8x8 the
# linear rule can only be flipped by an L2 perturbation of about 0.25 * sqrt(64) = 2, twice the usual eps of 1.
AMPLITUDE = 0.25


def adversarial_squares(
    n: int,
    *,
    size: int = 8,
    channels: int = 1,
    noise: float = 0.25,
    label_noise: float = 0.1,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nakkiran's toy: images that are all bright (class 1) or all dark (class 0), with some labels flipped.

    Each pixel is 0.5 +/- AMPLITUDE (0.25) plus i.i.d. uniform(-noise, noise), clamped to [0, 1] (the clamp is
    inactive for noise <= 0.25). Classes alternate before a seeded shuffle, so their counts differ by at most one;
    exactly round(label_noise * n) labels, chosen by the same seeded generator, are flipped. A network that fits the
    noisy labels must memorise the noise and is non-robust, while "mean pixel > 0.5" (`squares_linear_rule`) is
    right on every clean label and robust. Returns (images (n, channels, size, size) in [0, 1], noisy labels,
    clean labels), labels int64.
    """
    if n < 1 or size < 1 or channels < 1:
        raise BadInputError(f"adversarial_squares needs n, size and channels >= 1, got {n}, {size}, {channels}")
    if noise < 0 or not 0 <= label_noise <= 1:
        raise BadInputError(f"noise must be >= 0 and label_noise in [0, 1], got {noise}, {label_noise}")
    g = torch.Generator().manual_seed(seed)
    clean = (torch.arange(n) % 2)[torch.randperm(n, generator=g)]
    sign = (2 * clean - 1).float().view(-1, 1, 1, 1)
    jitter = (torch.rand((n, channels, size, size), generator=g) * 2 - 1) * noise
    images = (0.5 + AMPLITUDE * sign + jitter).clamp(0, 1)
    noisy = clean.clone()
    flipped = torch.randperm(n, generator=g)[: round(label_noise * n)]
    noisy[flipped] = 1 - noisy[flipped]
    return images, noisy, clean


def squares_linear_rule(images: torch.Tensor) -> torch.Tensor:
    """The robust linear rule of the squares toy: class 1 where the mean pixel exceeds 0.5, else class 0."""
    return (images.flatten(1).float().mean(1) > 0.5).long()


def linear_rule_robust_accuracy(images: torch.Tensor, labels: torch.Tensor, eps: float, norm: str = "l2") -> float:
    """Accuracy of `squares_linear_rule` under the worst perturbation of norm <= eps, computed exactly.

    The rule flips only if the perturbation moves the mean pixel across 0.5. Changing the mean of d pixels by m
    takes a perturbation of L2 norm at least m * sqrt(d) (a uniform shift of m per pixel attains it) and of Linf
    norm at least m. This ignores the [0, 1] box, which can only hinder the attacker, so the number is exact for
    unconstrained perturbations and a lower bound on the robust accuracy inside the box.
    """
    check_norm(norm)
    if eps < 0:
        raise BadInputError(f"eps must be non-negative, got {eps}")
    pred = squares_linear_rule(images)
    d = images[0].numel()
    distance = (images.flatten(1).float().mean(1) - 0.5).abs() * (math.sqrt(d) if norm == "l2" else 1.0)
    # class 1 flips once the mean reaches 0.5 (the rule is "> 0.5"); class 0 must go strictly past it
    robust = torch.where(pred == 1, distance > eps, distance >= eps)
    return float(((pred == labels) & robust).float().mean())


# ---------------------------------------------------------------- Goh: robust linear models and leakage


def _dual_norm(v: torch.Tensor, norm: str) -> torch.Tensor:
    """The dual norm over the last dimension: L2 for an L2 threat, L1 for an Linf threat."""
    return v.norm(dim=-1) if norm == "l2" else v.abs().sum(-1)


def _pairwise_dual(W: torch.Tensor, norm: str) -> torch.Tensor:
    """(C, C) matrix of ||w_j - w_k||_*: how far an eps = 1 perturbation can move logit j relative to logit k."""
    return _dual_norm(W[:, None, :] - W[None, :, :], norm)


def linear_adversarial_loss(
    W: torch.Tensor, b: torch.Tensor, images: torch.Tensor, labels: torch.Tensor, eps: float, norm: str = "l2"
) -> torch.Tensor:
    """Mean cross-entropy on worst-case-margin logits: z'_j = z_j + eps * ||w_j - w_y||_* for j != y.

    For two classes this is exactly the cross-entropy at the worst perturbation in the eps-ball (ignoring the
    [0, 1] box); for more classes each wrong logit gets its own worst perturbation, so it is an upper bound on
    the adversarial loss. Either way it is what adversarial training of a linear model minimises, without an attack.
    """
    check_norm(norm)
    logits = images.flatten(1).to(W.dtype) @ W.T + b
    return F.cross_entropy(logits + eps * _pairwise_dual(W, norm)[labels], labels)


def train_robust_linear(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    eps: float,
    norm: str = "l2",
    epochs: int = 200,
    lr: float = 0.1,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A linear classifier on flattened images, adversarially trained at radius eps (Goh's robust features).

    Full-batch Adam on `linear_adversarial_loss` (exact for two classes, an upper bound for more) plus
    weight_decay / 2 * ||W||^2, from small random weights drawn with `seed`; deterministic given the seed, and
    run on the tensors' device. eps = 0 is standard training. Returns (W (C, d), b (C,)).
    """
    check_norm(norm)
    if eps < 0 or epochs < 0 or lr <= 0 or num_classes < 2:
        raise BadInputError("train_robust_linear needs eps >= 0, epochs >= 0, lr > 0 and at least two classes")
    x = images.flatten(1).float()
    return _fit_linear(
        x, num_classes, epochs, lr, seed,
        lambda W, b: linear_adversarial_loss(W, b, x, labels, eps, norm) + 0.5 * weight_decay * W.square().sum(),
    )


def _fit_linear(x: torch.Tensor, num_classes: int, epochs: int, lr: float, seed: int, loss) -> tuple:
    """Full-batch Adam on loss(W, b) for a linear map of x's columns to num_classes logits, from small random
    weights drawn with `seed` (deterministic); returns (W, b) detached."""
    g = torch.Generator().manual_seed(seed)
    W = (0.01 * torch.randn(num_classes, x.shape[1], generator=g)).to(x.device).requires_grad_()
    b = torch.zeros(num_classes, device=x.device, requires_grad=True)
    optimizer = torch.optim.Adam([W, b], lr=lr)
    with torch.enable_grad():
        for _ in range(epochs):
            value = loss(W, b)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
    return W.detach(), b.detach()


def certified(W: torch.Tensor, b: torch.Tensor, images: torch.Tensor, eps: float, norm: str = "l2") -> torch.Tensor:
    """Per image, whether the linear model's prediction c provably stays c under every perturbation of norm <= eps.

    Certified when (w_c - w_j).x + b_c - b_j > eps * ||w_c - w_j||_* for every j != c: the left side is how far
    logit c leads logit j, the right side the most a perturbation can take from that lead. For two classes the
    lead divided by ||w_c - w_j||_* is exactly the distance to the decision boundary. Ignores the [0, 1] box, so it
    is sound inside it too. Returns a bool tensor (N,).
    """
    check_norm(norm)
    logits = images.flatten(1).to(W.dtype) @ W.T + b
    pred = logits.argmax(1)
    lead = logits.gather(1, pred[:, None]) - logits
    allowance = eps * _pairwise_dual(W, norm)[pred]
    itself = torch.arange(W.shape[0], device=W.device) == pred[:, None]
    return ((lead > allowance) | itself).all(1)


def certified_fraction(
    W: torch.Tensor,
    b: torch.Tensor,
    images: torch.Tensor,
    eps: float,
    norm: str = "l2",
    labels: torch.Tensor | None = None,
) -> dict:
    """{"certified": fraction of images whose prediction is certified in the eps-ball} (Goh's specification 2
    asks for >= 80% on the test set), plus, with `labels`, "certified_accuracy" (certified and correct) and
    "clean_accuracy"."""
    ok = certified(W, b, images, eps, norm)
    out = {"certified": float(ok.float().mean())}
    if labels is not None:
        correct = (images.flatten(1).to(W.dtype) @ W.T + b).argmax(1) == labels
        out["certified_accuracy"] = float((ok & correct).float().mean())
        out["clean_accuracy"] = float(correct.float().mean())
    return out


def linear_leakage(
    W: torch.Tensor,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    *,
    epochs: int = 300,
    lr: float = 0.1,
    seed: int = 0,
) -> dict:
    """Goh's leakage measure: how well the robust linear features alone learn a (constructed) training set.

    The features are f(x) = W x, one per row of a robust linear model's W. A multinomial logistic regression is fit
    (full-batch Adam from small random weights drawn with `seed`) on the standardised features (train mean and
    std) of `train_images` with `train_labels` (e.g. D_rand's or D_det's), then scored on the real test set. If the
    constructed labels were uncorrelated with robust features, test accuracy would sit at chance (D_rand) or
    below it (D_det, whose labels are y + 1). Goh's CIFAR-10 figures: 23.5% from D_rand, 6.81% from D_det.
    Returns {"test_accuracy", "train_accuracy", "features": C}.
    """
    if epochs < 0 or lr <= 0:
        raise BadInputError("linear_leakage needs epochs >= 0 and lr > 0")
    W = W.detach()
    train = train_images.flatten(1).to(W.dtype) @ W.T
    mean, std = train.mean(0), train.std(0, unbiased=False).clamp_min(1e-12)

    def features(images: torch.Tensor) -> torch.Tensor:
        return (images.flatten(1).to(W.dtype) @ W.T - mean) / std

    x = (train - mean) / std
    V, c = _fit_linear(x, num_classes, epochs, lr, seed, lambda V, c: F.cross_entropy(x @ V.T + c, train_labels))
    with torch.no_grad():
        train_pred = (x @ V.T + c).argmax(1)
        test_pred = (features(test_images) @ V.T + c).argmax(1)
    return {
        "test_accuracy": float((test_pred == test_labels).float().mean()),
        "train_accuracy": float((train_pred == train_labels).float().mean()),
        "features": W.shape[0],
    }


# ---------------------------------------------------------------- Wallace: learning from incorrect labels


class IncorrectSubset(NamedTuple):
    """The images a teacher gets wrong, labelled with its (wrong) predictions; unpacks as (images, labels, mask)."""

    images: torch.Tensor
    labels: torch.Tensor  # the teacher's predictions, never the true class
    mask: torch.Tensor  # bool over the input: where the teacher was wrong

    @property
    def teacher_accuracy(self) -> float:
        """The teacher's accuracy on the input set: the fraction of images it got right (left out of the subset)."""
        return float(1 - self.mask.float().mean())


def incorrectly_labelled_subset(
    teacher, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1024
) -> IncorrectSubset:
    """Wallace's training set: relabel `images` with the teacher's predictions and keep only the wrong ones.

    Every kept label is wrong, so a student that generalises from them learns what the teacher learned, not the
    labels (distillation through incorrect labels). His CIFAR-10 figure: a student at 49.7% test accuracy from a
    teacher with 62.5% train accuracy. Returns (kept images, teacher labels for them, bool mask over the input);
    `.teacher_accuracy` on the result is the teacher's accuracy on the input.
    """
    pred = predict(teacher, images, batch_size)
    mask = pred != labels
    return IncorrectSubset(images[mask], pred[mask], mask)
