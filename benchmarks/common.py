"""What every benchmark script shares: timing, the machine line, and the one way results are recorded.

Each script under benchmarks/<folder>/ makes this module importable with one line, so that
`python benchmarks/speed/attack_throughput.py ...` works as it is typed, from the repository root or anywhere:

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
    from common import add_record_option, record, timed  # noqa: E402

Recording, one way: a script prints its table, then `record(__file__, text, data, ...)` appends one entry to
benchmarks/records/<script>.md, headed by the date, the exact command line, the commit and the machine line, then the
text; when the script has structured numbers (`data`), the same entry goes to benchmarks/records/<script>.jsonl as
one JSON object (same date, command, commit and machine beside the numbers). Every script takes `--no-record` to
print only. benchmarks/RESULTS.md is not written by scripts: it is the curated record of current figures, and it cites
these logs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import torch

from advfeatures.results import cpu_model  # one definition of the machine's CPU name

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
RECORDS = BENCHMARKS / "records"
RECORDS_ENV = "ADVFEATURES_RECORDS"  # another folder for the records (the tests use it)
COMMIT_ENV = "ADVFEATURES_COMMIT"  # the commit, where git or the repository is absent (the device machine)

T = TypeVar("T")


# ---- timing

def sync(device: torch.device | str | None) -> None:
    """Wait for the device's queued work, so that a clock read after it counts that work (a no-op on the CPU)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device | str | None = None, *, warmup: int = 1,
          repeats: int = 1) -> float:
    """Seconds one call of `fn` takes: `warmup` untimed calls first (allocations, oneDNN primitives, cuDNN autotuning,
    torch.compile), then `repeats` timed calls, each between two device synchronisations; the median of those.
    For work that cannot be repeated or whose result is needed, use `timed_once`."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def timed_once(fn: Callable[[], T], device: torch.device | str | None = None) -> tuple[T, float]:
    """(value, seconds) of one call of `fn`, no warm-up: for work too long or too stateful to run twice (training a
    model, building a dataset, a whole evaluation), where the warm-up's cost is a small part of the time."""
    sync(device)
    t0 = time.perf_counter()
    value = fn()
    sync(device)
    return value, time.perf_counter() - t0


class Stopwatch:
    """Seconds since it was started, read at points inside one long call (after each run of an attack cascade, say),
    where `timed_once` can only time the whole call."""

    def __init__(self, device: torch.device | str | None = None):
        self.device = device
        sync(device)
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        sync(self.device)
        return time.perf_counter() - self.start


# ---- the machine line

def commit() -> str:
    """The code's commit: `git rev-parse` of the repository, with " (dirty)" when tracked files differ from it
    (benchmarks/records/ aside: the entry the previous run appended is not a change to the code); where git or the
    repository is absent (the device machine gets the working tree without .git), ADVFEATURES_COMMIT from the
    environment; "unknown" when neither says."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=20)
        if head.returncode == 0 and head.stdout.strip():
            status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                     ":(exclude)benchmarks/records"], cwd=REPO, capture_output=True, text=True,
                                    timeout=60)
            dirty = status.returncode != 0 or bool(status.stdout.strip())
            return head.stdout.strip() + (" (dirty)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return os.environ.get(COMMIT_ENV, "").strip() or "unknown"


def machine_facts() -> dict[str, Any]:
    """Where and when a figure was measured, as fields (the .jsonl records keep them so)."""
    cuda = torch.cuda.is_available()
    return {
        "date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC",
        "commit": commit(),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}" if cuda else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def machine_line(facts: dict[str, Any] | None = None, date: bool = True) -> str:
    """One line: date (unless `date` is false), commit, CPU model and cores, torch threads, GPU, Python and torch
    versions."""
    f = facts or machine_facts()
    return ((f"{f['date']}; " if date else "") + f"commit {f['commit']}; {f['cpu_cores']} CPU cores ({f['cpu']}), "
            f"torch threads {f['torch_threads']}; {f['gpu'] or 'no GPU'}; Python {f['python']}, torch {f['torch']}")


# ---- recording

def add_record_option(parser: argparse.ArgumentParser) -> None:
    """The `--no-record` flag every benchmark script takes."""
    parser.add_argument("--no-record", action="store_true",
                        help="print only; do not append an entry to benchmarks/records/<script>.md")


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed (`python SCRIPT ARGS`), preceded by `cd DIR &&` when not run from the repository root."""
    argv = sys.argv if argv is None else argv
    command = shlex.join(["python", *argv])
    cwd = Path.cwd().resolve()
    return command if cwd == REPO else f"cd {shlex.quote(str(cwd))} && {command}"


def records_dir() -> Path:
    return Path(os.environ[RECORDS_ENV]) if os.environ.get(RECORDS_ENV) else RECORDS


def _append(path: Path, text: str) -> None:
    """Append by writing the whole file under a temporary name and renaming it: never a half-written log."""
    old = path.read_text() if path.exists() else ""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(old + text)
    os.replace(tmp, path)


def record(script: str | Path, text: str, data: Any = None, *, title: str, enabled: bool = True) -> Path | None:
    """Append one entry for `script` (pass `__file__`) to benchmarks/records/<script>.md: a heading with the date and
    `title`, the exact command line, the commit and the machine line, then `text` (the table the script printed).
    `data` (rows or a dict of numbers, JSON-serialisable) also goes, with the same header fields, as one line of
    benchmarks/records/<script>.jsonl. Returns the .md path, or None when `enabled` is false (--no-record)."""
    if not enabled:
        return None
    name = Path(script).stem
    folder = records_dir()
    folder.mkdir(parents=True, exist_ok=True)
    facts = machine_facts()
    command = command_line()
    md = folder / f"{name}.md"
    entry = (f"\n## {facts['date']}: {title}\n\n```\n{command}\n```\n\nMachine: {machine_line(facts, date=False)}\n\n"
             f"{text.strip()}\n")
    if data is not None:
        machine = {k: v for k, v in facts.items() if k not in ("date", "commit")}
        line = json.dumps({"date": facts["date"], "title": title, "command": command, "commit": facts["commit"],
                           "machine": machine, "data": data}, default=str)
        _append(folder / f"{name}.jsonl", line + "\n")
        entry += f"\nNumbers: {name}.jsonl, the entry of {facts['date']}.\n"
    if not md.exists():
        entry = f"# {name}\n\nEntries appended by `{_script_path(script)}`, oldest first.\n" + entry
    _append(md, entry)
    print(f"recorded in {md}", file=sys.stderr)
    return md


def _script_path(script: str | Path) -> str:
    path = Path(script).resolve()
    try:
        return f"python {path.relative_to(REPO)}"
    except ValueError:
        return f"python {path}"


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A GitHub markdown table ("_none_" without rows)."""
    if not rows:
        return "_none_"
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
