"""Digits D_R vs D_NR with the paper's kind of network: global average pooling before the head.

    python benchmarks/studies/digits_pooling.py [--pool gap|flatten] [--width 32] [--seeds 0 1 2] [--no-record]

The digits preset's small CNN flattens, so its representation keeps every pixel's layout and inversion returns
the original image (D_R gives no robustness on digits). This runs the preset's D, D_adv, D_R and D_NR stages
(its training configs, inversion and evaluation) with `small_cnn` at the chosen pooling, and prints a table with a
row per seed and model: clean and robust accuracy (the APGD cascade at L2 eps 1.0, all 360 test images), and the
inversions' relative representation error; records it (benchmarks/records/digits_pooling.md, the rows in
digits_pooling.jsonl; `--no-record` to print only).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

import advfeatures as af
from advfeatures.construct import build_non_robust_dataset, build_robust_dataset
from advfeatures.evaluation import clean_accuracy, robust_accuracy
from advfeatures.presets import get_preset
from advfeatures.training import ModelSpec, channel_stats, train_new_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import add_record_option, markdown_table, record, timed_once  # noqa: E402


def run(pool: str, seed: int, width: int = 32) -> dict:
    p = get_preset("digits")
    train, test = af.load_dataset("digits", "train"), af.load_dataset("digits", "test")
    x, y, tx, ty = train.images, train.labels, test.images, test.labels
    mean, std = channel_stats(x)
    spec = ModelSpec("small_cnn", {"pool": pool, "width": width})
    eps = p.threat.eps

    def fit(images, labels, config):
        config = dataclasses.replace(config, seed=config.seed + 1000 * seed)
        return train_new_model(spec, images, labels, 10, config, mean=mean, std=std, progress=False)[0]

    def scores(model):
        return {"clean": clean_accuracy(model, tx, ty), "robust": robust_accuracy(model, tx, ty, "l2", eps, seed=seed)}

    standard, robust = fit(x, y, p.train), fit(x, y, p.adversarial_train)
    inv = dict(steps=p.inversion.steps, step_size=p.inversion.step_size, start=p.inversion.start, seed=seed,
               progress=False)
    d_r, d_nr = build_robust_dataset(robust, x, y, **inv), build_non_robust_dataset(standard, x, y, **inv)
    row = {"pool": pool, "width": width, "representation_dim": None, "seed": seed,
           "D": scores(standard), "D_adv": scores(robust),
           "D_R": scores(fit(d_r.images, d_r.labels, p.constructed_train["D_R"])),
           "D_NR": scores(fit(d_nr.images, d_nr.labels, p.constructed_train["D_NR"]))}
    for name, ds, model in (("D_R", d_r, robust), ("D_NR", d_nr, standard)):
        model.eval()
        with torch.no_grad():
            g, gz = model.representation(x), model.representation(ds.images)
        row[name]["inversion_relative_error"] = float(((gz - g).norm(dim=1) / g.norm(dim=1)).mean())
        row[name]["mean_l2_to_original"] = float((ds.images - x).flatten(1).norm(dim=1).mean())
    row["representation_dim"] = int(standard.representation(x[:1]).shape[1])
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", choices=("gap", "flatten"), default="gap")
    ap.add_argument("--width", type=int, default=32, help="small_cnn width (representation: 4 x width with gap)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    add_record_option(ap)
    args = ap.parse_args()
    rows, cells = [], []
    for seed in args.seeds:
        row, seconds = timed_once(lambda seed=seed: run(args.pool, seed, args.width))
        row["seconds"] = round(seconds, 1)
        rows.append(row)
        print(f"seed {seed}: {seconds:.0f} s", file=sys.stderr, flush=True)
        for name in ("D", "D_adv", "D_R", "D_NR"):
            r = row[name]
            err = f"{r['inversion_relative_error']:.3f}" if "inversion_relative_error" in r else "-"
            l2 = f"{r['mean_l2_to_original']:.2f}" if "mean_l2_to_original" in r else "-"
            cells.append([seed, name, f"{100 * r['clean']:.1f}", f"{100 * r['robust']:.1f}", err, l2])
    text = (f"small_cnn pool {args.pool}, width {args.width} (representation: {rows[0]['representation_dim']} "
            f"dimensions); the digits preset's stages; APGD cascade at L2 eps 1.0 on the 360 test images.\n\n"
            + markdown_table(["seed", "model", "clean %", "robust %", "inversion relative error",
                              "mean L2 to the original"], cells))
    print(text)
    record(__file__, text, rows, title=f"Digits D_R / D_NR with pool {args.pool}, width {args.width}",
           enabled=not args.no_record)


if __name__ == "__main__":
    main()
