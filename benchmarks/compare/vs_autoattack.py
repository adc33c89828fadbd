"""Our default robust-accuracy evaluation against AutoAttack standard, model by model, with the time of each.

Reads the models of a finished `advfeatures reproduce` run and evaluates each one on the preset's test set, at its
threat model, with:
  * `old`: the fixed-step PGD this project used before (steps x runs from the preset's former settings,
    alternating CE / margin, worst case per example), for the record;
  * `ours`: `advfeatures.robust_accuracy` with the preset's evaluation settings (the APGD cascade);
  * `autoattack`: pyautoattack's standard suite (needs `pip install 'advfeatures[autoattack]'`).

    python benchmarks/compare/vs_autoattack.py runs/default --preset digits [--models D_adv D_R] [--limit N]
        [--no-record]

Prints one line per model as it goes, then a table, and records it (benchmarks/records/vs_autoattack.md, the rows in
vs_autoattack.jsonl; `--no-record` to print only).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from advfeatures import load_model
from advfeatures.attacks import ClassificationObjective, default_step_size, projected_gradient
from advfeatures.autoattack import autoattack_accuracy
from advfeatures.data import as_tensors, load_dataset
from advfeatures.evaluation import clean_accuracy, robust_accuracy
from advfeatures.presets import get_preset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import add_record_option, markdown_table, record, timed_once  # noqa: E402

OLD = {"digits": (100, 5), "synthetic": (50, 3)}  # the presets' fixed-step settings before the APGD cascade


def old_pgd_accuracy(model, x, y, norm, eps, steps, runs) -> float:
    """The former evaluation: run 0 CE from the clean image, then random starts alternating margin / CE."""
    best_x, best = x.clone(), torch.full((x.shape[0],), -float("inf"))
    generator = torch.Generator().manual_seed(0)
    for run in range(runs):
        objective = ClassificationObjective(model, y, loss="margin" if run % 2 else "ce")
        r = projected_gradient(objective, x, norm=norm, eps=eps, steps=steps, step_size=default_step_size(eps, steps),
                               random_start=run > 0, generator=generator)
        better = r.score > best
        best_x[better], best[better] = r.x[better], r.score[better]
    return clean_accuracy(model, best_x, y)


def _cell(row: dict, key: str) -> str:
    """Accuracy % (seconds) of one evaluation, "-" where it did not run."""
    return f"{100 * row[key]:.1f} ({row[key + '_seconds']:.0f} s)" if key in row else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a reproduce run directory")
    ap.add_argument("--preset", required=True)
    ap.add_argument("--models", nargs="+", default=["D", "D_adv", "D_R", "D_NR"])
    ap.add_argument("--limit", type=int, help="first N test images")
    ap.add_argument("--no-old", action="store_true", help="skip the former fixed-step PGD")
    add_record_option(ap)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    p = get_preset(args.preset)
    test = as_tensors(load_dataset(p.dataset, "test"))
    x, y = test.images[: args.limit], test.labels[: args.limit]
    norm, eps, ev = p.threat.norm, p.threat.eps, p.evaluation
    rows = []
    for name in args.models:
        model = load_model(args.run / args.preset / "models" / f"{name}.safetensors")
        row = {"model": name, "images": int(len(y)), "clean": clean_accuracy(model, x, y)}
        if not args.no_old and args.preset in OLD:
            old = OLD[args.preset]
            row["old"], row["old_seconds"] = timed_once(
                lambda m=model, o=old: old_pgd_accuracy(m, x, y, norm, eps, *o))
        row["ours"], row["ours_seconds"] = timed_once(lambda m=model: robust_accuracy(
            m, x, y, norm, eps, steps=ev.steps, restarts=ev.restarts, targets=ev.targets))
        row["autoattack"], row["autoattack_seconds"] = timed_once(
            lambda m=model: autoattack_accuracy(m, x, y, norm, eps))
        row["gap_points"] = 100 * (row["ours"] - row["autoattack"])
        rows.append(row)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)

    header = ["model", "images", "clean %", "old PGD % (s)", "ours % (s)", "AutoAttack % (s)", "ours - AutoAttack"]
    table = [[r["model"], r["images"], f"{100 * r['clean']:.1f}", _cell(r, "old"), _cell(r, "ours"),
              _cell(r, "autoattack"), f"{r['gap_points']:+.1f}"] for r in rows]
    text = (f"Models of `{args.run}`, preset {args.preset}, {norm.upper()} eps {eps:g} (old PGD: the former "
            "fixed-step evaluation; ours: the APGD cascade; AutoAttack: standard).\n\n" + markdown_table(header, table))
    print("\n" + text)
    record(__file__, text, {"preset": args.preset, "run": str(args.run), "threat": [norm, eps], "rows": rows},
           title=f"Our evaluation vs AutoAttack: {args.preset}", enabled=not args.no_record)


if __name__ == "__main__":
    main()
