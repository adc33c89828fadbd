"""The follow-ups' stages: the Distill discussion's experiments (2019, "A Discussion of 'Adversarial Examples Are
Not Bugs, They Are Features'"), run beside the paper's on the same data and models. `reproduce --no-followups`
skips them.

* Nakkiran, "Adversarial examples are just bugs, too": D_det_bugs, targeted adversarial examples against the
  standard source model f that an ensemble of K independently trained models f_i must still read as the true
  class (PresetRun.relabel with keep_models). If adversarial examples were only features, such
  examples could not exist; his do, they transfer little, and a model trained on them does not generalise to
  (X, Y) but predicts Y+1. Plus his "adversarial squares" toy, where a network that fits noisy labels is
  non-robust although a robust linear rule exists (adversarial_squares).
* Goh, "Robust feature leakage": how much of D_rand's / D_det's signal a linear classifier reads through the
  features of a robust linear model (train_robust_linear / linear_leakage), with the fraction of test
  points whose robust-linear prediction is certified; shown beside our D_det_unleaked split.
* Wallace, "Learning from incorrectly labeled data": a weak teacher relabels D; only the images it gets wrong are
  kept, with its wrong labels; a fresh model trained on them still generalises (incorrectly_labelled_subset),
  the control that says D_det-style learning can be distillation.

The library functions are this package's __init__, the report's tables section.py, the settings the preset's
`followups` (presets.FollowupsConfig). Each follow-up is its own stage, declared like the paper's (resume, seeds,
torchrun and settings changes as for them); results.json holds them under "followups": {"nakkiran", "goh",
"wallace"}.
"""

from __future__ import annotations

import dataclasses

from ...construct import keep_diagnostics, relabelled_diagnostics
from ...evaluation import clean_accuracy, predict, robust_accuracy
from ...models import load_model
from ...runfolder import Stage
from ...training import ModelSpec, TrainConfig, train_new_model
from . import (
    adversarial_squares,
    certified_fraction,
    incorrectly_labelled_subset,
    linear_leakage,
    linear_rule_robust_accuracy,
    train_robust_linear,
)

SEED_STRIDE = 7919  # other seeds for the ensemble / teacher models: far from every seed the paper's stages use


# ---------------------------------------------------------------- Nakkiran


def _ensemble(run, upstream: dict) -> dict:
    """K + 1 models of the preset's architecture trained on D like D itself, each with another seed: K keep models
    for D_det_bugs and one fresh model to measure transfer."""
    out = {}
    for i, name in enumerate(_ensemble_names(run)):
        config = dataclasses.replace(run.preset.train, seed=run.preset.train.seed + SEED_STRIDE * (i + 1))
        model, _ = run.fit(name, run.train_x, run.train_y, config)
        out[name] = clean_accuracy(model, run.test_x, run.test_y)
    return {"clean": out, "arch": run.preset.model.arch}


def _ensemble_names(run) -> list[str]:
    return [f"followup_ensemble_{i}" for i in range(run.preset.followups.ensemble + 1)]


def _check_ensemble(run, result: dict) -> None:
    for name in result["clean"]:
        load_model(run.model_path(name))


def _construct_bugs(run, upstream: dict) -> dict:
    standard, robust = run.load("D"), run.load("D_adv")
    keep = [run.load(name) for name in _ensemble_names(run)[:-1]]
    ds = run.relabel(standard, "det", keep_models=keep)
    run.save_constructed("D_det_bugs", ds)
    return {**ds.diagnostics, **relabelled_diagnostics(standard, robust, run.train_x, ds, run.preset.threat.norm),
            **keep_diagnostics(keep, ds)}


def _nakkiran(run, upstream: dict) -> dict:
    standard, fresh = run.load("D"), run.load(_ensemble_names(run)[-1])  # the last ensemble model: the fresh one
    construction = upstream["construct_D_det_bugs"]
    p, shifted = run.preset, (run.test_y + 1) % run.num_classes
    out = {"ensemble": p.followups.ensemble, "eps": p.relabel.eps}
    for name in ("D_det", "D_det_bugs"):
        images, labels, original = run.load_constructed(name)
        if name == "D_det":
            model = run.load("D_det")
        else:
            model, _ = run.fit("D_det_bugs", images, labels, p.constructed_train["D_det"])
        fresh_reads = predict(fresh, images)
        out[name] = {
            "attack_success": float((predict(standard, images) == labels).float().mean()),
            "transfer_rate": float((fresh_reads == labels).float().mean()),  # targeted, to a fresh model
            "fresh_model_reads_original": float((fresh_reads == original).float().mean()),
            "accuracy_on_Y": clean_accuracy(model, run.test_x, run.test_y),
            "accuracy_on_Y_plus_1": clean_accuracy(model, run.test_x, shifted),
        }
    out["D_det_bugs"]["construction"] = construction
    if run.features is not None:
        images, labels, original = run.load_constructed("D_det_bugs")
        out["D_det_bugs"]["audit"] = run.audit(images, labels, original)
    return out


def _squares(run, upstream: dict) -> dict:
    """Nakkiran's adversarial squares: a network fit to noisy labels vs the robust linear rule, same radius."""
    sq, ev = run.preset.followups.squares, run.preset.evaluation
    seed = run.seed * 1000 + 17
    x, y, _ = adversarial_squares(sq.train, size=sq.size, label_noise=sq.label_noise, seed=seed)
    tx, _, ty = adversarial_squares(sq.test, size=sq.size, label_noise=0.0, seed=seed + 1)
    x, y, tx, ty = (t.to(run.device) for t in (x, y, tx, ty))
    epochs = sq.epochs  # --epochs / --quick reach it through pipeline.apply_overrides
    config = TrainConfig(epochs=epochs, batch_size=128, lr=0.05, schedule="onecycle", seed=seed)
    net, _ = train_new_model(ModelSpec("small_cnn"), x, y, 2, config, progress=False, desc="squares",
                             group=run.group)
    return {
        "eps": sq.eps, "label_noise": sq.label_noise, "train_images": sq.train, "test_images": sq.test,
        "epochs": epochs, "network": "small_cnn",
        "network_train_accuracy_noisy_labels": clean_accuracy(net, x, y),
        "network_clean": clean_accuracy(net, tx, ty),
        "network_robust": robust_accuracy(net, tx, ty, "l2", sq.eps, steps=ev.steps, restarts=ev.restarts,
                                          targets=1, seed=run.seed),
        "linear_rule_clean": linear_rule_robust_accuracy(tx, ty, 0.0),
        "linear_rule_robust": linear_rule_robust_accuracy(tx, ty, sq.eps),
    }


# ---------------------------------------------------------------- Goh


def _goh(run, upstream: dict) -> dict:
    p, cfg = run.preset, run.preset.followups
    eps, norm = p.threat.eps, p.threat.norm
    w, b = train_robust_linear(run.train_x, run.train_y, run.num_classes, eps=eps, norm=norm,
                               epochs=cfg.linear_epochs, seed=run.seed)
    out = {"eps": eps, "norm": norm, "robust_linear": certified_fraction(w, b, run.test_x, eps, norm,
                                                                         labels=run.test_y)}
    for name in ("D", "D_rand", "D_det"):
        if name == "D":  # the probe on the real labels: what the robust features give at most
            images, labels = run.train_x, run.train_y
        else:
            images, labels, _ = run.load_constructed(name)
        out[f"leakage_{name}"] = linear_leakage(w, images, labels, run.test_x, run.test_y, run.num_classes,
                                                epochs=cfg.linear_epochs, seed=run.seed)
    for name in ("D_rand", "D_det", "D_det_unleaked"):
        if "clean" in upstream.get(name, {}):
            out[f"{name}_accuracy"] = upstream[name]["clean"]
    return out


# ---------------------------------------------------------------- Wallace


def _wallace(run, upstream: dict) -> dict:
    p, cfg = run.preset, run.preset.followups
    teacher_config = dataclasses.replace(p.train, epochs=min(cfg.teacher_epochs, p.train.epochs),
                                         seed=p.train.seed + SEED_STRIDE * 100)
    teacher, _ = run.fit("followup_wallace_teacher", run.train_x, run.train_y, teacher_config)
    images, labels, mask = incorrectly_labelled_subset(teacher, run.train_x, run.train_y)
    out = {"teacher_epochs": teacher_config.epochs,
           "teacher_train_accuracy": clean_accuracy(teacher, run.train_x, run.train_y),
           "teacher_test_accuracy": clean_accuracy(teacher, run.test_x, run.test_y),
           "kept_images": int(mask.sum()), "train_images": int(mask.numel())}
    if out["kept_images"] < run.num_classes:
        return {**out, "skipped": "the teacher got fewer training images wrong than there are classes"}
    student, _ = run.fit("followup_wallace_student", images, labels, p.constructed_train["D_det"])
    out["student_test_accuracy"] = clean_accuracy(student, run.test_x, run.test_y)
    out["student_agrees_with_teacher"] = float((predict(student, run.test_x) == predict(teacher, run.test_x))
                                               .float().mean())
    return out


# ---------------------------------------------------------------- declarations


def _on(run) -> bool:
    return run.with_followups


STAGES = (
    Stage("followup_ensemble", _ensemble, reads=("data", "model", "train", "precision", "followups.ensemble"),
          when=_on, validate=_check_ensemble),
    Stage("construct_D_det_bugs", _construct_bugs, needs=("D", "D_adv", "followup_ensemble"), when=_on,
          reads=("data", "relabel", "threat.norm", "precision", "followups.ensemble"),
          validate=lambda run, result: run.check_constructed("D_det_bugs")),
    Stage("followup_nakkiran", _nakkiran,
          needs=("D", "followup_ensemble", "construct_D_det_bugs", "construct_D_det", "D_det"),
          reads=("data", "model", "precision", "followups.ensemble", "relabel.eps", "constructed_train.D_det"),
          into=("followups", "nakkiran"), when=_on,
          validate=lambda run, result: load_model(run.model_path("D_det_bugs"))),
    Stage("followup_squares", _squares, reads=("followups.squares", "evaluation.steps", "evaluation.restarts"),
          into=("followups", "nakkiran", "squares"), when=_on),
    Stage("followup_goh", _goh, reads=("data", "threat", "followups.linear_epochs"),
          needs=("construct_D_rand", "construct_D_det", "D_rand", "D_det", "D_det_unleaked"),
          into=("followups", "goh"), when=_on),
    Stage("followup_wallace", _wallace,
          reads=("data", "model", "train", "precision", "followups.teacher_epochs", "constructed_train.D_det"),
          into=("followups", "wallace"), when=_on),
)
