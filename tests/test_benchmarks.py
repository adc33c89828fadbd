"""benchmarks/: every script starts (`--help`: its imports, its path to common.py and its options hold) and takes
--no-record; the scripts time and record through common.py only; common.record writes the one record format.

Nothing here measures anything: the scripts are only asked for their help, and record() writes to a temporary folder
(ADVFEATURES_RECORDS)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
ALL_PY = sorted(BENCHMARKS.glob("*/*.py"))  # the scripts and the workers, by folder (common.py sits above them)
SCRIPTS = [p for p in ALL_PY if not p.name.startswith("_")]  # _*.py: workers the compare scripts run


def _name(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def _load_common():
    """benchmarks/common.py as a module of its own (not put on sys.path as `common`, a name too generic to leave)."""
    spec = importlib.util.spec_from_file_location("benchmarks_common", BENCHMARKS / "common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_folders_hold_the_scripts():
    assert {p.parent.name for p in SCRIPTS} >= {"speed", "compare", "studies"}
    assert [p.name for p in BENCHMARKS.glob("*.py")] == ["common.py"]  # every script is in a folder by purpose
    assert (BENCHMARKS / "README.md").is_file()


@pytest.mark.parametrize("script", SCRIPTS, ids=_name)
def test_script_answers_help(script, tmp_path):
    """Run from another folder, as the docstrings promise; the checkout's src/ first on the path."""
    pythonpath = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath}
    proc = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120,
                          env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "--no-record" in proc.stdout
    assert f"python benchmarks/{_name(script)}" in proc.stdout  # the usage line shows the script's own path


@pytest.mark.parametrize("script", ALL_PY, ids=_name)
def test_script_times_and_records_through_common(script):
    """No private clock or machine line (the old _machine.py), no write to RESULTS.md; the scripts record."""
    source = script.read_text()
    assert not re.search(r"^\s*(import time|from time import)\b", source, re.M)
    for private in ("perf_counter", "time.time(", "_machine", "RESULTS.md\")", "RESULTS.open"):
        assert private not in source, private
    if script in SCRIPTS:
        assert "from common import" in source and "add_record_option(" in source and "record(__file__," in source


@pytest.fixture
def common(monkeypatch, tmp_path):
    """common.py with its records in tmp_path/records, run "from the repository root" tmp_path, which has no git:
    the commit comes from ADVFEATURES_COMMIT."""
    module = _load_common()
    root = tmp_path.resolve()
    monkeypatch.setenv(module.RECORDS_ENV, str(root / "records"))
    monkeypatch.setenv(module.COMMIT_ENV, "abc123def456")
    monkeypatch.delenv("GIT_DIR", raising=False)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(root.parent))  # no repository found above tmp_path either
    monkeypatch.setattr(module, "REPO", root)
    monkeypatch.chdir(root)
    monkeypatch.setattr(sys, "argv", ["benchmarks/speed/example.py", "--batch", "8"])
    return module


def test_record_appends_command_commit_machine_and_data(common, tmp_path):
    folder = tmp_path.resolve() / "records"
    table = "| loop | seconds |\n|---|---|\n| pgd | 1.5 |"
    data = {"batch": 8, "rows": [{"loop": "pgd", "seconds": 1.5}]}
    md = common.record("benchmarks/speed/example.py", table, data, title="Example throughput")
    assert md == folder / "example.md"
    text = md.read_text()
    assert text.startswith("# example\n")
    assert "\npython benchmarks/speed/example.py --batch 8\n" in text
    assert "Machine: commit abc123def456; " in text and "torch threads" in text
    assert ": Example throughput\n" in text and table in text
    entry = json.loads((folder / "example.jsonl").read_text())
    assert entry["command"] == "python benchmarks/speed/example.py --batch 8"
    assert entry["commit"] == "abc123def456"
    assert entry["title"] == "Example throughput" and entry["data"] == data
    assert {"cpu", "cpu_cores", "torch_threads", "gpu", "python", "torch"} <= set(entry["machine"])
    assert entry["date"] in text

    common.record("benchmarks/speed/example.py", "| again |", {"batch": 16}, title="Second run")
    text = md.read_text()
    assert text.count("# example\n") == 1 and text.count("\n## ") == 2 and text.index(table) < text.index("| again |")
    lines = (folder / "example.jsonl").read_text().splitlines()
    assert [json.loads(line)["data"] for line in lines] == [data, {"batch": 16}]
    assert sorted(p.name for p in folder.iterdir()) == ["example.jsonl", "example.md"]  # no temporary file left


def test_record_without_data_writes_the_log_only(common, tmp_path):
    md = common.record("benchmarks/studies/notes.py", "text only", title="Notes")
    assert md.read_text().rstrip().endswith("text only")
    assert not (md.parent / "notes.jsonl").exists()


def test_no_record_writes_nothing(common, tmp_path):
    parser = argparse.ArgumentParser()
    common.add_record_option(parser)
    assert parser.parse_args([]).no_record is False
    args = parser.parse_args(["--no-record"])
    assert common.record("benchmarks/speed/example.py", "text", {"a": 1}, title="t", enabled=not args.no_record) is None
    assert not (tmp_path / "records").exists()


def test_command_line_names_the_folder_when_not_at_the_root(common, tmp_path, monkeypatch):
    elsewhere = tmp_path.resolve() / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert common.command_line(["../benchmarks/speed/example.py"]) == (
        f"cd {elsewhere} && python ../benchmarks/speed/example.py")


def test_commit_names_the_checkout():
    if not (REPO / ".git").exists():
        pytest.skip("no git checkout (the commit then comes from ADVFEATURES_COMMIT)")
    assert re.fullmatch(r"[0-9a-f]{12}( \(dirty\))?", _load_common().commit())


def test_timed_warms_up_then_takes_the_median():
    common = _load_common()
    calls = []
    seconds = common.timed(lambda: calls.append(1), warmup=2, repeats=3)
    assert len(calls) == 5 and seconds >= 0
    value, seconds = common.timed_once(lambda: 42)
    assert value == 42 and seconds >= 0
    with pytest.raises(ValueError):
        common.timed(lambda: None, repeats=0)
