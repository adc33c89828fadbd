"""One point of the digits adversarial-training sweep: train with the given changes, evaluate at L2 eps 1.0.

    python benchmarks/studies/digits_adversarial_training.py NAME '{"adv": {"random_start": true}}' [SEED]
        [--validation] [--autoattack] [--no-record]

Changes are TrainConfig fields, plus "adv" (AdversarialConfig fields) and "model" (small_cnn options), on top of
the previous digits default (60 epochs, batch 128, lr 0.1 one-cycle, 7 PGD steps of eps/5 from the clean image).
The evaluation is the digits preset's (the APGD cascade: APGD-CE, then APGD-T over 9 target classes, 100 steps each;
rounds before the fourth used fixed-step PGD, 100 steps x 5 runs, which read ~20 points too high), plus AutoAttack
standard with --autoattack. Prints a one-row table and records it (benchmarks/records/digits_adversarial_training.md,
the row in digits_adversarial_training.jsonl; `--no-record` to print only).
With --validation, training uses 80% of the digits training set and the evaluation runs on the other 20% (a fixed
stratified split), so settings can be chosen without looking at the test set.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

import advfeatures as af
from advfeatures.autoattack import autoattack_accuracy
from advfeatures.evaluation import clean_accuracy, robust_accuracy
from advfeatures.training import AdversarialConfig, ModelSpec, TrainConfig, channel_stats, train_new_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import add_record_option, markdown_table, record, timed_once  # noqa: E402


def validation_split(labels: torch.Tensor, share: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (fit, held out) of a fixed stratified split of the training set."""
    g = torch.Generator().manual_seed(12345)
    held = []
    for c in labels.unique():
        members = (labels == c).nonzero().flatten()
        members = members[torch.randperm(members.numel(), generator=g)]
        held.append(members[: round(share * members.numel())])
    held_out = torch.cat(held).sort().values
    keep = torch.ones(labels.numel(), dtype=torch.bool)
    keep[held_out] = False
    return keep.nonzero().flatten(), held_out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name")
    ap.add_argument("changes", help="JSON object of changes")
    ap.add_argument("seed", type=int, nargs="?", default=0)
    ap.add_argument("--validation", action="store_true")
    ap.add_argument("--autoattack", action="store_true")
    add_record_option(ap)
    opts = ap.parse_args()
    validation, name, changes, seed = opts.validation, opts.name, json.loads(opts.changes), opts.seed
    train, test = af.load_dataset("digits", "train"), af.load_dataset("digits", "test")
    train_x, train_y, test_x, test_y = train.images, train.labels, test.images, test.labels
    if validation:
        fit, held_out = validation_split(train_y)
        train_x, train_y, test_x, test_y = train_x[fit], train_y[fit], train_x[held_out], train_y[held_out]
    mean, std = channel_stats(train_x)
    adversarial = {"norm": "l2", "eps": 1.0, "steps": 7, **changes.pop("adv", {})}
    model_options = changes.pop("model", {})
    config = {"epochs": 60, "batch_size": 128, "lr": 0.1, "schedule": "onecycle", "weight_decay": 5e-4,
              "crop_padding": 0, "seed": seed, **changes}
    (model, _), seconds = timed_once(lambda: train_new_model(
        ModelSpec("small_cnn", model_options), train_x, train_y, 10,
        TrainConfig(**config, adversarial=AdversarialConfig(**adversarial)), mean=mean, std=std, progress=False,
    ))
    clean = clean_accuracy(model, test_x, test_y)
    robust = robust_accuracy(model, test_x, test_y, "l2", 1.0)
    row = {"name": name, "seed": seed, "clean": clean, "robust": robust, "train_s": round(seconds, 1),
           "cfg": opts.changes, "evaluated_on": "validation" if validation else "test",
           "attack": "APGD-CE + APGD-T x9, 100 steps"}
    if opts.autoattack:
        row["autoattack"] = autoattack_accuracy(model, test_x, test_y, "l2", 1.0)
    aa = f"{100 * row['autoattack']:.1f}" if "autoattack" in row else "-"
    text = markdown_table(
        ["point", "seed", "change", "evaluated on", "clean %", "robust % (APGD cascade)", "AutoAttack %", "train s"],
        [[name, seed, f"`{opts.changes}`", row["evaluated_on"], f"{100 * clean:.1f}", f"{100 * robust:.1f}", aa,
          f"{seconds:.0f}"]])
    print(text)
    record(__file__, text, row, title=f"Digits adversarial training point {name} (seed {seed})",
           enabled=not opts.no_record)


if __name__ == "__main__":
    main()
