"""Time the offline default (`advfeatures reproduce`, presets synthetic + digits) stage by stage.

    python benchmarks/speed/offline_default.py [--seeds 3] [--out runs/bench] [--no-record]

Prints a table and records it (benchmarks/records/offline_default.md, the numbers in offline_default.jsonl;
`--no-record` to print only). Use a fresh --out: a resumed run measures the cache, not the work.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

from advfeatures.pipeline import RunOptions, reproduce

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import add_record_option, record, timed_once  # noqa: E402


def _cell(entry: dict, key: str) -> str:
    """Mean in percent, with the population std over seeds when there are several."""
    values = entry[f"{key}_per_seed"]
    spread = f" ± {100 * statistics.pstdev(values):.1f}" if len(values) > 1 else ""
    return f"{100 * entry[key]:.1f}{spread}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-offline"))
    ap.add_argument("--keep", action="store_true", help="keep an existing --out (resume) instead of deleting it")
    add_record_option(ap)
    args = ap.parse_args()
    if args.out.exists() and not args.keep:
        shutil.rmtree(args.out)
    results, wall = timed_once(lambda: reproduce(RunOptions(out=args.out, seeds=args.seeds, progress=False)))
    lines = [f"`advfeatures reproduce --seeds {args.seeds}`: {wall:.0f} s wall in total.", ""]
    for name, r in results.items():
        eps = r["threat_model"]["eps"]
        lines += [f"### {name}", "", f"| set | clean % | robust % (eps {eps:g}) |", "|---|---|---|"]
        for k, e in r["accuracy"].items():
            if "clean" not in e:
                continue
            clean, robust = _cell(e, "clean"), _cell(e, "robust")
            lines.append(f"| {k} | {clean} | {robust} |")
        stages = r["seconds"]["stages"]
        lines += ["", "seconds per stage (seed 0): " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()),
                  f"preset total {r['seconds']['total']:.0f} s", ""]
    text = "\n".join(lines)
    print(text)
    data = {"seeds": args.seeds, "wall_seconds": wall,
            "presets": {name: {"threat_model": r["threat_model"], "accuracy": r["accuracy"], "seconds": r["seconds"]}
                        for name, r in results.items()}}
    record(__file__, text, data, title=f"Offline default, {args.seeds} seed(s)", enabled=not args.no_record)


if __name__ == "__main__":
    main()
