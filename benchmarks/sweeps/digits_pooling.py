"""Digits D_R vs D_NR with the paper's kind of network: global average pooling before the head.

    python benchmarks/sweeps/digits_pooling.py [--pool gap|flatten] [--width 32] [--seeds 0 1 2]

The digits preset's small CNN flattens, so its representation keeps every pixel's layout and inversion returns
the original image (D_R gives no robustness on digits). This runs the preset's D, D_adv, D_R and D_NR stages
(its training configs, inversion and evaluation) with `small_cnn` at the chosen pooling, and prints one JSON line
per seed: clean and robust accuracy (the APGD cascade at L2 eps 1.0, all 360 test images) of each model, and
the inversions' relative representation error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

import advfeatures as af
from advfeatures.construct import build_non_robust_dataset, build_robust_dataset
from advfeatures.evaluation import clean_accuracy, robust_accuracy
from advfeatures.presets import get_preset
from advfeatures.training import ModelSpec, channel_stats, train_new_model


def run(pool: str, seed: int, width: int = 32) -> dict:
    p = get_preset("digits")
    train, test = af.load_dataset("digits", "train"), af.load_dataset("digits", "test")
    x, y, tx, ty = train.images, train.labels, test.images, test.labels
    mean, std = channel_stats(x)
    spec = ModelSpec("small_cnn", {"pool": pool, "width": width})
    eps = p.threat.eps
    t0 = time.time()

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
    row["seconds"] = round(time.time() - t0, 1)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", choices=("gap", "flatten"), default="gap")
    ap.add_argument("--width", type=int, default=32, help="small_cnn width (representation: 4 x width with gap)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    for seed in args.seeds:
        print(json.dumps(run(args.pool, seed, args.width)), flush=True)


if __name__ == "__main__":
    main()
