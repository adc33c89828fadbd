"""One point of the cifar10_cpu design study: chosen stages of the pipeline on real CIFAR-10 with a changed preset.

    python benchmarks/studies/cifar_tier_stages.py NAME '{"limit_train": 5000, "model": {"width": 24},
        "train": {"epochs": 30}, "relabel": {"steps": 100}, "amp": true}' --data-root DIR
        [--stages D,D_rand,D_det] [--seed 0] [--out runs/tier-sweep] [--no-record]

The changes are applied to the cifar10_cpu preset: top-level Preset fields ("limit_train", "limit_test", "amp",
"channels_last"); "model" (options of its ModelSpec, e.g. width, or "arch"); "train" (TrainConfig fields for every
standard training: D and the constructed sets); "constructed" (TrainConfig fields of the constructed sets only);
"adversarial" (AdversarialConfig fields of D_adv); "adversarial_train" (TrainConfig fields of D_adv); "inversion",
"relabel", "evaluation" and "threat" (fields of those configs).

The stages run through the pipeline's own PresetRun, so each is cached under OUT/NAME/seed-S and an interrupted
point resumes (copy a finished stage's record and files into a new point's folder to reuse it). Every accuracy is
the preset's evaluation (the APGD cascade at L2 0.25 on the test images). Stages: D, D_adv, D_R, D_NR, D_rand,
D_det (each constructed set is built and a model trained on it; D_R needs D_adv, the others D). Prints a table of
the stage results and seconds and records it (benchmarks/records/cifar_tier_stages.md, the results in
cifar_tier_stages.jsonl; `--no-record` to print only). --validation N scores on held-out training images instead.
DIR holds `cifar-10-batches-py/` (for this project's measurements:
`python ../shared/data/cifar10_jpeg.py DIR`, a JPEG quality-75 re-encoding of CIFAR-10; name that caveat beside
any number).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from advfeatures.construct import (
    build_non_robust_dataset,
    build_relabelled_dataset,
    build_robust_dataset,
    inversion_diagnostics,
    relabelled_diagnostics,
)
from advfeatures.data import as_tensors, load_dataset
from advfeatures.data.base import TensorImageDataset
from advfeatures.experiments.context import PresetRun
from advfeatures.models import load_model
from advfeatures.pipeline import RunOptions, load_preset_data
from advfeatures.presets import get_preset
from advfeatures.training import AdversarialConfig, ModelSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import add_record_option, markdown_table, record, timed_once  # noqa: E402

STAGES = ("D", "D_adv", "D_R", "D_NR", "D_rand", "D_det")


def changed_preset(changes: dict):
    p = get_preset("cifar10_cpu")
    changes = dict(changes)
    model = changes.pop("model", {})
    if model:
        arch = model.pop("arch", p.model.arch)
        p.model = ModelSpec(arch, {**p.model.options, **model})
    train = changes.pop("train", {})
    if train:
        p.train = dataclasses.replace(p.train, **train)
        p.constructed_train = {k: dataclasses.replace(v, **train) for k, v in p.constructed_train.items()}
    constructed = changes.pop("constructed", {})
    if constructed:
        p.constructed_train = {k: dataclasses.replace(v, **constructed) for k, v in p.constructed_train.items()}
    adv_train = changes.pop("adversarial_train", {})
    adv = changes.pop("adversarial", {})
    p.adversarial_train = dataclasses.replace(p.adversarial_train, **{**train, **adv_train})
    if adv:
        p.adversarial_train.adversarial = AdversarialConfig(**{**dataclasses.asdict(p.adversarial_train.adversarial),
                                                               **adv})
    for name in ("inversion", "relabel", "evaluation", "threat"):
        if name in changes:
            setattr(p, name, dataclasses.replace(getattr(p, name), **changes.pop(name)))
    return dataclasses.replace(p, **changes)


def run_stages(run: PresetRun, stages: list[str]) -> tuple[dict, dict]:
    """The chosen stages (and the models they need), each cached in the point's folder: (accuracy, construction)."""
    acc, construction = {}, {}
    p, x, y = run.preset, run.train_x, run.train_y

    def model_stage(name: str, images, labels, config) -> dict:  # cached in the point's folder, as a stage
        return run.cache.run(name, lambda: run.train_and_evaluate(name, images, labels, config),
                             validate=lambda result: load_model(run.model_path(name)))

    def constructed(name: str, build, diagnose) -> dict:
        def compute() -> dict:
            ds = build()
            run.save_constructed(name, ds)
            return diagnose(ds)

        return run.cache.run(f"construct_{name}", compute, validate=lambda result: run.check_constructed(name))

    for name in ("D", "D_adv"):
        needed = name in stages or (name == "D" and set(stages) & {"D_NR", "D_rand", "D_det"}) or (
            name == "D_adv" and "D_R" in stages)
        if needed:
            config = p.train if name == "D" else p.adversarial_train
            acc[name] = model_stage(name, x, y, config)
    standard = run.load("D") if "D" in acc else None
    robust = run.load("D_adv") if "D_adv" in acc else None
    common = dict(seed=run.seed, amp=run.amp, progress=False)
    inv = dict(steps=p.inversion.steps, step_size=p.inversion.step_size, start=p.inversion.start, **common)
    rel = dict(num_classes=run.num_classes, norm=p.threat.norm, eps=p.relabel.eps, steps=p.relabel.steps,
               step_size=p.relabel.step_size, **common)
    builders = {
        "D_R": (lambda: build_robust_dataset(robust, x, y, **inv), lambda ds: inversion_diagnostics(robust, x, ds)),
        "D_NR": (lambda: build_non_robust_dataset(standard, x, y, **inv),
                 lambda ds: inversion_diagnostics(standard, x, ds)),
    }
    for mode in ("rand", "det"):
        diagnose = (lambda ds: relabelled_diagnostics(standard, robust, x, ds)) if robust is not None else (
            lambda ds: relabelled_diagnostics(standard, standard, x, ds))
        builders[f"D_{mode}"] = (lambda m=mode: build_relabelled_dataset(standard, x, y, mode=m, **rel), diagnose)
    for name in ("D_R", "D_NR", "D_rand", "D_det"):
        if name in stages:
            construction[name] = constructed(name, *builders[name])
            images, labels, _ = run.load_constructed(name)
            acc[name] = model_stage(name, images, labels, p.constructed_train[name])
    return acc, construction


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name")
    ap.add_argument("changes", type=json.loads)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--stages", default="D,D_rand,D_det")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/tier-sweep"))
    ap.add_argument("--validation", type=int, metavar="N",
                    help="score on N training images the preset leaves unused (those after its first limit_train) "
                         "instead of the test set, so a choice made here does not rest on the test set")
    add_record_option(ap)
    args = ap.parse_args()
    stages = args.stages.split(",")
    if unknown := set(stages) - set(STAGES):
        ap.error(f"unknown stages {sorted(unknown)}; choose from {', '.join(STAGES)}")
    preset = changed_preset(args.changes)
    options = RunOptions(out=args.out, presets=(preset.name,), data_root=args.data_root, progress=False)
    data = load_preset_data(preset, options)
    if args.validation:
        full = as_tensors(load_dataset("cifar10", "train", args.data_root))
        start = preset.limit_train
        if start is None or start + args.validation > len(full):
            ap.error(f"--validation {args.validation}: the training set has no {args.validation} images beyond the "
                     f"preset's first {start}")
        held_out = slice(start, start + args.validation)
        data["test"] = TensorImageDataset(full.images[held_out], full.labels[held_out], full.num_classes)
    folder = args.out / args.name / (f"seed-{args.seed}" + ("-validation" if args.validation else ""))
    run = PresetRun(preset, args.seed, folder, data, options, print)
    (accuracy, construction), total = timed_once(lambda: run_stages(run, stages))
    out = {"name": args.name, "seed": args.seed, "changes": args.changes, "scored_on": (
        f"training images {preset.limit_train}..{preset.limit_train + args.validation - 1}" if args.validation
        else "test set"), "accuracy": accuracy, "construction": construction,
        "seconds": {"total": round(total, 1), **{k: round(v, 1) for k, v in run.cache.seconds.items()}}}
    rows = [[name, f"{100 * r['clean']:.1f}", f"{100 * r['robust']:.1f}", f"{out['seconds'].get(name, 0):.0f}",
             f"`{json.dumps(construction[name])}`" if name in construction else "-"] for name, r in accuracy.items()]
    text = (f"Point {args.name}, seed {args.seed}, changes `{json.dumps(args.changes)}` on cifar10_cpu; scored on the "
            f"{out['scored_on']} (robust: the preset's evaluation at its threat model); {total:.0f} s in all "
            "(cached stages load in no time).\n\n"
            + markdown_table(["stage", "clean %", "robust %", "stage s", "construction"], rows))
    print(text)
    record(__file__, text, out, title=f"cifar10_cpu design point {args.name} (seed {args.seed})",
           enabled=not args.no_record)


if __name__ == "__main__":
    main()
