"""transfer: the paper's Figure 3, transferability of adversarial examples vs learning from D_det.

For each architecture: its accuracy on the real test set after standard training on D_det, against the rate at
which the standard source model's adversarial examples transfer to that architecture trained on D (untargeted,
and the targeted analogue). The paper finds the two strongly correlated: architectures that learn more from
D_det's non-robust features are the ones adversarial examples transfer to. The report's table and figure are in
section.py.
"""

from __future__ import annotations

import math

from ...attacks import pgd_attack
from ...evaluation import clean_accuracy, predict, transfer_rate
from ...runfolder import Stage


def run_transfer(run, upstream: dict) -> dict:
    """{"source": {...}, arch: {"accuracy", "transfer_rate", "targeted_transfer_rate", "clean_on_D"}, ...}."""
    p, threat, standard = run.preset, run.preset.threat, run.load("D")
    archs = p.transfer_models_full if run.full else p.transfer_models
    # fixed-step CE PGD from the clean image, every step taken (no early exit): full-strength examples to
    # transfer, as in the paper, not the minimal ones the evaluation's cascade stops at
    adv = pgd_attack(standard, run.test_x, run.test_y, norm=threat.norm, eps=threat.eps, steps=p.evaluation.steps)
    fooled = predict(standard, adv) != run.test_y
    targets = (run.test_y + 1) % run.num_classes
    targeted = pgd_attack(standard, run.test_x, targets, norm=threat.norm, eps=threat.eps,
                          steps=p.relabel.steps, step_size=p.relabel.step_size, targeted=True)
    hit = predict(standard, targeted) == targets
    det_x, det_y, _ = run.load_constructed("D_det")
    # {arch: {"accuracy", "transfer_rate", ...}, ...} as the contract has it; "source" describes the
    # adversarial examples (the only entry without a transfer_rate)
    out = {"source": {"fooled": float(fooled.float().mean()), "targeted_success": float(hit.float().mean()),
                      "architecture_set": "full" if run.full else "default subset (--full runs all)"}}
    for spec in archs:
        key = spec.arch + "".join(f"_{k}{v}" for k, v in sorted(spec.options.items()) if k != "width")
        # the source architecture: its own D and D_det models (the paper's 100% point); a given D
        # (--standard-model) may be another architecture, so then every architecture trains its own D
        if spec == p.model and run.given("D") is None:
            key += " (source)"
            on_d, on_det = standard, run.load("D_det")
        else:
            on_d, _ = run.fit(f"transfer_{key}_D", run.train_x, run.train_y, p.train, spec)
            on_det, _ = run.fit(f"transfer_{key}_D_det", det_x, det_y, p.constructed_train["D_det"], spec)
        out[key] = {
            "accuracy": clean_accuracy(on_det, run.test_x, run.test_y),
            "transfer_rate": transfer_rate(on_d, adv, run.test_y, fooled),
            "targeted_transfer_rate": float(
                (predict(on_d, targeted[hit]) == targets[hit]).float().mean()) if hit.any() else math.nan,
            "clean_on_D": clean_accuracy(on_d, run.test_x, run.test_y),
        }
    return out


def _reads(run) -> tuple[str, ...]:
    archs = "transfer_models_full" if run.full else "transfer_models"
    return ("data", "threat", "evaluation.steps", "relabel.steps", "relabel.step_size", "transfer_set", archs, "model",
            "sources.D", "train", "constructed_train.D_det", "precision")


STAGES = (Stage("transfer", run_transfer, reads=_reads, needs=("D", "construct_D_det", "D_det"), into=("transfer",)),)
