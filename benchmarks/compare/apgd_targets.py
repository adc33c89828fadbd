"""How many APGD-T target classes our evaluation needs to stay within a point of AutoAttack, per preset.

Reads a finished `advfeatures reproduce --autoattack` run (AutoAttack standard on every test image of each seed's
D, D_adv, D_R and D_NR, recorded in its results.json) and evaluates the same models on the same full test set with
our cascade at each requested number of APGD-T targets (APGD-CE as the preset has it), one thread, timing each:

    python benchmarks/compare/apgd_targets.py RUN --preset synthetic [--targets 1 3 9] [--no-record]

A preset may use fewer targets than AutoAttack's 9 only where every model stays within 1 point of AutoAttack
(issue 24's rule); the per-run AutoAttack check (100 images) keeps watching each new run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from advfeatures import load_model
from advfeatures.data import as_tensors, load_dataset
from advfeatures.evaluation import robust_examples
from advfeatures.presets import get_preset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import add_record_option, markdown_table, record, timed_once  # noqa: E402

MODELS = ("D", "D_adv", "D_R", "D_NR")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a reproduce run directory made with --autoattack")
    ap.add_argument("--preset", required=True)
    ap.add_argument("--targets", type=int, nargs="+", default=[1, 3, 9])
    add_record_option(ap)
    args = ap.parse_args()
    torch.set_num_threads(1)
    p = get_preset(args.preset)
    results = json.loads((args.run / args.preset / "results.json").read_text())
    test = as_tensors(load_dataset(p.dataset, "test"))
    x, y = test.images, test.labels
    norm, eps, ev = p.threat.norm, p.threat.eps, p.evaluation
    rows = []
    for seed, seed_results in zip(results["seeds"], results["per_seed"], strict=True):
        folder = args.run / args.preset / ("" if seed == 0 else f"seeds/{seed}")
        for name in MODELS:
            entry = seed_results["accuracy"][name]
            if "autoattack" not in entry:
                raise SystemExit(f"{args.run}: no AutoAttack number for {name} (run reproduce with --autoattack)")
            model = load_model(folder / "models" / f"{name}.safetensors").eval()
            row = {"seed": seed, "model": name, "autoattack": entry["autoattack"]}
            for t in args.targets:
                robust, row[f"t{t}_seconds"] = timed_once(lambda m=model, t=t, s=seed: robust_examples(
                    m, x, y, norm, eps, steps=ev.steps, restarts=ev.restarts, targets=t, seed=s,
                    batch_size=ev.batch_size))
                row[f"t{t}"] = float(robust.float().mean())
            rows.append(row)
            print(json.dumps(row), flush=True)
    header = ["seed", "model", "AutoAttack %", *(f"ours, {t} targets: % (s)" for t in args.targets)]
    table = [[r["seed"], r["model"], f"{100 * r['autoattack']:.1f}",
              *(f"{100 * r[f't{t}']:.1f} ({r[f't{t}_seconds']:.0f})" for t in args.targets)] for r in rows]
    worst = {t: max(100 * (r[f"t{t}"] - r["autoattack"]) for r in rows) for t in args.targets}
    text = (f"Models of `{args.run}`, preset {args.preset}, {norm.upper()} eps {eps:g}, {len(y)} test images, one "
            "thread. Largest 'ours above AutoAttack' (points): "
            + ", ".join(f"{t} targets {w:+.1f}" for t, w in worst.items()) + ".\n\n" + markdown_table(header, table))
    print("\n" + text)
    record(__file__, text, {"preset": args.preset, "run": str(args.run), "threat": [norm, eps], "rows": rows,
                            "worst_gap_points": worst}, title=f"APGD-T targets vs AutoAttack: {args.preset}",
           enabled=not args.no_record)


if __name__ == "__main__":
    main()
