"""One point of the cifar10_cpu calibration: train one model on real CIFAR-10 on the CPU, report accuracy and time.

    python benchmarks/studies/cifar_cpu_training.py NAME '{"n_train": 5000, "arch": "resnet9", "width": 16,
        "epochs": 15, "adv": {"eps": 0.5, "steps": 7}}' [SEED] --data-root DIR [--test 500] [--no-record]

Changes are TrainConfig fields plus "n_train" (first N training images), "arch", "width" and "adv"
(AdversarialConfig fields: adversarial training). Defaults: resnet9 width 16, 5,000 images, 15 epochs of one-cycle
SGD (lr 0.1, batch 128), crops and flips. Prints a one-row table: clean accuracy and robust accuracy at L2 0.25 and
0.5 (the library's APGD cascade) on the first --test test images, and the training seconds; records it
(benchmarks/records/cifar_cpu_training.md, the row in cifar_cpu_training.jsonl; `--no-record` to print only). DIR holds
`cifar-10-batches-py/` (for this project's measurements: `python ../shared/data/cifar10_jpeg.py DIR`, a JPEG
quality-75 re-encoding of CIFAR-10; name that caveat beside any number).
"""

import argparse
import json
import sys
from pathlib import Path

import advfeatures as af
from advfeatures.evaluation import clean_accuracy, robust_accuracy
from advfeatures.training import AdversarialConfig, ModelSpec, TrainConfig, channel_stats, train_new_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import add_record_option, markdown_table, record, timed_once  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name")
    ap.add_argument("changes", type=json.loads)
    ap.add_argument("seed", type=int, nargs="?", default=0)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--test", type=int, default=500)
    add_record_option(ap)
    args = ap.parse_args()
    changes = dict(args.changes)
    n_train = changes.pop("n_train", 5000)
    arch, width = changes.pop("arch", "resnet9"), changes.pop("width", 16)
    adv = changes.pop("adv", None)
    train = af.load_dataset("cifar10", "train", args.data_root).subset(n_train)
    test = af.load_dataset("cifar10", "test", args.data_root).subset(args.test)
    train_x, train_y = train.images, train.labels
    test_x, test_y = test.images, test.labels
    config = {"epochs": 15, "batch_size": 128, "lr": 0.1, "schedule": "onecycle", "weight_decay": 5e-4,
              "crop_padding": 4, "flip": True, "seed": args.seed, **changes}
    if adv:
        config["adversarial"] = AdversarialConfig(**{"norm": "l2", "eps": 0.5, "steps": 7, **adv})
    mean, std = channel_stats(train_x)
    (model, _), seconds = timed_once(lambda: train_new_model(
        ModelSpec(arch, {"width": width}), train_x, train_y, 10, TrainConfig(**config), mean=mean, std=std,
        progress=False))
    row = {"name": args.name, "seed": args.seed, "n_train": n_train, "arch": f"{arch}:{width}",
           "clean": clean_accuracy(model, test_x, test_y), "train_s": round(seconds, 1),
           "changes": args.changes, "test_images": int(len(test_y))}
    for eps in (0.25, 0.5):
        row[f"robust_{eps}"] = robust_accuracy(model, test_x, test_y, "l2", eps)
    text = markdown_table(
        ["point", "seed", "net", "training images", "changes", "clean %", "robust 0.25 %", "robust 0.5 %", "train s"],
        [[args.name, args.seed, row["arch"], n_train, f"`{json.dumps(args.changes)}`", f"{100 * row['clean']:.1f}",
          f"{100 * row['robust_0.25']:.1f}", f"{100 * row['robust_0.5']:.1f}", f"{seconds:.0f}"]])
    text += f"\n\nScored on the first {row['test_images']} test images."
    print(text)
    record(__file__, text, row, title=f"cifar10_cpu training point {args.name} (seed {args.seed})",
           enabled=not args.no_record)


if __name__ == "__main__":
    main()
