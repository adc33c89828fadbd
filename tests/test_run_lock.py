"""One run per output folder (runlock.py), tested with real processes: a live holder refuses a second run and is
named; a holder killed with SIGKILL leaves a stale lock that the next run takes over; processes racing for one
folder get exactly one winner; temporaries of an interrupted run are removed under the lock.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from advfeatures.errors import BadInputError
from advfeatures.runlock import LOCK_NAME, RunLock, RunLockedError, lock_record, run_folder_lock

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "PYTHONUNBUFFERED": "1"}

# A process that takes the lock on argv[1], says so, and holds it until killed (or 120 s pass).
HOLDER = textwrap.dedent("""
    import sys, time
    from advfeatures.runlock import RunLock
    lock = RunLock(sys.argv[1], command="holder-for-test").acquire()
    print("held", flush=True)
    time.sleep(120)
""")


def start_holder(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    line = proc.stdout.readline()
    if line.strip() != "held":
        proc.kill()
        raise AssertionError(f"holder did not take the lock: {line!r} {proc.stderr.read()}")
    return proc


def stop(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, sig)
    proc.wait(timeout=30)


def test_second_process_is_refused_and_the_holder_named(tmp_path):
    out = tmp_path / "run"
    holder = start_holder(out)
    try:
        with pytest.raises(RunLockedError) as exc:
            RunLock(out).acquire()
        message = str(exc.value)
        assert f"pid {holder.pid}" in message and socket.gethostname() in message, message
        assert "holder-for-test" in message and "another --out" in message, message
        record = lock_record(out)
        assert record["pid"] == holder.pid and record["host"] == socket.gethostname()
    finally:
        stop(holder)


def test_reproduce_on_a_held_folder_exits_2_naming_the_holder_and_writes_nothing(tmp_path):
    """The CLI in a second real process: refused after its pre-flight checks, before run.json is written."""
    out = tmp_path / "run"
    holder = start_holder(out)
    try:
        cmd = [sys.executable, "-m", "advfeatures", "reproduce", "--preset", "synthetic", "--quick", "--no-theory",
               "--no-followups", "--no-progress", "--out", str(out)]
        done = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
        assert done.returncode == 2, done.stderr
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("advfeatures: error: "), done.stderr
        assert f"pid {holder.pid}" in lines[0] and "in use by another run" in lines[0], lines[0]
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # no run.json, no preset folder
    finally:
        stop(holder)


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    out = tmp_path / "run"
    holder = start_holder(out)
    stop(holder, signal.SIGKILL)  # no cleanup runs: the lock file and its record stay behind
    assert (out / LOCK_NAME).exists() and lock_record(out)["pid"] == holder.pid
    lock = RunLock(out).acquire()
    try:
        assert lock.taken_over["pid"] == holder.pid
        assert lock_record(out)["pid"] == os.getpid()
        with pytest.raises(RunLockedError):  # and it now excludes others as usual
            RunLock(out).acquire()
    finally:
        lock.release()
    assert not (out / LOCK_NAME).exists()


RACER = textwrap.dedent("""
    import os, sys, time
    from advfeatures.runlock import RunLock, RunLockedError
    folder, go = sys.argv[1], sys.argv[2]
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.001)
    try:
        lock = RunLock(folder).acquire()
    except RunLockedError:
        print("refused", flush=True)
        sys.exit(0)
    print("won", flush=True)
    time.sleep(1.5)  # hold it while the others try
    lock.release()
""")


@pytest.mark.parametrize("stale", [False, True], ids=["free", "stale"])
def test_processes_racing_for_one_folder_get_exactly_one_winner(tmp_path, stale):
    out = tmp_path / "run"
    if stale:  # all of them race to take over the same dead holder's lock
        stop(start_holder(out), signal.SIGKILL)
    go = tmp_path / "go"
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(out), str(go)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=ENV) for _ in range(4)]
    try:
        for r in racers:
            assert r.stdout.readline().strip() == "ready", r.stderr.read()
        go.write_text("")
        outcomes = sorted(r.stdout.readline().strip() for r in racers)
        for r in racers:
            assert r.wait(timeout=60) == 0, r.stderr.read()
    finally:
        for r in racers:
            stop(r)
    assert outcomes == ["refused", "refused", "refused", "won"], outcomes
    assert not (out / LOCK_NAME).exists()


def test_one_process_cannot_take_its_own_folder_twice(tmp_path):
    with RunLock(tmp_path), pytest.raises(RunLockedError):
        RunLock(tmp_path).acquire()
    with RunLock(tmp_path) as lock:  # released at the end of the first block
        assert lock.held


def test_a_symlinked_lock_file_is_refused(tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("precious")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOCK_NAME).symlink_to(target)
    with pytest.raises(BadInputError, match="symbolic link"):
        RunLock(tmp_path / "run").acquire()
    assert target.read_text() == "precious"


# ---------------------------------------------------------------- file systems without flock (O_EXCL fallback)


@pytest.fixture
def no_flock(monkeypatch):
    import advfeatures.runlock as runlock

    monkeypatch.setattr(runlock, "fcntl", None)


def write_record(folder: Path, **record) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_NAME).write_text(json.dumps(record))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid  # reaped: no process has this pid now (reuse within the test is vanishingly unlikely)


def test_fallback_refuses_a_live_holder(tmp_path, no_flock):
    write_record(tmp_path, pid=os.getppid(), host=socket.gethostname(), started="earlier")
    with pytest.raises(RunLockedError, match=f"pid {os.getppid()}"):
        RunLock(tmp_path).acquire()


def test_fallback_takes_over_a_dead_holder(tmp_path, no_flock):
    pid = dead_pid()
    write_record(tmp_path, pid=pid, host=socket.gethostname(), started="earlier")
    with RunLock(tmp_path) as lock:
        assert lock.taken_over["pid"] == pid
        assert lock_record(tmp_path)["pid"] == os.getpid()
        with pytest.raises(RunLockedError):
            RunLock(tmp_path).acquire()


def test_fallback_never_breaks_another_hosts_lock(tmp_path, no_flock):
    write_record(tmp_path, pid=dead_pid(), host="some-other-machine", started="earlier")
    with pytest.raises(RunLockedError, match="some-other-machine"):
        RunLock(tmp_path).acquire()


def test_fallback_empty_record_is_a_holder_still_writing_unless_old(tmp_path, no_flock):
    (tmp_path / LOCK_NAME).write_text("")
    with pytest.raises(RunLockedError, match="starting"):
        RunLock(tmp_path).acquire()
    old = time.time() - 3600
    os.utime(tmp_path / LOCK_NAME, (old, old))
    with RunLock(tmp_path):
        assert lock_record(tmp_path)["pid"] == os.getpid()


# ---------------------------------------------------------------- the run: recheck, temporaries, torchrun ranks


def test_run_folder_lock_removes_orphaned_temporaries_and_reports_a_takeover(tmp_path):
    out = tmp_path / "run"
    stop(start_holder(out), signal.SIGKILL)
    orphans = [out / ".run.json.abc123xy.tmp", out / "digits" / "models" / ".D.safetensors.k2j3h4g5.tmp",
               out / "digits" / "models" / "..D.checkpoint.q1w2e3r4.tmp"]
    keep = [out / "digits" / "models" / "D.safetensors", out / "digits" / "models" / ".D.checkpoint",
            out / "notes.tmp"]
    for p in orphans + keep:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    lines = []
    with run_folder_lock(out, log=lines.append):
        assert not any(p.exists() for p in orphans)
        assert all(p.exists() for p in keep)  # results, resume checkpoints and files that are not ours stay
    assert any("took over the stale run lock" in line for line in lines), lines
    assert any("removed 3 temporary file(s)" in line for line in lines), lines


def test_a_folder_not_known_to_be_ours_is_not_cleaned(tmp_path):
    """`theory --out ~/somewhere` locks without clean-up: a user's own `.notes.draft.tmp` there must survive."""
    theirs = tmp_path / "sub" / ".notes.draft.tmp"
    theirs.parent.mkdir()
    theirs.write_text("mine")
    with run_folder_lock(tmp_path, clean=False):
        assert theirs.exists()
    assert theirs.read_text() == "mine"


def test_run_folder_lock_rechecks_under_the_lock_and_releases_on_failure(tmp_path):
    def recheck():
        raise BadInputError("run.json changed meanwhile")

    with pytest.raises(BadInputError, match="changed meanwhile"), run_folder_lock(tmp_path, recheck=recheck):
        pass
    assert not (tmp_path / LOCK_NAME).exists()


class _Rank:
    """A stand-in for a torchrun rank: rank 1 of 2, told whether rank 0 got the lock."""

    def __init__(self, rank: int, others_agree: bool):
        self.rank, self.others_agree = rank, others_agree

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_agree(self, flag: bool) -> bool:
        return flag and self.others_agree


def test_other_ranks_fail_with_rank_0_instead_of_waiting(tmp_path):
    with pytest.raises(BadInputError, match="rank 0 could not take the run lock"), \
            run_folder_lock(tmp_path, group=_Rank(1, others_agree=False)):
        pass
    with run_folder_lock(tmp_path, group=_Rank(1, others_agree=True)) as lock:
        assert lock is None and not (tmp_path / LOCK_NAME).exists()  # only rank 0 holds the file


def test_reproduce_holds_the_lock_for_its_body_and_cleans_temporaries(tmp_path, monkeypatch):
    """The hook in pipeline.reproduce: pre-flight checks, then the lock, run.json re-checked under it, orphaned
    temporaries gone before the body runs, the lock released after it (the body is replaced to keep this fast)."""
    from advfeatures import pipeline

    out = tmp_path / "run"
    out.mkdir()
    (out / ".results.md.zzzzzzzz.tmp").write_text("half")
    seen = {}

    def body(options, log, presets, data, out_, fingerprints, t_start, jobs):
        seen["record"] = lock_record(out_)
        seen["files"] = sorted(p.name for p in out_.iterdir())
        return {}

    monkeypatch.setattr(pipeline, "_reproduce_locked", body)
    options = pipeline.RunOptions(out=out, presets=("synthetic",), theory=False, followups=False, progress=False,
                                  device="cpu", overrides=pipeline.Overrides(quick=True))
    pipeline.reproduce(options, log=lambda m: None)
    assert seen["record"]["pid"] == os.getpid()
    assert seen["files"] == [LOCK_NAME]
    assert not (out / LOCK_NAME).exists()


@pytest.mark.slow
def test_two_reproduce_commands_on_one_folder(tmp_path):
    """Issue 25's scenario end to end, with real `reproduce` processes on one --out: A runs (its stdout closed at
    once, as `| head -0` would: it must still finish, exit 0); B, started while A holds the folder, is refused
    with exit 2 naming A, having written nothing; C, run after A, finds every stage done (nothing is redone)."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "advfeatures", "reproduce", "--preset", "synthetic", "--quick", "--limit", "32",
           "--epochs", "1", "--steps", "1", "--eval-targets", "0", "--no-theory", "--no-followups", "--no-progress",
           "--jobs", "1",  # one process: its log lists each stage as "  NAME  cached"
           "--out", str(out)]
    a = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    a.stdout.close()  # the reader has gone before the run starts
    try:
        deadline = time.time() + 240
        while (lock_record(out) or {}).get("pid") != a.pid:  # A has passed its pre-flight and holds the folder
            assert a.poll() is None, a.stderr.read()
            assert time.time() < deadline, "A never took the lock"
            time.sleep(0.05)
        b = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
        if a.poll() is not None:
            pytest.skip("run A finished before B's pre-flight did; this machine is too fast for the scenario")
        assert b.returncode == 2, b.stderr
        assert f"pid {a.pid}" in b.stderr and "in use by another run" in b.stderr, b.stderr
        assert len(b.stderr.strip().splitlines()) == 1, b.stderr
        assert a.wait(timeout=600) == 0, a.stderr.read()
    finally:
        stop(a)
    assert "BrokenPipe" not in a.stderr.read()
    results = json.loads((out / "synthetic" / "results.json").read_text())
    assert results["preset"] == "synthetic" and not (out / LOCK_NAME).exists()
    c = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    assert c.returncode == 0, c.stderr
    stage_lines = [line for line in c.stdout.splitlines() if line.startswith("  ") and not line.startswith("   ")]
    assert stage_lines and all(line.split()[1] == "cached" for line in stage_lines), c.stdout
