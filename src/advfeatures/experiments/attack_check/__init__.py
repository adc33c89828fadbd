"""attack_check: is the default robust-accuracy evaluation as strong as an attack of another family?

Robust accuracy is only an upper bound, as tight as the attack behind it. This stage re-attacks the models whose
robust numbers carry the paper's claims with an independent check, on the same test images, and records both:

* AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square; the reference implementation) where the optional extra
  is installed: a minimum-norm attack and a gradient-free one that our engine does not contain;
* otherwise our engine's strongest settings: 2x the steps, APGD-DLR (an untargeted loss the default does not
  use) from 3 random starts, 3 APGD-CE runs and APGD-T over every other class, with another seed. It is the
  same engine, so it cannot catch what the engine misses; the report says which check ran.

A model is flagged when its default number is more than `TOLERANCE` above the check. This module is the library
part (callable on any models); the stage is in stages.py, the report's table in section.py.
"""

from __future__ import annotations

import time

import torch

from ...autoattack import NAME as AUTOATTACK_NAME
from ...autoattack import autoattack_accuracy, autoattack_available, require_autoattack
from ...evaluation import robust_accuracy

CHECKED = ("D", "D_adv", "D_R", "D_NR")  # the models whose robust numbers the claims read
TOLERANCE = 0.01  # one point of accuracy


def check_method(required: bool = False) -> str:
    """"autoattack" where the extra is installed (required with --autoattack), else "own"."""
    if required:
        require_autoattack()
    return "autoattack" if autoattack_available() else "own"


def describe(method: str, ev) -> str:
    if method == "autoattack":
        return AUTOATTACK_NAME
    return (f"our engine's strongest: APGD-CE x3, APGD-DLR x3, APGD-T over every class, {2 * ev.steps} steps, "
            "other seed (AutoAttack not installed)")


def run_attack_check(models: dict, images: torch.Tensor, labels: torch.Tensor, threat, ev, *, method: str,
                     seed: int = 0, defaults: dict[str, float] | None = None) -> dict:
    """{"method", "attack", "images", "models": {name: {"default", "check", "gap", "seconds"}}}; `defaults` are the
    default evaluation's numbers on exactly these images when already measured (else they are measured here)."""
    out = {"method": method, "attack": describe(method, ev), "images": int(labels.shape[0]), "models": {}}
    for name, model in models.items():
        if defaults is not None:
            default = defaults[name]
        else:
            default = robust_accuracy(model, images, labels, threat.norm, threat.eps, steps=ev.steps,
                                      restarts=ev.restarts, targets=ev.targets, seed=seed)
        t0 = time.perf_counter()
        if method == "autoattack":
            check = autoattack_accuracy(model, images, labels, threat.norm, threat.eps, seed=seed)
        else:
            check = robust_accuracy(model, images, labels, threat.norm, threat.eps, steps=2 * ev.steps, restarts=3,
                                    dlr_restarts=3, targets=10**6, seed=seed + 1)
        out["models"][name] = {"default": default, "check": check, "gap": default - check,
                               "seconds": time.perf_counter() - t0}
    return out


def flagged(check: dict) -> list[str]:
    """Models whose default evaluation reads more than TOLERANCE above the check."""
    return [name for name, m in check.get("models", {}).items() if m["gap"] > TOLERANCE + 1e-9]
