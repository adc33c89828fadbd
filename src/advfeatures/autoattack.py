"""AutoAttack (Croce & Hein, ICML 2020) as an independent check of our evaluation, through the optional extra.

Our default evaluation runs AutoAttack's two gradient attacks (APGD-CE, APGD-T) in our own engine; the check runs
the reference implementation, `pyautoattack` from the package registry, with its standard suite: APGD-CE,
APGD-T, FAB-T (a minimum-norm attack) and Square (gradient-free, so it sees through gradient masking). A
default number more than a point above it means our evaluation is too weak for that model.

Install with `pip install 'advfeatures[autoattack]'`. Its API (0.2): `AutoAttack(model, norm="L2", eps=e,
version="standard", device=..., seed=0).run_standard_evaluation(x, y, batch_size=...)` -> (x_adv, y_adv).
"""

from __future__ import annotations

import importlib.util
import logging

import torch

from .attacks import check_norm
from .errors import BadInputError

INSTALL_HINT = "pip install 'advfeatures[autoattack]' (the registry package pyautoattack)"
NAME = "AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square; pyautoattack)"


def autoattack_available() -> bool:
    return importlib.util.find_spec("pyautoattack") is not None


def require_autoattack() -> None:
    """Raise a bad-usage error naming the install command when the extra is missing."""
    if not autoattack_available():
        raise BadInputError(f"--autoattack needs the optional AutoAttack extra; install it with: {INSTALL_HINT}")


@torch.no_grad()
def autoattack_examples(
    model, images: torch.Tensor, labels: torch.Tensor, norm: str, eps: float, *, batch_size: int = 500,
    seed: int = 0,
) -> torch.Tensor:
    """AutoAttack's adversarial images (clean images where it found none), in [0, 1]."""
    require_autoattack()
    from pyautoattack import AutoAttack

    check_norm(norm)
    if min(images.shape[-2:]) < 5:
        raise BadInputError(f"AutoAttack's Square attack needs images of 5 pixels or more, got {tuple(images.shape)}")
    was_training = model.training
    model.eval()
    logging.getLogger("auto-attack").setLevel(logging.WARNING)  # its per-batch debug lines
    try:
        attack = AutoAttack(model, norm={"l2": "L2", "linf": "Linf"}[norm], eps=float(eps), version="standard",
                            device=images.device, seed=seed)
        # standard AutoAttack targets the top 9 other classes; with fewer classes, every other class
        classes = model(images[:1]).shape[1]
        attack.apgd_targeted.n_target_classes = attack.fab.n_target_classes = min(9, classes - 1)
        with torch.enable_grad():
            try:
                x_adv, _ = attack.run_standard_evaluation(images, labels, batch_size=batch_size)
            except (RuntimeError, ValueError, IndexError) as err:
                raise BadInputError(
                    f"AutoAttack's reference implementation (pyautoattack) failed on images of shape "
                    f"{tuple(images.shape[1:])}: {err}. A known cause: its Square attack fails at some image sizes "
                    "(12x12 in our runs; fra31/auto-attack issue 95 reports others); 8x8, 16x16, 32x32 and 224x224 "
                    "have run. Use "
                    "images of such a size, or `pip uninstall pyautoattack` so that a run's check uses our engine's "
                    "strongest settings instead (--autoattack needs the package)"
                ) from err
    finally:
        model.train(was_training)
    return x_adv.detach()


def autoattack_accuracy(model, images: torch.Tensor, labels: torch.Tensor, norm: str, eps: float, **kwargs) -> float:
    """Robust accuracy under AutoAttack standard; the images it returns are re-classified here, not trusted."""
    from .evaluation import clean_accuracy

    if eps == 0:
        return clean_accuracy(model, images, labels)
    return clean_accuracy(model, autoattack_examples(model, images, labels, norm, eps, **kwargs), labels)
