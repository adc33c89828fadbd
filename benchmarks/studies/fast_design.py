"""The cifar10_fast preset's design choices, validated at reduced scale on real CIFAR-10 on a CPU.

    python benchmarks/studies/fast_design.py --data-root DIR --part whiten    [--width 16 --train 5000 --test 1000]
    python benchmarks/studies/fast_design.py --data-root DIR --part inversion [--images 1000]

`--part whiten`: does airbench's frozen patch-whitening stem survive adversarial training? FastNet with and without
it, trained standard (D) and adversarially (PGD-7 at L2 eps 0.5, steps of eps/5 from the clean image: the paper's
C.3) with the preset's recipe scaled to the CPU (epochs, batch 128); each scored clean, under the APGD cascade at
L2 eps 0.25 and 0.5 on the test images, and the robust models also under AutoAttack standard on `--check` images
(a whitening stem that masked gradients would show as a gap between the two).

`--part inversion`: how many inversion steps does D_R / D_NR need? Through the whitening-off models of `whiten`
(saved in --work), `--images` training images are inverted from other training images (paper C.4: normalised steps
of 0.1) for 100, 300 and 1,000 steps (one run, snapshots along the way), recording the relative representation
error; then a fresh FastNet is trained on each D_R / D_NR snapshot and scored clean and robust on the test set.

Data: DIR holds cifar-10-batches-py (for the project's JPEG copy: `python ../shared/data/cifar10_jpeg.py DIR`; name
that caveat beside every number). Prints a table and records it (benchmarks/records/fast_design.md, the numbers in
fast_design.jsonl; `--no-record` to print only).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from advfeatures.attacks import invert_representation
from advfeatures.autoattack import autoattack_accuracy, autoattack_available
from advfeatures.construct import choose_start_indices
from advfeatures.data import as_tensors, load_dataset
from advfeatures.evaluation import clean_accuracy, robust_accuracy
from advfeatures.models import load_model, save_model
from advfeatures.training import AdversarialConfig, ModelSpec, TrainConfig, channel_stats, train_new_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import add_record_option, record, timed_once  # noqa: E402


def recipe(epochs: int, **changes) -> TrainConfig:
    base = dict(epochs=epochs, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="onecycle",
                crop_padding=4, flip=True, amp=True, channels_last=True)
    return TrainConfig(**{**base, **changes})


def score(model, x, y, args, check: bool) -> dict:
    out = {"clean": clean_accuracy(model, x, y)}
    for eps in (0.25, 0.5):
        out[f"robust_{eps:g}"] = robust_accuracy(model, x, y, "l2", eps, batch_size=256)
    if check and autoattack_available():
        n = args.check
        out["check_images"] = n
        out["autoattack_0.25"] = autoattack_accuracy(model, x[:n], y[:n], "l2", 0.25)
        out["ours_0.25_same_images"] = robust_accuracy(model, x[:n], y[:n], "l2", 0.25, batch_size=256)
    return out


def part_whiten(args, data, work: Path) -> tuple[list[str], list[dict]]:
    (xtr, ytr), (xte, yte), mean, std = data
    rows = ["| stem | trained | clean | robust 0.25 | robust 0.5 | AutoAttack 0.25 (ours, same images) | train s |",
            "|---|---|---|---|---|---|---|"]
    numbers = []
    for whiten in (False, True):
        spec = ModelSpec("fastnet", {"width": args.width, "whiten": whiten})
        for kind, config in (("standard", recipe(args.epochs)),
                             ("PGD-7 eps 0.5", recipe(args.epochs, adversarial=AdversarialConfig("l2", 0.5, 7)))):
            (model, _), seconds = timed_once(
                lambda spec=spec, config=config: train_new_model(spec, xtr, ytr, 10, config, mean=mean, std=std,
                                                                 progress=False))
            name = f"{'whiten' if whiten else 'conv'}_{'adv' if 'PGD' in kind else 'std'}"
            save_model(model, work / f"{name}.safetensors")
            s = score(model, xte, yte, args, check="PGD" in kind)
            (work / f"{name}.json").write_text(json.dumps({**s, "seconds": seconds}))
            numbers.append({"whiten": whiten, "trained": kind, **s, "train_seconds": seconds})
            check = (f"{100 * s['autoattack_0.25']:.1f} ({100 * s['ours_0.25_same_images']:.1f}) on {s['check_images']}"
                     if "autoattack_0.25" in s else "-")
            rows.append(f"| {'whitening (frozen 2x2)' if whiten else '3x3 conv + BN'} | {kind} | "
                        f"{100 * s['clean']:.1f} | {100 * s['robust_0.25']:.1f} | {100 * s['robust_0.5']:.1f} | "
                        f"{check} | {seconds:.0f} |")
            print(rows[-1], flush=True)
    return rows, numbers


def part_inversion(args, data, work: Path) -> tuple[list[str], list[dict]]:
    (xtr, ytr), (xte, yte), mean, std = data
    n = args.images
    x, y = xtr[:n], ytr[:n]
    start = x[choose_start_indices(n, 0)]
    rows = ["| set | steps | relative representation error (median) | clean | robust 0.25 | robust 0.5 |",
            "|---|---|---|---|---|---|"]
    numbers = []
    for name, source in (("D_R", "conv_adv"), ("D_NR", "conv_std")):
        model = load_model(work / f"{source}.safetensors")
        with torch.no_grad():
            target = model.representation(x)
        z, done = start, 0
        for steps in (100, 300, 1000):
            z = invert_representation(model, x, z, steps=steps - done, step_size=0.1, batch_size=256, amp=True)
            done = steps
            with torch.no_grad():
                err = ((model.representation(z) - target).norm(dim=1) / target.norm(dim=1)).median()
            trained, _ = train_new_model(ModelSpec("fastnet", {"width": args.width}), z, y, 10, recipe(args.epochs),
                                         mean=mean, std=std, progress=False)
            s = {"clean": clean_accuracy(trained, xte, yte),
                 **{f"robust_{e:g}": robust_accuracy(trained, xte, yte, "l2", e, batch_size=256) for e in (0.25, 0.5)}}
            numbers.append({"set": name, "steps": steps, "relative_error_median": float(err), **s})
            rows.append(f"| {name} | {steps} | {float(err):.3f} | {100 * s['clean']:.1f} | "
                        f"{100 * s['robust_0.25']:.1f} | {100 * s['robust_0.5']:.1f} |")
            print(rows[-1], flush=True)
    return rows, numbers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--part", choices=["whiten", "inversion"], required=True)
    ap.add_argument("--work", default="runs/fast_design", help="models of --part whiten, read by --part inversion")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--train", type=int, default=5000)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--check", type=int, default=200, help="test images for the AutoAttack check")
    ap.add_argument("--images", type=int, default=1000, help="images inverted by --part inversion")
    add_record_option(ap)
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    train = as_tensors(load_dataset("cifar10", "train", args.data_root)).subset(args.train)
    test = as_tensors(load_dataset("cifar10", "test", args.data_root)).subset(args.test)
    mean, std = channel_stats(train.images)
    data = (train.images, train.labels), (test.images, test.labels), mean, std
    part = part_whiten if args.part == "whiten" else part_inversion
    (rows, numbers), seconds = timed_once(lambda: part(args, data, work))
    head = (f"FastNet width {args.width}, {args.epochs} epochs, first {args.train} training / {args.test} test images "
            f"of the JPEG quality-75 copy of CIFAR-10 (not bit-identical to the original); bf16 training, float32 "
            f"evaluation (the APGD cascade at AutoAttack's settings); seed 0; {seconds:.0f} s")
    text = head + "\n\n" + "\n".join(rows)
    print("\n" + text)
    record(__file__, text, {"part": args.part, "width": args.width, "epochs": args.epochs, "train": args.train,
                            "test": args.test, "rows": numbers, "seconds": seconds},
           title=f"cifar10_fast design study: {args.part} (CPU, reduced scale)", enabled=not args.no_record)


if __name__ == "__main__":
    main()
