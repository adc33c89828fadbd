"""robust_source: the paper's Table 9, D_rand and D_det built against the robust model instead of the standard.

If the non-robust features a standard model uses are what D_rand / D_det carry, then building them against a
robust model (which does not use those features) should give data a model learns little from: the paper reports
much lower test accuracy for models trained on these sets.
"""

from __future__ import annotations

from ..construct import build_relabelled_dataset
from ..distributed import gather_shards
from ..evaluation import clean_accuracy, predict


def run_robust_source(run, robust) -> dict:
    """{"D_rand": {"clean", "attack_success"}, "D_det": {...}}: `run` is the seed's PresetRun, `robust` D_adv."""
    p = run.p
    out = {}
    for mode in ("rand", "det"):
        ds = build_relabelled_dataset(
            robust, run.train_x, run.train_y, mode=mode, num_classes=run.num_classes, norm=p.threat.norm,
            eps=p.relabel.eps, steps=p.relabel.steps, step_size=p.relabel.step_size, seed=run.seed,
            amp=run.amp, early_stop=p.relabel.early_stop, progress=run.opts.progress and run.group.is_main,
            shard=run.group.shard,
        )
        ds.images = gather_shards(ds.images, run.group)
        model, _ = run.fit(f"robust_source_D_{mode}", ds.images, ds.labels, p.constructed_train[f"D_{mode}"])
        out[f"D_{mode}"] = {
            "clean": clean_accuracy(model, run.test_x, run.test_y),
            "attack_success": float((predict(robust, ds.images) == ds.labels).float().mean()),
        }
    return out
