"""How many targeted steps do D_rand / D_det / D_det_bugs need? The relabelled sets built with fewer, larger steps.

    python benchmarks/studies/relabel_steps.py RUN [--preset synthetic] [--images 1000]
        [--configs 100:0.1 50:0.2 34:0.3] [--data-root DIR] [--threads 1] [--no-record]

RUN is a finished `advfeatures reproduce` folder: its standard model D of seed 0 is the relabelling model. For the
first `--images` training images, D_det (y+1), D_rand (the pipeline's seed-0 targets) and Nakkiran's D_det_bugs (D_det
while the follow-ups' ensemble models of RUN keep reading y) are built at the preset's eps with each STEPS:STEP_SIZE,
one thread. Reported per set: how often the standard model reads the target (attack success), its mean
cross-entropy to the target, the mean perturbation, the mean distance to the first configuration's images, for
D_det_bugs how often the ensemble's majority still reads the original class (the constraint that makes the set), and
on `synthetic` the planted-feature audit (non-robust evidence of the new label, robust evidence of the original class:
what the sets are made of). If these match, the cheaper configuration builds the same dataset.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from advfeatures import load_model
from advfeatures.construct import build_relabelled_dataset, keep_diagnostics
from advfeatures.pipeline import Overrides, RunOptions, apply_overrides, load_preset_data
from advfeatures.presets import get_preset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import add_record_option, markdown_table, record, timed_once  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a finished reproduce folder")
    ap.add_argument("--preset", default="synthetic")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--configs", nargs="+", default=["100:0.1", "50:0.2", "34:0.3"], help="STEPS:STEP_SIZE")
    ap.add_argument("--data-root", help="the folder the run's data came from (CIFAR-10 presets)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the timings are per this count)")
    add_record_option(ap)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    configs = [(int(c.split(":")[0]), float(c.split(":")[1])) for c in args.configs]
    preset = apply_overrides(get_preset(args.preset), Overrides())
    data = load_preset_data(preset, RunOptions(out=args.run, presets=(args.preset,), progress=False,
                                                        data_root=args.data_root))
    train = data["train"]
    x, y = train.images[: args.images], train.labels[: args.images]
    models = args.run / args.preset / "models"
    model = load_model(models / "D.safetensors").eval()
    ensemble = sorted(models.glob("followup_ensemble_*.safetensors"))[:-1]  # the last one is the fresh model
    keep = [load_model(f).eval() for f in ensemble]
    features = getattr(train, "features", None)
    relabel = preset.relabel
    rows, numbers = [], []
    sets = [("D_det", "det", ()), ("D_rand", "rand", ())] + ([("D_det_bugs", "det", keep)] if keep else [])
    for name, mode, keep_models in sets:
        first = None
        for steps, step_size in configs:
            built, seconds = timed_once(lambda s=steps, a=step_size, m=mode, k=keep_models: build_relabelled_dataset(
                model, x, y, mode=m, num_classes=data["num_classes"], norm=preset.threat.norm, eps=relabel.eps, steps=s,
                step_size=a, seed=0, progress=False, batch_size=relabel.batch_size, keep_models=k))
            with torch.no_grad():
                logits = model(built.images)
            row = {"set": name, "steps": steps, "step_size": step_size, "seconds": round(seconds, 1),
                   "success": float((logits.argmax(1) == built.labels).float().mean()),
                   "target_ce": float(torch.nn.functional.cross_entropy(logits, built.labels)),
                   "perturbation": float((built.images - x).flatten(1).norm(dim=1).mean()),
                   "distance_to_first": 0.0 if first is None else
                   float((built.images - first).flatten(1).norm(dim=1).mean())}
            first = built.images if first is None else first
            if keep_models:
                row["ensemble_majority_reads_original"] = keep_diagnostics(keep_models, built)[
                    "keep_majority_reads_original"]
            if features is not None:
                row["audit"] = features.audit(built.images, built.labels, y)
            numbers.append(row)
            audit = row.get("audit", {})
            rows.append([row["set"], f"{steps} x {step_size}", f"{row['seconds']:.1f}", f"{100 * row['success']:.1f}",
                         f"{row['target_ce']:.4f}", f"{row['perturbation']:.3f}", f"{row['distance_to_first']:.3f}",
                         f"{100 * row['ensemble_majority_reads_original']:.1f}" if keep_models else "-",
                         f"{audit['nonrobust_of_label']:.3f}" if audit else "-",
                         f"{audit['robust_of_original']:.3f}" if audit else "-"])
    header = ["set", "steps x size", f"s ({args.threads} thread(s))", "target reached %", "CE to target",
              "mean perturbation",
              "distance to the first's images", "ensemble majority reads original %",
              "non-robust evidence of new label", "robust evidence of original"]
    text = (f"Relabelling of the first {args.images} training images of {args.preset} through the standard model of "
            f"{args.run} (seed 0), L2 eps {relabel.eps}:\n\n" + markdown_table(header, rows))
    print(text)
    record(__file__, text, numbers, title=f"Relabelling steps ({args.preset})", enabled=not args.no_record)


if __name__ == "__main__":
    main()
