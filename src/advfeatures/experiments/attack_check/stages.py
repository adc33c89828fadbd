"""attack_check: the default evaluation of D, D_adv, D_R and D_NR against an attack of another family (library
and method: this package's __init__); with --autoattack, AutoAttack on the whole test set."""

from __future__ import annotations

from ...io import unpack_mask
from ...runfolder import Stage
from . import CHECKED, check_method, run_attack_check


def _plan(run) -> tuple[str, int]:
    """The check's method ("autoattack" / "own") and number of test images: they name its record."""
    own = run.preset.evaluation.check_method == "own" and not run.autoattack
    method = "own" if own else check_method(required=run.autoattack)
    limit = None if run.autoattack else run.preset.evaluation.check_limit
    n = min(limit or run.test_x.shape[0], run.test_x.shape[0])
    return method, n


def _check(run, upstream: dict) -> dict:
    method, n = _plan(run)
    names = [m for m in CHECKED if m in upstream and "robust" in upstream[m]]
    models = {m: run.load(m) for m in names}
    # our evaluation's own per-image results on these images (the reported number's, restricted to the sample):
    # the check is paired with it, and nothing is attacked twice
    defaults = None
    if all("robust_examples" in upstream[m] for m in names):
        defaults = {m: float(unpack_mask(upstream[m]["robust_examples"], n).float().mean()) for m in names}
    elif n == run.test_x.shape[0]:
        defaults = {m: upstream[m]["robust"] for m in names}
    return run_attack_check(models, run.test_x[:n], run.test_y[:n], run.preset.threat, run.preset.evaluation,
                            method=method, seed=run.seed, defaults=defaults)


STAGES = (
    Stage("attack_check", _check, reads=("data", "threat", "evaluation", "autoattack"), needs=CHECKED,
          into=("attack_check",), record=lambda run: "attack_check_{}_{}".format(*_plan(run)), main_only=True),
)


def autoattack_beside_ours(results: dict) -> None:
    """With --autoattack, each checked model's AutoAttack number sits in its accuracy entry beside ours."""
    for name, entry in results.get("attack_check", {}).get("models", {}).items():
        results["accuracy"][name]["autoattack"] = entry["check"]
