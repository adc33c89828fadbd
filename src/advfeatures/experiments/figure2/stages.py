"""The paper's main experiment (Section 3, Figure 2 / Table 1): the constructed training sets and standard training
on each, plus its controls.

* construct_D_R / construct_D_NR: representation inversion through the robust / standard model (construct.py);
* construct_D_rand / construct_D_det: targeted adversarial examples against the standard model, relabelled with
  the target (PresetRun.relabel); with --released, the authors' four sets instead;
* D_R, D_NR, D_rand, D_det: standard training on each, evaluated on the real test set;
* D_det_unleaked: D_det restricted to images the robust model still reads as their original class;
* audit (synthetic data only): how much of each planted feature every set's images carry.
"""

from __future__ import annotations

from ...construct import inversion_diagnostics, relabelled_diagnostics
from ...evaluation import predict
from ...models import load_model
from ...runfolder import Stage
from ..context import EVALUATE

SETS = ("D_R", "D_NR", "D_rand", "D_det")
RELABELLED = ("D_rand", "D_det")


def _built(name: str) -> Stage:
    """construct_NAME from the source models."""

    def body(run, upstream: dict) -> dict:
        if name in RELABELLED:
            standard, robust = run.load("D"), run.load("D_adv")
            ds = run.relabel(standard, "rand" if name == "D_rand" else "det")
            run.save_constructed(name, ds)
            return relabelled_diagnostics(standard, robust, run.train_x, ds, run.preset.threat.norm)
        source = run.load("D_adv" if name == "D_R" else "D")  # D_R through the robust model, D_NR the standard
        ds = run.invert(source, name)
        run.save_constructed(name, ds)
        return inversion_diagnostics(source, run.train_x, ds)

    if name in RELABELLED:
        reads, needs = ("data", "relabel", "threat.norm", "precision"), ("D", "D_adv")
    else:
        reads, needs = ("data", "inversion", "precision"), ("D_adv",) if name == "D_R" else ("D",)
    return Stage(f"construct_{name}", body, reads=reads, needs=needs, into=("construction", name),
                 when=lambda run: run.released is None,
                 validate=lambda run, result: run.check_constructed(name))


def _released(name: str) -> Stage:
    """construct_NAME from the authors' released set (--released)."""

    def body(run, upstream: dict) -> dict:
        run.save_constructed(name, run.released[name])
        return {"source": "released"}

    return Stage(f"construct_{name}", body, reads=("data", "released"), into=("construction", name),
                 when=lambda run: run.released is not None,
                 validate=lambda run, result: run.check_constructed(name))


def _model(name: str) -> Stage:
    """Standard training on a constructed set, evaluated on the real test set."""

    def body(run, upstream: dict) -> dict:
        images, labels, _ = run.load_constructed(name)
        return run.train_and_evaluate(name, images, labels, run.preset.constructed_train[name])

    return Stage(name, body, reads=("data", "model", f"constructed_train.{name}", "precision", *EVALUATE),
                 needs=(f"construct_{name}",), into=("accuracy", name),
                 validate=lambda run, result: load_model(run.model_path(name)))


def _unleaked(run, upstream: dict) -> dict:
    """D_det restricted to images the robust model still reads as their original class (no robust leakage)."""
    images, labels, original = run.load_constructed("D_det")
    keep = predict(run.load("D_adv"), images) == original
    if int(keep.sum()) < run.num_classes:
        return {"skipped": "fewer unleaked images than classes", "train_images": int(keep.sum())}
    return run.train_and_evaluate(
        "D_det_unleaked", images[keep], labels[keep], run.preset.constructed_train["D_det_unleaked"]
    )


def _audit(run, upstream: dict) -> dict:
    """Which planted features the real data and every constructed set carry (labels and original classes)."""
    out = {"D": run.audit(run.train_x, run.train_y)}
    for name in SETS:
        images, labels, original = run.load_constructed(name)
        out[name] = run.audit(images, labels, original if name in RELABELLED else None)
    return out


STAGES = (
    *(stage for name in SETS for stage in (_built(name), _released(name))),
    *(_model(name) for name in SETS),
    Stage("D_det_unleaked", _unleaked,
          reads=("data", "model", "constructed_train.D_det_unleaked", "precision", *EVALUATE),
          needs=("construct_D_det", "D_adv"), into=("accuracy", "D_det_unleaked"),
          validate=lambda run, result: None if "skipped" in result else load_model(run.model_path("D_det_unleaked"))),
    Stage("audit", _audit, reads=("data",), needs=tuple(f"construct_{n}" for n in SETS), into=("audit",),
          when=lambda run: run.features is not None),
)
