"""Time the offline default (`advfeatures reproduce`, presets synthetic + digits) stage by stage.

    python benchmarks/offline_default.py [--seeds 3] [--out runs/bench]

Prints a table and appends it, with the machine, to benchmarks/RESULTS.md. Use a fresh --out: a resumed run
measures the cache, not the work.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

from _machine import append

from advfeatures.pipeline import RunOptions, reproduce


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-offline"))
    ap.add_argument("--keep", action="store_true", help="keep an existing --out (resume) instead of deleting it")
    args = ap.parse_args()
    if args.out.exists() and not args.keep:
        shutil.rmtree(args.out)
    t0 = time.perf_counter()
    results = reproduce(RunOptions(out=args.out, seeds=args.seeds, progress=False))
    wall = time.perf_counter() - t0
    lines = [f"`advfeatures reproduce --seeds {args.seeds}`: {wall:.0f} s wall in total.", ""]
    for name, r in results.items():
        lines += [f"### {name}", "", "| set | clean % | robust % (eps " + f"{r['threat_model']['eps']:g}) |", "|---|---|---|"]
        for k, e in r["accuracy"].items():
            if "clean" not in e:
                continue
            spread = lambda key: (f" ± {100 * statistics.pstdev(e[key + '_per_seed']):.1f}"  # noqa: E731
                                  if len(e[key + "_per_seed"]) > 1 else "")
            lines.append(f"| {k} | {100 * e['clean']:.1f}{spread('clean')} | {100 * e['robust']:.1f}{spread('robust')} |")
        stages = r["seconds"]["stages"]
        lines += ["", "seconds per stage (seed 0): " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()),
                  f"preset total {r['seconds']['total']:.0f} s", ""]
    text = "\n".join(lines)
    print(text)
    append(f"Offline default, {args.seeds} seed(s)", text)


if __name__ == "__main__":
    main()
