"""One projected-gradient engine (L2 / Linf steps, restarts, per-example keep-best) and the losses it drives.

Every attack in the paper is this engine with a different objective:

* untargeted PGD (Madry et al., 2018): ascend the cross-entropy of the true label inside the eps-ball;
* targeted PGD (D_rand, D_det; paper C.5): descend the cross-entropy of a target label;
* representation inversion (D_R, D_NR; paper C.4): descend ||g(z) - g(x)||_2 over the whole [0, 1] box,
  with g the model's penultimate layer (eps = inf: only the box constrains it).

Steps are normalised: L2 moves `step_size` along grad / ||grad||_2, Linf moves `step_size * sign(grad)`.
Every iterate is projected back into the eps-ball around `center` and then into [0, 1], so outputs never
leave either. Keep-best tracks, per example, the iterate with the highest attacker score seen so far (over
all steps and restarts), so more steps or restarts can only help the attacker.

Example::

    from advfeatures.attacks import pgd_attack
    adv = pgd_attack(model, images, labels, norm="l2", eps=0.5, steps=20)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .device import autocast
from .errors import BadInputError

NORMS = ("l2", "linf")

# objective(x, index) -> (loss to ascend (N,), attacker score (N,), higher = better for the attacker).
# `index` selects which rows of the full batch x holds, so objectives can carry per-example targets.
Objective = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise BadInputError(f"unknown norm {norm!r}; choose 'l2' or 'linf'")
    return norm


def flat_norm(t: torch.Tensor, norm: str = "l2") -> torch.Tensor:
    flat = t.flatten(1)
    return flat.norm(dim=1) if norm == "l2" else flat.abs().amax(dim=1)


def _per_example(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


def step_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """Steepest-ascent direction of unit size in the given norm."""
    if norm == "linf":
        return grad.sign()
    return grad / _per_example(flat_norm(grad).clamp_min(1e-12), grad)


def project(delta: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """Nearest point of the eps-ball (L2: rescale, Linf: clip); eps = inf leaves delta unchanged."""
    if math.isinf(eps):
        return delta
    if norm == "linf":
        return delta.clamp(-eps, eps)
    factor = (eps / flat_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
    return delta * _per_example(factor, delta)


def random_in_ball(like: torch.Tensor, norm: str, eps: float, generator: torch.Generator | None) -> torch.Tensor:
    """A uniform sample from the eps-ball (L2: Gaussian direction, radius eps * U^(1/d); Linf: uniform cube)."""
    if norm == "linf":
        return (torch.rand(like.shape, generator=generator, device=like.device) * 2 - 1) * eps
    direction = torch.randn(like.shape, generator=generator, device=like.device)
    direction = direction / _per_example(flat_norm(direction).clamp_min(1e-12), like)
    d = like[0].numel()
    radius = eps * torch.rand(like.shape[0], generator=generator, device=like.device) ** (1.0 / d)
    return direction * _per_example(radius, like)


@dataclass
class AttackResult:
    x: torch.Tensor  # best iterate per example
    score: torch.Tensor  # its attacker score


def projected_gradient(
    objective: Objective,
    center: torch.Tensor,
    *,
    norm: str,
    eps: float,
    steps: int,
    step_size: float,
    start: torch.Tensor | None = None,
    random_start: bool = False,
    restarts: int = 1,
    generator: torch.Generator | None = None,
    stop_score: float | torch.Tensor | None = None,
) -> AttackResult:
    """Maximise `objective` over the eps-ball around `center` intersected with [0, 1]^d.

    Restart 0 begins at `start` (default: `center`), plus uniform noise if `random_start`; later restarts
    always add noise. With `stop_score` (a number, or one per example), an example whose score reaches it
    stops moving and leaves the batch (early exit: once a success criterion is met, more steps cannot matter).
    """
    check_norm(norm)
    if eps < 0 or steps < 0 or restarts < 1 or step_size < 0:
        raise BadInputError("eps, steps and step_size must be non-negative and restarts at least 1")
    center = center.detach()
    base = center if start is None else start.detach()
    n = center.shape[0]
    best_x = base.clone()
    best_score = torch.full((n,), -math.inf, device=center.device)
    for restart in range(restarts):
        x = base.clone()
        if random_start or restart > 0:
            radius = eps if not math.isinf(eps) else 0.0
            x = (center + project(x - center + random_in_ball(x, norm, radius, generator), norm, eps)).clamp(0, 1)
        active = torch.arange(n, device=center.device)
        for t in range(steps + 1):
            x_active = x[active].requires_grad_(t < steps)
            with torch.enable_grad() if t < steps else torch.no_grad():
                loss, score = objective(x_active, active)
                grad = torch.autograd.grad(loss.sum(), x_active)[0] if t < steps else None
            score = score.detach().float()
            better = score > best_score[active]
            best_score[active[better]] = score[better]
            best_x[active[better]] = x_active.detach()[better]
            if t == steps:
                break
            keep = torch.ones_like(better)
            if stop_score is not None:
                keep = score < (stop_score[active] if torch.is_tensor(stop_score) else stop_score)
            moved = x_active.detach() + step_size * step_direction(grad.float(), norm)
            moved = (center[active] + project(moved - center[active], norm, eps)).clamp(0, 1)
            x[active] = moved.to(x.dtype)
            active = active[keep]
            if active.numel() == 0:
                break
    return AttackResult(best_x.detach(), best_score)


# ---------------------------------------------------------------- objectives


def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """max_{j != y} z_j - z_y: positive exactly when the prediction is not y."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.scatter(1, labels[:, None], -math.inf).amax(1)
    return other - true


class ClassificationObjective:
    """Cross-entropy or margin loss on the logits; untargeted (move away from labels) or targeted (toward them).

    The score is always the margin in the attacker's favour, so keep-best selects misclassified
    (untargeted) or target-hitting (targeted) iterates whichever loss drives the steps.
    """

    def __init__(self, model, labels: torch.Tensor, *, targeted: bool = False, loss: str = "ce", amp: bool = False):
        if loss not in ("ce", "margin"):
            raise BadInputError(f"unknown attack loss {loss!r}; choose 'ce' or 'margin'")
        self.model, self.labels, self.targeted, self.loss, self.amp = model, labels, targeted, loss, amp

    def __call__(self, x: torch.Tensor, index: torch.Tensor):
        with autocast(x.device, self.amp):
            logits = self.model(x)
        logits = logits.float()
        y = self.labels[index]
        m = margin(logits, y)  # > 0: not y
        score = -m if self.targeted else m
        if self.loss == "margin":
            return score, score
        ce = F.cross_entropy(logits, y, reduction="none")
        return (-ce if self.targeted else ce), score


class RepresentationObjective:
    """Negative L2 distance between g(z) and target representations: ascending it is feature matching."""

    def __init__(self, model, target_representation: torch.Tensor, amp: bool = False):
        self.model, self.target, self.amp = model, target_representation.detach(), amp

    def __call__(self, x: torch.Tensor, index: torch.Tensor):
        with autocast(x.device, self.amp):
            r = self.model.representation(x)
        distance = (r.float() - self.target[index]).norm(dim=1)
        return -distance, -distance


# ---------------------------------------------------------------- batched front ends


def _batches(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def default_step_size(eps: float, steps: int) -> float:
    """2.5 * eps / steps: enough to cross the ball and come back (Madry et al.)."""
    return 2.5 * eps / max(steps, 1)


@torch.no_grad()
def pgd_attack(
    model,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    norm: str = "l2",
    eps: float,
    steps: int = 20,
    step_size: float | None = None,
    targeted: bool = False,
    loss: str = "ce",
    random_start: bool = False,
    restarts: int = 1,
    batch_size: int = 512,
    seed: int = 0,
    amp: bool = False,
    early_stop: bool = False,
) -> torch.Tensor:
    """Projected gradient descent (Madry et al., 2018) in the L2 or Linf ball of radius eps, batched.

    Untargeted: `labels` are the true classes and the attack pushes away from them. Targeted: `labels` are
    the targets and the attack pulls toward them. `early_stop` freezes each example as soon as it is
    misclassified (untargeted) or hits its target (targeted). Returns adversarial images in [0, 1].
    """
    was_training = model.training
    model.eval()
    step_size = default_step_size(eps, steps) if step_size is None else step_size
    generator = torch.Generator(device=images.device).manual_seed(seed)
    out = torch.empty_like(images)
    try:
        for sl in _batches(images.shape[0], batch_size):
            objective = ClassificationObjective(model, labels[sl], targeted=targeted, loss=loss, amp=amp)
            result = projected_gradient(
                objective, images[sl], norm=norm, eps=eps, steps=steps, step_size=step_size,
                random_start=random_start, restarts=restarts, generator=generator,
                stop_score=0.0 if early_stop else None,
            )
            out[sl] = result.x
    finally:
        model.train(was_training)
    return out


@torch.no_grad()
def invert_representation(
    model,
    target_images: torch.Tensor,
    start_images: torch.Tensor,
    *,
    steps: int,
    step_size: float,
    norm: str = "l2",
    batch_size: int = 512,
    amp: bool = False,
    tolerance: float | None = None,
) -> torch.Tensor:
    """Images z in [0, 1] whose representation g(z) matches g(target) (paper C.4), by normalised gradient steps
    from `start_images`. With `tolerance`, an example stops once ||g(z) - g(x)|| / ||g(x)|| <= tolerance.
    """
    was_training = model.training
    model.eval()
    out = torch.empty_like(start_images)
    try:
        for sl in _batches(target_images.shape[0], batch_size):
            with autocast(target_images.device, amp):
                target = model.representation(target_images[sl]).float()
            # score = -distance >= -tol * ||g(x)||  <=>  relative error <= tol
            stop = None if tolerance is None else -tolerance * target.norm(dim=1)
            result = projected_gradient(
                RepresentationObjective(model, target, amp), target_images[sl], norm=norm, eps=math.inf,
                steps=steps, step_size=step_size, start=start_images[sl], stop_score=stop,
            )
            out[sl] = result.x
    finally:
        model.train(was_training)
    return out
