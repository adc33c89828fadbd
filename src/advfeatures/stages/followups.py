"""followups: the Distill discussion's experiments (2019, "A Discussion of 'Adversarial Examples Are Not Bugs, They
Are Features'"), run beside the paper's on the same data and models. `reproduce --no-followups` skips them.

* Nakkiran, "Adversarial examples are just bugs, too": D_det_bugs, targeted adversarial examples against the
  standard source model f that an ensemble of K independently trained models f_i must still read as the true
  class (construct.build_relabelled_dataset with keep_models). If adversarial examples were only features, such
  examples could not exist; his do, they transfer little, and a model trained on them does not generalise to
  (X, Y) but predicts Y+1. Plus his "adversarial squares" toy, where a network that fits noisy labels is
  non-robust although a robust linear rule exists (followups.adversarial_squares).
* Goh, "Robust feature leakage": how much of D_rand's / D_det's signal a linear classifier reads through the
  features of a robust linear model (followups.train_robust_linear / linear_leakage), with the fraction of test
  points whose robust-linear prediction is certified; shown beside our D_det_unleaked split.
* Wallace, "Learning from incorrectly labeled data": a weak teacher relabels D; only the images it gets wrong are
  kept, with its wrong labels; a fresh model trained on them still generalises (followups.
  incorrectly_labelled_subset), the control that says D_det-style learning can be distillation.

Each follow-up is its own cached stage (resume, seeds and torchrun as for the paper's stages); results.json holds
them under "followups": {"nakkiran", "goh", "wallace"}.
"""

from __future__ import annotations

import dataclasses

from ..construct import build_relabelled_dataset, keep_diagnostics, relabelled_diagnostics
from ..evaluation import clean_accuracy, predict, robust_accuracy
from ..followups import (
    adversarial_squares,
    certified_fraction,
    incorrectly_labelled_subset,
    linear_leakage,
    linear_rule_robust_accuracy,
    train_robust_linear,
)
from ..io import read_json, write_json_atomic
from ..models import load_model
from ..training import ModelSpec, TrainConfig, train_new_model

SEED_STRIDE = 7919  # other seeds for the ensemble / teacher models: far from every seed the paper's stages use


# which follow-up settings (presets.FollowupsConfig fields) each follow-up stage's result depends on
STAGE_SETTINGS = {
    "followup_ensemble": ("ensemble",), "construct_D_det_bugs": ("ensemble",), "followup_nakkiran": ("ensemble",),
    "followup_squares": ("squares",), "followup_goh": ("linear_epochs",), "followup_wallace": ("teacher_epochs",),
}


def run_followups(run, standard, robust, acc: dict) -> dict:
    """{"nakkiran": {..., "squares": {...}}, "goh": {...}, "wallace": {...}}; `run` is the seed's PresetRun."""
    cfg = run.p.followups
    _forget_other_settings(run)
    ensemble = _ensemble(run, cfg.ensemble + 1)  # K keep models and one fresh model for transfer
    keep, fresh = ensemble[: cfg.ensemble], ensemble[cfg.ensemble]
    construction = _construct_bugs(run, standard, robust, keep)
    nakkiran = run.cache.run("followup_nakkiran", lambda: _nakkiran(run, standard, fresh, construction, acc),
                             validate=lambda: load_model(run.model_path("D_det_bugs")))
    nakkiran["squares"] = run.cache.run("followup_squares", lambda: _squares(run))
    return {
        "nakkiran": nakkiran,
        "goh": run.cache.run("followup_goh", lambda: _goh(run, acc)),
        "wallace": run.cache.run("followup_wallace", lambda: _wallace(run)),
    }


def _forget_other_settings(run) -> None:
    """The run fingerprint leaves the follow-ups' settings out (presets.Preset.fingerprint), so they are checked
    here, stage by stage: a record made under other settings of its own is removed, and that stage runs again."""
    config = dataclasses.asdict(run.p.followups)
    settings = {stage: {k: config[k] for k in keys} for stage, keys in STAGE_SETTINGS.items()}
    marker = run.dir / "stages" / "followups_settings.json"
    recorded = read_json(marker) if marker.exists() else {}
    stale = [stage for stage in STAGE_SETTINGS if recorded.get(stage) != settings[stage]  # other or unknown
             and (run.dir / "stages" / f"{stage}.json").exists()]
    run.group.barrier()
    if run.group.is_main:
        for stage in stale:
            run.log(f"  {stage:<16} settings changed ({settings[stage]}): runs again")
            (run.dir / "stages" / f"{stage}.json").unlink(missing_ok=True)
        if recorded != settings:
            write_json_atomic(marker, settings)
    run.group.barrier()


# ---------------------------------------------------------------- Nakkiran


def _ensemble(run, count: int) -> list:
    """`count` models of the preset's architecture trained on D like D itself, each with another seed."""
    names = [f"followup_ensemble_{i}" for i in range(count)]

    def compute():
        out = {}
        for i, name in enumerate(names):
            config = dataclasses.replace(run.p.train, seed=run.p.train.seed + SEED_STRIDE * (i + 1))
            model, _ = run.fit(name, run.train_x, run.train_y, config)
            out[name] = clean_accuracy(model, run.test_x, run.test_y)
        return {"clean": out, "arch": run.p.model.arch}

    def validate():
        for name in names:
            load_model(run.model_path(name))

    run.cache.run("followup_ensemble", compute, validate=validate)
    return [run.load(name) for name in names]


def _construct_bugs(run, standard, robust, keep: list) -> dict:
    p = run.p
    rel = dict(num_classes=run.num_classes, norm=p.threat.norm, eps=p.relabel.eps, steps=p.relabel.steps,
               step_size=p.relabel.step_size, early_stop=p.relabel.early_stop, seed=run.seed, amp=run.amp,
               progress=run.opts.progress and run.group.is_main, shard=run.group.shard)

    def diagnose(ds):
        return {**ds.diagnostics, **relabelled_diagnostics(standard, robust, run.train_x, ds, p.threat.norm),
                **keep_diagnostics(keep, ds)}

    return run.constructed("D_det_bugs", lambda: build_relabelled_dataset(standard, run.train_x, run.train_y,
                                                                          mode="det", keep_models=keep, **rel),
                           diagnose)


def _nakkiran(run, standard, fresh, construction: dict, acc: dict) -> dict:
    p, shifted = run.p, (run.test_y + 1) % run.num_classes
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


def _squares(run) -> dict:
    """Nakkiran's adversarial squares: a network fit to noisy labels vs the robust linear rule, same radius."""
    sq, ev = run.p.followups.squares, run.p.evaluation
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


def _goh(run, acc: dict) -> dict:
    p, cfg = run.p, run.p.followups
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
        if "clean" in acc.get(name, {}):
            out[f"{name}_accuracy"] = acc[name]["clean"]
    return out


# ---------------------------------------------------------------- Wallace


def _wallace(run) -> dict:
    p, cfg = run.p, run.p.followups
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
