"""One projected-gradient engine (L2 / Linf; fixed or adaptive steps; restarts, per-example keep-best) and the
losses it drives.

Every attack in the paper, and the evaluation that measures them, is this engine with an objective and a step rule:

* untargeted PGD (Madry et al., 2018): ascend the cross-entropy of the true label inside the eps-ball;
* targeted PGD (D_rand, D_det; paper C.5): descend the cross-entropy of a target label;
* representation inversion (D_R, D_NR; paper C.4): descend ||g(z) - g(x)||_2 over the whole [0, 1] box,
  with g the model's penultimate layer (eps = inf: only the box constrains it);
* ensemble-keeping targeted PGD (Nakkiran, "Adversarial examples are just bugs, too", Distill 2019): descend the
  target's cross-entropy on the source model plus the mean true-label cross-entropy of K other models, so the
  perturbation fools the source alone (`EnsembleKeepObjective`; `pgd_attack(..., keep_models=...)`);
* APGD-CE and APGD-T (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
  parameter-free attacks", ICML 2020): the adaptive step rule below with the cross-entropy, or with the targeted
  DLR loss toward one of the top-k other classes. `evaluation.py` runs them as the default robust-accuracy attack.

Step rules (`step_rule=`):

* "fixed": every step moves `step_size` along the normalised gradient (L2: grad / ||grad||_2, Linf: sign).
* "apgd": the step starts at `step_size` (APGD: 2 eps) and is halved at checkpoints (at 22%, then ever shorter
  intervals, of the steps) where the loss rose on fewer than 75% of the steps since the last checkpoint, or did
  not improve at all while the step was left unchanged; a halved example restarts from its best-loss point.
  Between checkpoints each step mixes in momentum: x' = P(x + 0.75 (P(x + step * dir) - x) + 0.25 (x - x_prev)).
  Fixed steps are what the box defeats: on images with many pixels at 0 or 1, projection clips away part of
  every step, and a step size that fits the ball in the open rarely fits it there; the adaptive rule starts
  large and shrinks where progress stalls.

Every iterate is projected back into the eps-ball around `center` and then into [0, 1], so outputs never
leave either. Keep-best tracks, per example, the iterate with the highest attacker score seen so far (over
all steps and restarts), so more restarts can only help the attacker, and so can more fixed steps.

Example::

    from advfeatures.attacks import pgd_attack
    adv = pgd_attack(model, images, labels, norm="l2", eps=0.5, steps=20)
    adv = pgd_attack(model, images, labels, norm="l2", eps=0.5, steps=100, step_rule="apgd", loss="dlr")
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .device import autocast
from .errors import BadInputError
from .validation import check_attack, check_images, check_int, check_model_inputs, check_real, check_step_size

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


# ---------------------------------------------------------------- step rules

# project(index, z) -> z moved into the eps-ball around center[index] and into [0, 1]
Projector = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
STEP_RULES = ("fixed", "apgd")


class FixedStep:
    """Classic PGD: `step_size` along the steepest-ascent direction, then project."""

    def __init__(self, step_size: float, norm: str):
        self.step_size, self.norm = step_size, norm

    def begin(self, x: torch.Tensor) -> None:
        """Fixed steps keep no state."""

    def next(self, index, x, loss, grad, t: int, project: Projector) -> torch.Tensor:
        return project(index, x + self.step_size * step_direction(grad, self.norm))


def apgd_checkpoints(steps: int) -> set[int]:
    """APGD's checkpoints: the first at 22% of the steps, then intervals shrinking by 3% of the steps down to 6%."""
    points, previous, interval = set(), 0, max(int(0.22 * steps), 1)
    shrink, smallest = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    while previous + interval <= steps:
        previous += interval
        points.add(previous)
        interval = max(interval - shrink, smallest)
    return points


class AdaptiveStep:
    """APGD's step rule (Croce & Hein, 2020, Algorithm 1): momentum, and a step size halved at checkpoints where
    progress stalled, the halved example restarting from its best-loss iterate.

    State is kept per example for the whole batch, so examples leaving early (early exit) do not disturb others.
    """

    def __init__(self, step_size: float, norm: str, steps: int, momentum: float = 0.75, rho: float = 0.75):
        self.initial, self.norm, self.momentum, self.rho = step_size, norm, momentum, rho
        self.checkpoints = apgd_checkpoints(steps)

    def begin(self, x: torch.Tensor) -> None:
        n = x.shape[0]
        self.step = torch.full((n,), float(self.initial), device=x.device)
        self.previous = x.clone()  # x_{t-1}, for the momentum term
        self.fresh = torch.ones(n, dtype=torch.bool, device=x.device)  # no momentum on the next step
        self.best_x, self.best_grad = x.clone(), torch.zeros_like(x)
        self.best_loss = torch.full((n,), -math.inf, device=x.device)
        self.last_loss = torch.full((n,), math.inf, device=x.device)
        self.rises = torch.zeros(n, device=x.device)  # steps since the last checkpoint on which the loss rose
        self.best_at_checkpoint = torch.full((n,), -math.inf, device=x.device)
        self.halved_at_checkpoint = torch.zeros(n, dtype=torch.bool, device=x.device)
        self.last_checkpoint = 0

    def next(self, index, x, loss, grad, t: int, project: Projector) -> torch.Tensor:
        # every update is a masked write (torch.where) through the long `index`: no boolean indexing, so no step
        # waits for the host (a GPU keeps its queue full)
        loss = loss.detach().float()
        self.rises[index] += (loss > self.last_loss[index]).float()
        self.last_loss[index] = loss
        improved = loss > self.best_loss[index]
        keep_best = _per_example(improved, x)
        self.best_loss[index] = torch.where(improved, loss, self.best_loss[index])
        self.best_x[index] = torch.where(keep_best, x, self.best_x[index])
        self.best_grad[index] = torch.where(keep_best, grad, self.best_grad[index])
        if t in self.checkpoints:
            x, grad = self._checkpoint(index, x, grad, t)
        step = _per_example(self.step[index], x)
        z = project(index, x + step * step_direction(grad, self.norm))
        a = torch.where(self.fresh[index], 1.0, self.momentum)
        a = _per_example(a, x)
        moved = project(index, x + a * (z - x) + (1 - a) * (x - self.previous[index]))
        self.previous[index] = x
        self.fresh[index] = False
        return moved

    def _checkpoint(self, index, x, grad, t: int):
        interval = t - self.last_checkpoint
        stalled = self.rises[index] < self.rho * interval
        no_gain = ~self.halved_at_checkpoint[index] & (self.best_loss[index] <= self.best_at_checkpoint[index])
        halve = stalled | no_gain
        self.step[index] = torch.where(halve, self.step[index] / 2, self.step[index])
        self.halved_at_checkpoint[index] = halve
        self.best_at_checkpoint[index] = self.best_loss[index]
        self.rises[index] = 0
        self.last_checkpoint = t
        back = _per_example(halve, x)
        x = torch.where(back, self.best_x[index], x)
        grad = torch.where(back, self.best_grad[index], grad)
        self.fresh[index] = self.fresh[index] | halve  # momentum from the abandoned point would pull back toward it
        return x, grad


def make_step_rule(rule: str, step_size: float, norm: str, steps: int) -> FixedStep | AdaptiveStep:
    if rule == "fixed":
        return FixedStep(step_size, norm)
    if rule == "apgd":
        return AdaptiveStep(step_size, norm, steps)
    raise BadInputError(f"unknown step rule {rule!r}; choose from: {', '.join(STEP_RULES)}")


# ---------------------------------------------------------------- the engine


def default_compact_every(device: torch.device) -> int:
    """How often (in steps) examples that met their stop score leave the batch: every step on a CPU, where the
    compute saved is all that counts; every COMPACT_EVERY_ACCELERATOR steps elsewhere, since each compaction makes
    the host wait for the device (finished examples in between are masked: they stay where they are)."""
    return 1 if device.type == "cpu" else COMPACT_EVERY_ACCELERATOR


COMPACT_EVERY_ACCELERATOR = 10


def projected_gradient(
    objective: Objective,
    center: torch.Tensor,
    *,
    norm: str,
    eps: float,
    steps: int,
    step_size: float,
    step_rule: str = "fixed",
    start: torch.Tensor | None = None,
    random_start: bool = False,
    restarts: int = 1,
    generator: torch.Generator | None = None,
    stop_score: float | torch.Tensor | None = None,
    compact_every: int | None = None,
) -> AttackResult:
    """Maximise `objective` over the eps-ball around `center` intersected with [0, 1]^d.

    `step_rule` "fixed" moves `step_size` per step; "apgd" starts at `step_size` and adapts (module docstring).
    Restart 0 begins at `start` (default: `center`), plus uniform noise if `random_start`; later restarts
    always add noise. With `stop_score` (a number, or one per example), an example whose score reaches it
    stops moving (early exit: once a success criterion is met, more steps cannot matter) and leaves the batch at
    the next compaction, every `compact_every` steps (default: `default_compact_every`). The loop itself never
    reads a device value on the host, so on a GPU the only synchronisations are those compactions.
    """
    check_norm(norm)
    check_real("eps", eps, low=0.0, allow_inf=True)  # inf: the box alone constrains (inversion); NaN never
    check_real("step_size", step_size, low=0.0)
    if eps < 0 or steps < 0 or restarts < 1 or step_size < 0:
        raise BadInputError("eps, steps and step_size must be non-negative and restarts at least 1")
    if step_rule == "apgd" and math.isinf(eps):
        raise BadInputError("the apgd step rule needs a finite eps (its step size is set relative to the ball)")
    center = center.detach()
    base = center if start is None else start.detach()
    n = center.shape[0]
    best_x = base.clone()
    best_score = torch.full((n,), -math.inf, device=center.device)
    compact_every = compact_every or default_compact_every(center.device)

    def into_ball(index: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return (center[index] + project(z - center[index], norm, eps)).clamp(0, 1)

    for restart in range(restarts):
        x = base.clone()
        if random_start or restart > 0:
            radius = eps if not math.isinf(eps) else 0.0
            x = (center + project(x - center + random_in_ball(x, norm, radius, generator), norm, eps)).clamp(0, 1)
        rule = make_step_rule(step_rule, step_size, norm, steps)
        rule.begin(x)
        active = torch.arange(n, device=center.device)
        finished = torch.zeros(n, dtype=torch.bool, device=center.device)
        for t in range(steps + 1):
            x_active = x[active].requires_grad_(t < steps)
            with torch.enable_grad() if t < steps else torch.no_grad():
                loss, score = objective(x_active, active)
                grad = torch.autograd.grad(loss.sum(), x_active)[0] if t < steps else None
            score = score.detach().float()
            x_active = x_active.detach()
            better = score > best_score[active]
            best_score[active] = torch.where(better, score, best_score[active])
            best_x[active] = torch.where(_per_example(better, x_active), x_active, best_x[active])
            if t == steps:
                break
            moved = rule.next(active, x_active, loss.detach(), grad.float(), t, into_ball)
            if stop_score is not None:
                stop = stop_score[active] if torch.is_tensor(stop_score) else stop_score
                done = finished[active] | (score >= stop)
                finished[active] = done
                moved = torch.where(_per_example(done, moved), x_active.to(moved.dtype), moved)
            x[active] = moved.to(x.dtype)
            if stop_score is not None and (t + 1) % compact_every == 0:
                active = active[~finished[active]]
                if active.numel() == 0:
                    break
    return AttackResult(best_x.detach(), best_score)


# ---------------------------------------------------------------- objectives


def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """max_{j != y} z_j - z_y: positive exactly when the prediction is not y."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.scatter(1, labels[:, None], -math.inf).amax(1)
    return other - true


def _scale(sorted_logits: torch.Tensor, k: int) -> torch.Tensor:
    """z_(1) - z_(k) (k-th largest), or z_(1) - z_(last) with fewer classes: the DLR losses' denominator."""
    k = min(k, sorted_logits.shape[1])
    return sorted_logits[:, 0] - sorted_logits[:, k - 1]


def dlr_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Difference of logits ratio (Croce & Hein, 2020): margin / (z_(1) - z_(3)), to ascend.

    Invariant to shifting and rescaling the logits, so a saturated softmax (a vanishing cross-entropy gradient)
    cannot hide a direction the margin still has.
    """
    top = logits.sort(dim=1, descending=True).values
    return margin(logits, labels) / (_scale(top, 3) + 1e-12)


def targeted_dlr_loss(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Targeted DLR (APGD-T): (z_t - z_y) / (z_(1) - (z_(3) + z_(4)) / 2), to ascend; positive once t beats y.

    With fewer than four classes the denominator uses the smallest logits there are.
    """
    top = logits.sort(dim=1, descending=True).values
    scale = (_scale(top, 3) + _scale(top, 4)) / 2
    gap = logits.gather(1, targets[:, None]).squeeze(1) - logits.gather(1, labels[:, None]).squeeze(1)
    return gap / (scale + 1e-12)


ATTACK_LOSSES = ("ce", "margin", "dlr", "dlr_targeted")


class ClassificationObjective:
    """A classification loss on the logits; untargeted (move away from `labels`) or targeted (toward them).

    Losses: "ce" (cross-entropy), "margin" (max other logit - true logit), "dlr" (the margin over z_(1) - z_(3)),
    and "dlr_targeted" (untargeted, but pulled toward one class per example, `guide`: APGD-T).
    The score is always the margin in the attacker's favour, so keep-best selects misclassified
    (untargeted) or target-hitting (targeted) iterates whichever loss drives the steps.
    """

    def __init__(self, model, labels: torch.Tensor, *, targeted: bool = False, loss: str = "ce", amp: bool = False,
                 guide: torch.Tensor | None = None):
        if loss not in ATTACK_LOSSES:
            raise BadInputError(f"unknown attack loss {loss!r}; choose from: {', '.join(ATTACK_LOSSES)}")
        if (loss == "dlr_targeted") != (guide is not None):
            raise BadInputError("the 'dlr_targeted' loss needs guide classes (and only it takes them)")
        if targeted and loss in ("dlr", "dlr_targeted"):
            raise BadInputError("targeted attacks use the 'ce' or 'margin' loss")
        self.model, self.labels, self.targeted, self.loss, self.amp = model, labels, targeted, loss, amp
        self.guide = guide

    def __call__(self, x: torch.Tensor, index: torch.Tensor):
        with autocast(x.device, self.amp):
            logits = self.model(x)
        logits = logits.float()
        y = self.labels[index]
        m = margin(logits, y)  # > 0: not y
        score = -m if self.targeted else m
        if self.loss == "margin":
            return score, score
        if self.loss == "dlr":
            return dlr_loss(logits, y), score
        if self.loss == "dlr_targeted":
            return targeted_dlr_loss(logits, y, self.guide[index]), score
        ce = F.cross_entropy(logits, y, reduction="none")
        return (-ce if self.targeted else ce), score


class EnsembleKeepObjective:
    """Targeted toward `targets` on `model` while K `keep_models` keep reading `keep_labels` (Nakkiran, 2019).

    The loss to ascend is -(CE(f(x), t) + (1/K) sum_i CE(f_i(x), y)): the step follows the gradient that lowers
    the target's cross-entropy on f and the true label's mean cross-entropy on the ensemble, so what the attack
    adds is specific to f (a "bug") rather than a feature the independently trained f_i share. The score is
    ClassificationObjective(targeted=True)'s, -margin(f(x), t), so early stop and keep-best still mean "f predicts
    t" and ignore the ensemble.
    """

    def __init__(self, model, targets: torch.Tensor, keep_models: Sequence[torch.nn.Module],
                 keep_labels: torch.Tensor, amp: bool = False):
        if len(keep_models) == 0:
            raise BadInputError("EnsembleKeepObjective needs at least one keep model")
        if keep_labels.shape != targets.shape:
            raise BadInputError(f"keep_labels must have one label per target: got shape {tuple(keep_labels.shape)} "
                                f"for targets of shape {tuple(targets.shape)}")
        self.model, self.targets, self.amp = model, targets, amp
        self.keep_models, self.keep_labels = tuple(keep_models), keep_labels

    def __call__(self, x: torch.Tensor, index: torch.Tensor):
        with autocast(x.device, self.amp):
            logits = self.model(x)
            keep_logits = [m(x) for m in self.keep_models]
        t, y = self.targets[index], self.keep_labels[index]
        logits = logits.float()
        target_ce = F.cross_entropy(logits, t, reduction="none")
        keep_ce = torch.stack([F.cross_entropy(k.float(), y, reduction="none") for k in keep_logits]).mean(0)
        return -(target_ce + keep_ce), -margin(logits, t)


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
    step_rule: str = "fixed",
    random_start: bool = False,
    restarts: int = 1,
    batch_size: int = 512,
    seed: int = 0,
    amp: bool = False,
    early_stop: bool = False,
    keep_models: Sequence[torch.nn.Module] = (),
    keep_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Projected gradient descent (Madry et al., 2018) in the L2 or Linf ball of radius eps, batched.

    Untargeted: `labels` are the true classes and the attack pushes away from them. Targeted: `labels` are
    the targets and the attack pulls toward them. `early_stop` freezes each example as soon as it is
    misclassified (untargeted) or hits its target (targeted). `step_rule="apgd"` adapts the step (module
    docstring; default initial step 2 eps). Returns adversarial images in [0, 1].

    `keep_models` (targeted cross-entropy only, with `keep_labels`, one per image, usually the true classes):
    the step also lowers each keep model's mean cross-entropy on `keep_labels` (`EnsembleKeepObjective`,
    Nakkiran 2019), so the result fools `model` toward the targets while the keep models stay on their labels.
    Without keep models the attack is exactly the plain one.
    """
    # numbers, shapes, dtypes and devices only: this runs once per adversarial-training batch, so no pass over the
    # values and no host sync (the public evaluation functions and the data loaders check the values)
    check_attack(norm=norm, eps=eps, steps=steps, step_size=step_size, batch_size=batch_size, seed=seed)
    check_int("restarts", restarts, low=1)
    check_model_inputs(model, images, labels, source="pgd_attack", check_values=False)
    keep_models = tuple(keep_models)
    _check_keep(keep_models, keep_labels, labels, targeted, loss)
    modes = [(m, m.training) for m in (model, *keep_models)]
    for m, _ in modes:
        m.eval()
    if step_size is None:
        step_size = 2 * eps if step_rule == "apgd" else default_step_size(eps, steps)
    generator = torch.Generator(device=images.device).manual_seed(seed)
    out = torch.empty_like(images)
    try:
        for sl in _batches(images.shape[0], batch_size):
            if keep_models:
                objective = EnsembleKeepObjective(model, labels[sl], keep_models, keep_labels[sl], amp=amp)
            else:
                objective = ClassificationObjective(model, labels[sl], targeted=targeted, loss=loss, amp=amp)
            result = projected_gradient(
                objective, images[sl], norm=norm, eps=eps, steps=steps, step_size=step_size, step_rule=step_rule,
                random_start=random_start, restarts=restarts, generator=generator,
                stop_score=0.0 if early_stop else None,
            )
            out[sl] = result.x
    finally:
        for m, was_training in reversed(modes):
            m.train(was_training)
    return out


def _check_keep(keep_models: tuple, keep_labels: torch.Tensor | None, labels: torch.Tensor, targeted: bool,
                loss: str) -> None:
    """pgd_attack's keep-model arguments: only with the targeted cross-entropy, labels given exactly when models are."""
    if not keep_models:
        if keep_labels is not None:
            raise BadInputError("keep_labels were given without keep_models; pass the models that must keep them")
        return
    if not targeted or loss != "ce":
        raise BadInputError("keep_models work only with a targeted attack and the 'ce' loss "
                            f"(got targeted={targeted}, loss={loss!r})")
    if keep_labels is None:
        raise BadInputError("keep_models need keep_labels: the class each keep model must still predict per image")
    if keep_labels.shape != labels.shape:
        raise BadInputError(f"keep_labels must have one label per image: got shape {tuple(keep_labels.shape)}, "
                            f"images have {tuple(labels.shape)} labels")


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
    check_int("steps", steps, low=0)
    check_step_size(step_size)
    check_int("batch_size", batch_size, low=1)
    if tolerance is not None:
        check_real("tolerance", tolerance, low=0.0)
    check_model_inputs(model, target_images, None, source="invert_representation (targets)")
    check_images(start_images, "invert_representation (starts)")
    if start_images.shape != target_images.shape:
        raise BadInputError(f"invert_representation: start images {tuple(start_images.shape)} and target images "
                            f"{tuple(target_images.shape)} must have the same shape")
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
