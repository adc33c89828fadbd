"""Record the Distill follow-ups (experiments/followups/) of a finished `reproduce` run in benchmarks/RESULTS.md.

    advfeatures reproduce --seeds 3 --out runs/followups             # synthetic + digits, follow-ups included
    python benchmarks/followups.py runs/followups [--note "..."]

Renders, for every preset of the run, the report's follow-up tables (means ± std over seeds, the responders'
CIFAR-10 figures beside ours) and the follow-up claims with their verdicts, plus the seconds each follow-up stage
took (seed 0), and appends them with the machine to RESULTS.md. It reads results.json only: nothing is re-run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _machine import append

from advfeatures.document import markdown_table
from advfeatures.experiments.followups.section import tables


def render(run: Path, only: list[str] | None = None) -> str:
    manifest = json.loads((run / "run.json").read_text())
    lines = []
    for preset in only or manifest["presets"]:
        path = run / preset / "results.json"
        if not path.is_file():
            continue
        r = json.loads(path.read_text())
        if "followups" not in r:
            lines += [f"### {preset}", "", "no follow-ups in this run (--no-followups)", ""]
            continue
        stages = {k: v for k, v in r["seconds"]["stages"].items() if k.startswith("followup") or k.endswith("bugs")}
        lines += [f"### {preset} ({len(r['seeds'])} seed(s); threat model {r['threat_model']['norm'].upper()} eps "
                  f"{r['threat_model']['eps']:g})", ""]
        for table in tables(r):
            lines += [f"#### {table.title}", "", markdown_table(table.header, table.rows)]
        lines += ["Seconds per follow-up stage (seed 0): " + ", ".join(f"{k} {v:.0f}" for k, v in stages.items()), ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="the --out folder of a finished reproduce run")
    ap.add_argument("--preset", action="append", help="only this preset of the run (repeatable)")
    ap.add_argument("--note", default="", help="a sentence recorded above the tables (data caveats, command)")
    ap.add_argument("--no-record", action="store_true", help="print only")
    args = ap.parse_args()
    if not (args.run / "run.json").is_file():
        print(f"error: {args.run} is not a reproduce run folder (no run.json)", file=sys.stderr)
        sys.exit(2)
    text = (args.note + "\n\n" if args.note else "") + render(args.run, args.preset)
    print(text)
    if not args.no_record:
        append(f"Distill follow-ups: {args.run.name}", text)


if __name__ == "__main__":
    main()
