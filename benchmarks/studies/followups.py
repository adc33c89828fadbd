"""Record the Distill follow-ups (experiments/followups/) of a finished `reproduce` run.

    advfeatures reproduce --seeds 3 --out runs/followups             # synthetic + digits, follow-ups included
    python benchmarks/studies/followups.py runs/followups [--note "..."] [--no-record]

Renders, for every preset of the run, the report's follow-up tables (means ± std over seeds, the responders'
CIFAR-10 figures beside ours) and the follow-up claims with their verdicts, plus the seconds each follow-up stage
took (seed 0), prints them and records them (benchmarks/records/followups.md, each preset's "followups" and stage
seconds in followups.jsonl; `--no-record` to print only). It reads results.json only: nothing is re-run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from advfeatures.experiments.followups.section import tables

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import add_record_option, markdown_table, record  # noqa: E402


def render(run: Path, only: list[str] | None = None) -> tuple[str, dict]:
    """The follow-up tables of every preset of `run` (or of `only`), and their numbers."""
    manifest = json.loads((run / "run.json").read_text())
    lines, data = [], {}
    for preset in only or manifest["presets"]:
        path = run / preset / "results.json"
        if not path.is_file():
            continue
        r = json.loads(path.read_text())
        if "followups" not in r:
            lines += [f"### {preset}", "", "no follow-ups in this run (--no-followups)", ""]
            continue
        stages = {k: v for k, v in r["seconds"]["stages"].items() if k.startswith("followup") or k.endswith("bugs")}
        data[preset] = {"seeds": r["seeds"], "threat_model": r["threat_model"], "followups": r["followups"],
                        "seconds": stages}
        lines += [f"### {preset} ({len(r['seeds'])} seed(s); threat model {r['threat_model']['norm'].upper()} eps "
                  f"{r['threat_model']['eps']:g})", ""]
        for table in tables(r):
            lines += [f"#### {table.title}", "", markdown_table(table.header, table.rows), ""]
        lines += ["Seconds per follow-up stage (seed 0): " + ", ".join(f"{k} {v:.0f}" for k, v in stages.items()), ""]
    return "\n".join(lines), data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="the --out folder of a finished reproduce run")
    ap.add_argument("--preset", action="append", help="only this preset of the run (repeatable)")
    ap.add_argument("--note", default="", help="a sentence recorded above the tables (data caveats, command)")
    add_record_option(ap)
    args = ap.parse_args()
    if not (args.run / "run.json").is_file():
        print(f"error: {args.run} is not a reproduce run folder (no run.json)", file=sys.stderr)
        sys.exit(2)
    body, data = render(args.run, args.preset)
    text = (args.note + "\n\n" if args.note else "") + body
    print(text)
    record(__file__, text, {"run": str(args.run), "note": args.note, "presets": data},
           title=f"Distill follow-ups: {args.run.name}", enabled=not args.no_record)


if __name__ == "__main__":
    main()
