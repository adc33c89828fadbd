"""robust_source: the paper's Table 9, D_rand and D_det built against the robust model instead of the standard.

If the non-robust features a standard model uses are what D_rand / D_det carry, then building them against a
robust model (which does not use those features) should give data a model learns little from: the paper reports
much lower test accuracy for models trained on these sets. The report's table is in section.py.
"""

from __future__ import annotations

from ...evaluation import clean_accuracy, predict
from ...runfolder import Stage


def run_robust_source(run, upstream: dict) -> dict:
    """{"D_rand": {"clean", "attack_success"}, "D_det": {...}}: the relabelled sets built against D_adv."""
    robust = run.load("D_adv")
    out = {}
    for mode in ("rand", "det"):
        ds = run.relabel(robust, mode)
        model, _ = run.fit(f"robust_source_D_{mode}", ds.images, ds.labels,
                           run.preset.constructed_train[f"D_{mode}"])
        out[f"D_{mode}"] = {
            "clean": clean_accuracy(model, run.test_x, run.test_y),
            "attack_success": float((predict(robust, ds.images) == ds.labels).float().mean()),
        }
    return out


STAGES = (
    # revision 1: from commit 0bc6f6f to its fix, D_det's construction took D_rand's finished chunks (context._partial)
    Stage("robust_source", run_robust_source, needs=("D_adv",), into=("robust_source",), revision=1,
          reads=("data", "relabel", "threat.norm", "precision", "model", "constructed_train.D_rand",
                 "constructed_train.D_det")),
)
