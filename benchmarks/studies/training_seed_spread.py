"""How much of a constructed set's accuracy is its training seed's? And does bf16 move it beyond that?

    python benchmarks/studies/training_seed_spread.py RUN [RUN ...] [--preset synthetic] [--sets D_rand D_det]
        [--draws 6] [--precision run|float32|bf16 ...] [--data-root DIR] [--no-record]

Each RUN is a finished `advfeatures reproduce` folder (any number of seeds). For every seed of RUN and every set in
`--sets`, the set RUN built is trained again with the preset's recipe for it, `--draws` times, under training seeds
recipe seed + 1000 x run seed + k for k = 0 .. draws-1 (k = 0 is the run's own model, so its number must equal the
one in RUN's results.json: the script checks it), and scored on the real test set. Each `--precision` trains the
same sets in that precision ("run": the one RUN recorded), so two precisions on one RUN separate what bf16 training
does from what a bf16-built set does, and two RUNs (one float32, one bf16) compare the whole pipeline's numbers with
draws-times more training seeds than a 3-seed table. Memory format: the one RUN recorded. One thread.

Why: a preset may use bf16 where its 3-seed numbers stay within the float32 seed spread (the speed issue), and a
spread read off three seeds understates a number whose training seed alone moves it by many points.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

import torch

from advfeatures.evaluation import clean_accuracy
from advfeatures.io import load_tensors
from advfeatures.pipeline import Overrides, RunOptions, apply_overrides, load_preset_data
from advfeatures.presets import get_preset
from advfeatures.training import channel_stats, train_new_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import add_record_option, markdown_table, record  # noqa: E402

SEED_STRIDE = 1000  # PresetRun.fit: the training seed is the recipe's seed + 1000 x the run's seed


def seed_folder(run: Path, preset: str, seed: int) -> Path:
    return run / preset if seed == 0 else run / preset / "seeds" / str(seed)


def summary(values: list[float]) -> dict:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"n": len(values), "mean": statistics.mean(values), "std": sd, "sem": sd / len(values) ** 0.5,
            "min": min(values), "max": max(values)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+", help="finished reproduce folders")
    ap.add_argument("--preset", default="synthetic")
    ap.add_argument("--sets", nargs="+", default=["D_rand", "D_det"])
    ap.add_argument("--draws", type=int, default=6, help="training seeds per run seed and set")
    ap.add_argument("--data-root", help="the dataset's folder, for the CIFAR-10 presets")
    ap.add_argument("--precision", nargs="+", default=["run"], choices=["run", "float32", "bf16"])
    add_record_option(ap)
    args = ap.parse_args()
    torch.set_num_threads(1)
    preset = apply_overrides(get_preset(args.preset), Overrides())
    data = load_preset_data(preset, RunOptions(out=args.runs[0], presets=(args.preset,), progress=False,
                                                      data_root=args.data_root))
    test, num_classes = data["test"], data["num_classes"]
    mean, std = channel_stats(data["train"].images)
    rows, numbers = [], []
    for run in args.runs:
        results = json.loads((run / args.preset / "results.json").read_text())
        run_bf16 = results["precision"].startswith("bf16")
        channels_last = results.get("memory_format") == "channels_last"
        for precision in args.precision:
            bf16 = run_bf16 if precision == "run" else precision == "bf16"
            for name in args.sets:
                recipe = preset.constructed_train[name]
                values, per_seed = [], {}
                for seed in results["seeds"]:
                    sets, _ = load_tensors(seed_folder(run, args.preset, seed) / "datasets" / f"{name}.safetensors")
                    for k in range(args.draws):
                        config = dataclasses.replace(recipe, seed=recipe.seed + SEED_STRIDE * seed + k, amp=bf16,
                                                     channels_last=channels_last)
                        model, _ = train_new_model(preset.model, sets["images"], sets["labels"], num_classes, config,
                                                   mean=mean, std=std, progress=False)
                        acc = 100 * clean_accuracy(model.eval(), test.images, test.labels)
                        per_seed.setdefault(seed, []).append(round(acc, 1))
                        values.append(acc)
                    reported = 100 * results["accuracy"][name]["clean_per_seed"][results["seeds"].index(seed)]
                    if bf16 == run_bf16 and abs(per_seed[seed][0] - reported) > 0.05:
                        raise SystemExit(f"{run} seed {seed} {name}: draw 0 gave {per_seed[seed][0]:.1f}, the run "
                                         f"{reported:.1f}; the harness does not train as the pipeline did")
                s = summary(values)
                label = "bf16" if bf16 else "float32"
                numbers.append({"run": str(run), "run_precision": "bf16" if run_bf16 else "float32",
                                "trained_in": label, "set": name, "per_seed": per_seed, **s})
                rows.append([str(run), "bf16" if run_bf16 else "float32", label, name, s["n"],
                             f"{s['mean']:.1f} ± {s['sem']:.1f}", f"{s['std']:.1f}", f"{s['min']:.1f}-{s['max']:.1f}"])
                print(rows[-1], flush=True)
    header = ["run", "run built in", "trained in", "set", "models", "mean ± s.e.", "std", "range"]
    text = (f"Clean test accuracy of models trained on each run's constructed sets ({args.preset}), {args.draws} "
            f"training seeds per run seed, one thread:\n\n" + markdown_table(header, rows))
    print(text)
    record(__file__, text, numbers, title=f"Training-seed spread ({args.preset})", enabled=not args.no_record)


if __name__ == "__main__":
    main()
