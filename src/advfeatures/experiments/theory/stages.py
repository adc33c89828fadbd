"""The theory stage: Section 4's Gaussian model (the library: theory/), once per run folder, in DIR/theory.

It reads no preset setting (the experiments' parameters are the paper's, fixed in theory/run.py), so its key is
constant and it runs once per run folder; its record is DIR/theory/stages/theory.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from ...distributed import ProcessGroup
from ...runfolder import StageCache, require_files


def run_theory_stage(out: Path, log, group: ProcessGroup | None = None) -> dict:
    from ...theory import run_theory

    cache = StageCache(out / "theory", log, group)
    return cache.run("theory", lambda: json.loads(json.dumps(run_theory(out / "theory"), default=float)),
                     validate=lambda result: require_files(out / "theory", ("theory_figure4.png",)), main_only=True)
