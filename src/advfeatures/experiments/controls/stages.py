"""controls: could D_rand / D_det generalise without non-robust features, and does D_R need real images?

`reproduce --controls` runs them beside the paper's sets, on the same data, seeds and training recipes:

* D_rand_shortcut / D_det_shortcut (Keller Jordan's "leakage-only" sets, KellerJordan/cifar10-zoo): D_rand's and
  D_det's own targets, but each image gets a fixed pattern of its target class (L2 norm = the relabelling eps,
  made without any model: construct.class_patterns) instead of an attack; images whose target is already right
  stay clean (D_rand: t == y; D_det: a weakly trained clean model already reads y+1). Trained with D_rand's and
  D_det's recipes and scored on the real test set: what these reach, D_rand / D_det can reach without a single
  non-robust feature, through which images stay clean.
* D_rand_no_true: D_rand with targets drawn among the other classes only, so none of its images is simply
  correctly labelled (in D_rand about 1 in C are).
* D_R_noise / D_NR_noise: inversion started from uniform noise (the paper's Figure 2 / Table 1 variant) with
  `controls.noise_steps` steps (default 10x the image-started ones, as the paper).

The construction diagnostics record what each set holds (the share of clean images, the representation error);
on synthetic data the audit shows which planted features the control sets carry. The report's section is in
section.py; the builders are the library's (construct.build_shortcut_dataset, relabel_targets "rand_no_true").
"""

from __future__ import annotations

import dataclasses

from ...construct import build_shortcut_dataset, inversion_diagnostics, relabelled_diagnostics
from ...evaluation import clean_accuracy, predict
from ...models import load_model
from ...runfolder import Stage
from ..context import EVALUATE

WEAK = "controls_weak"  # the weakly trained clean model's file name (models/controls_weak.safetensors)
SHORTCUTS = {"D_rand_shortcut": ("rand", "D_rand"), "D_det_shortcut": ("det", "D_det")}  # name: (mode, recipe)
TRAINED = {"D_rand_shortcut": "D_rand", "D_det_shortcut": "D_det", "D_rand_no_true": "D_rand", "D_R_noise": "D_R",
           "D_NR_noise": "D_NR"}  # each control set: the paper's set whose training recipe it uses
INVERTED = {"D_R_noise": "D_adv", "D_NR_noise": "D"}  # noise-started inversion through the robust / standard model


def _on(run) -> bool:
    return run.with_controls


def _weak_model(run, upstream: dict) -> dict:
    """Keller Jordan's weakly trained clean model: D's recipe for `controls.weak_epochs` epochs."""
    config = dataclasses.replace(run.preset.train, epochs=run.preset.controls.weak_epochs)
    model, _ = run.fit(WEAK, run.train_x, run.train_y, config)
    reads_next = predict(model, run.train_x) == (run.train_y + 1) % run.num_classes
    return {"epochs": run.preset.controls.weak_epochs,
            "train_accuracy": clean_accuracy(model, run.train_x, run.train_y),
            "test_accuracy": clean_accuracy(model, run.test_x, run.test_y),
            "reads_next_class": float(reads_next.float().mean())}


def _shortcut(name: str) -> Stage:
    mode, _ = SHORTCUTS[name]

    def body(run, upstream: dict) -> dict:
        weak = run.load(WEAK) if mode == "det" else None
        ds = build_shortcut_dataset(run.train_x, run.train_y, mode=mode, num_classes=run.num_classes,
                                    eps=run.preset.relabel.eps, family=run.preset.controls.pattern_family,
                                    seed=run.seed, clean_model=weak)
        run.save_constructed(name, ds)
        return ds.diagnostics

    return Stage(f"construct_{name}", body, reads=("data", "relabel.eps", "controls.pattern_family"),
                 needs=("controls_weak_model",) if mode == "det" else (), into=("construction", name), when=_on,
                 validate=lambda run, result: run.check_constructed(name))


def _no_true(run, upstream: dict) -> dict:
    standard, robust = run.load("D"), run.load("D_adv")
    ds = run.relabel(standard, "rand_no_true")
    run.save_constructed("D_rand_no_true", ds)
    return relabelled_diagnostics(standard, robust, run.train_x, ds, run.preset.threat.norm)


def _noise(name: str) -> Stage:
    source_name = INVERTED[name]

    def body(run, upstream: dict) -> dict:
        source = run.load(source_name)
        steps = run.preset.controls.noise_steps or 10 * run.preset.inversion.steps
        ds = run.invert(source, name, start="noise", steps=steps)
        run.save_constructed(name, ds)
        return {"steps": steps, **inversion_diagnostics(source, run.train_x, ds)}

    return Stage(f"construct_{name}", body, reads=("data", "inversion", "controls.noise_steps", "precision"),
                 needs=(source_name,), into=("construction", name), when=_on, heavy=True,
                 validate=lambda run, result: run.check_constructed(name))


def _model(name: str) -> Stage:
    recipe = TRAINED[name]

    def body(run, upstream: dict) -> dict:
        images, labels, _ = run.load_constructed(name)
        return run.train_and_evaluate(name, images, labels, run.preset.constructed_train[recipe])

    return Stage(name, body, reads=("data", "model", f"constructed_train.{recipe}", "precision", *EVALUATE),
                 needs=(f"construct_{name}",), into=("accuracy", name), when=_on,
                 validate=lambda run, result: load_model(run.model_path(name)))


def _audit(run, upstream: dict) -> dict:
    """Which planted features each control set carries (synthetic only): labels, and the original classes."""
    out = {}
    for name in TRAINED:
        images, labels, original = run.load_constructed(name)
        out[name] = run.audit(images, labels, None if name in INVERTED else original)
    return out


STAGES = (
    Stage("controls_weak_model", _weak_model, reads=("data", "model", "train", "controls.weak_epochs", "precision"),
          into=("controls", "weak_model"), when=_on, validate=lambda run, result: load_model(run.model_path(WEAK))),
    *(_shortcut(name) for name in SHORTCUTS),
    Stage("construct_D_rand_no_true", _no_true, reads=("data", "relabel", "threat.norm", "precision"),
          needs=("D", "D_adv"), into=("construction", "D_rand_no_true"), when=_on,
          validate=lambda run, result: run.check_constructed("D_rand_no_true")),
    *(_noise(name) for name in INVERTED),
    *(_model(name) for name in TRAINED),
    Stage("controls_audit", _audit, reads=("data",), needs=tuple(f"construct_{n}" for n in TRAINED),
          into=("controls", "audit"), when=lambda run: _on(run) and run.features is not None),
)
