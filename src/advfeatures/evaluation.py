"""Clean and robust accuracy, robust-accuracy curves over eps, and transfer rates."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from .attacks import (
    AttackResult,
    ClassificationObjective,
    _batches,
    check_norm,
    default_step_size,
    projected_gradient,
)
from .device import autocast
from .errors import BadInputError

# Evaluation-strength defaults: 50 steps of 2.5*eps/50, three runs per example (one from the clean image with
# cross-entropy, one random start with the margin loss (robust to saturated softmax), one random start with
# cross-entropy), worst case per example over every iterate of every run.
EVAL_STEPS = 50
EVAL_RESTARTS = 3


@torch.no_grad()
def predict(model, images: torch.Tensor, batch_size: int = 1024, amp: bool = False) -> torch.Tensor:
    """Predicted classes (N,) for images in [0, 1]."""
    was_training = model.training
    model.eval()
    preds = []
    for sl in _batches(images.shape[0], batch_size):
        with autocast(images.device, amp):
            preds.append(model(images[sl]).argmax(1))
    model.train(was_training)
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long, device=images.device)


def clean_accuracy(model, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1024) -> float:
    return float((predict(model, images, batch_size) == labels).float().mean())


@torch.no_grad()
def worst_case_examples(
    model,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    norm: str = "l2",
    eps: float,
    steps: int = EVAL_STEPS,
    step_size: float | None = None,
    restarts: int = EVAL_RESTARTS,
    batch_size: int = 512,
    seed: int = 0,
    amp: bool = False,
    progress: bool = False,
) -> torch.Tensor:
    """Per example, the most damaging iterate found over `restarts` runs (see EVAL_* above)."""
    check_norm(norm)
    if eps < 0:
        raise BadInputError(f"eps must be non-negative, got {eps}")
    was_training = model.training
    model.eval()
    step_size = default_step_size(eps, steps) if step_size is None else step_size
    generator = torch.Generator(device=images.device).manual_seed(seed)
    out = images.clone()
    batches = list(_batches(images.shape[0], batch_size))
    bar = tqdm(total=len(batches) * restarts, desc=f"attack eps {eps:g}", disable=not progress, leave=False,
               unit="run")
    try:
        for sl in batches:
            best: AttackResult | None = None
            for run in range(restarts):
                loss = "margin" if run % 2 == 1 else "ce"
                objective = ClassificationObjective(model, labels[sl], loss=loss, amp=amp)
                result = projected_gradient(
                    objective, images[sl], norm=norm, eps=eps, steps=steps, step_size=step_size,
                    random_start=run > 0, generator=generator,
                )
                bar.update(1)
                if best is None:
                    best = result
                else:
                    better = result.score > best.score
                    best.x[better], best.score[better] = result.x[better], result.score[better]
            out[sl] = best.x
    finally:
        bar.close()
        model.train(was_training)
    return out


def robust_accuracy(
    model,
    images: torch.Tensor,
    labels: torch.Tensor,
    norm: str = "l2",
    eps: float = 0.5,
    *,
    steps: int = EVAL_STEPS,
    step_size: float | None = None,
    restarts: int = EVAL_RESTARTS,
    batch_size: int = 512,
    seed: int = 0,
    amp: bool = False,
    progress: bool = False,
) -> float:
    """Accuracy under the strongest of `restarts` PGD runs per example (evaluation-strength defaults)."""
    if eps == 0:
        return clean_accuracy(model, images, labels, batch_size)
    adv = worst_case_examples(
        model, images, labels, norm=norm, eps=eps, steps=steps, step_size=step_size, restarts=restarts,
        batch_size=batch_size, seed=seed, amp=amp, progress=progress,
    )
    return clean_accuracy(model, adv, labels, batch_size)


def robust_accuracy_curve(
    model, images: torch.Tensor, labels: torch.Tensor, norm: str, eps_values: Sequence[float], **attack
) -> dict[str, float]:
    """Robust accuracy at each eps, keyed by the eps written as a string (JSON-friendly)."""
    return {f"{e:g}": robust_accuracy(model, images, labels, norm, float(e), **attack) for e in eps_values}


def transfer_rate(
    target_model, adversarial: torch.Tensor, labels: torch.Tensor, source_fooled: torch.Tensor
) -> float:
    """Fraction of the source's successful adversarial examples (mask `source_fooled`) that also fool the target.

    A target that already misclassifies the clean image is not counted separately: transfer is measured on the
    adversarial image alone, as in the paper's Figure 3.
    """
    if source_fooled.sum() == 0:
        return float("nan")
    preds = predict(target_model, adversarial[source_fooled])
    return float((preds != labels[source_fooled]).float().mean())
