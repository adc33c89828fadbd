"""Stages of (preset, seed) runs in worker processes: how many workers, the task graph (order, waiting, log lines,
errors), and that they build exactly what the one-process run builds (the same numbers at the same thread count,
and the same stage records: a run with --jobs 1 afterwards finds every stage cached)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from advfeatures.cli import main
from advfeatures.errors import BadInputError
from advfeatures.jobs import Task, plan_jobs, run_tasks, usable_cores


def test_plan_jobs_fills_the_cores_on_a_cpu_only():
    cores = usable_cores()
    two = min(cores, 2)
    assert plan_jobs(None, 1, "cpu", False) == (two, max(1, cores // two))  # one run: its stages on two workers
    assert plan_jobs(None, 6, "cpu", False) == (min(cores, 6), max(1, cores // min(cores, 6)))  # one per run
    assert plan_jobs(None, 6, "cuda", False) == (1, cores)  # a GPU's parallelism is inside each run
    assert plan_jobs(None, 6, "cpu", True) == (1, cores)  # torchrun: its ranks are the processes
    assert plan_jobs(2, 1, "cpu", False) == (2, max(1, cores // 2))  # asked for
    assert plan_jobs(1, 3, "cpu", False) == (1, cores)
    with pytest.raises(BadInputError, match="--jobs"):
        plan_jobs(0, 3, "cpu", False)
    with pytest.raises(BadInputError, match="torchrun"):
        plan_jobs(2, 3, "cpu", True)


def _square(worker, x: int, log) -> int:
    log(f"  squaring {x}")
    return x * x


def _fail(worker, x: int, log) -> int:
    log("  about to fail")
    raise BadInputError(f"unit {x} refused its input")


def test_run_tasks_returns_every_result_with_its_lines_and_raises_a_workers_error():
    lines: list[str] = []
    tasks = [Task(i, f"p seed {i}", _square, (i,)) for i in range(3)]
    results = {key: value for key, value, seconds in run_tasks(tasks, 2, 1, lines.append)}
    assert results == {0: 0, 1: 1, 2: 4}
    assert sorted(lines) == [f"[p seed {i}] squaring {i}" for i in range(3)]
    with pytest.raises(BadInputError, match="unit 7 refused its input"):
        list(run_tasks([Task(7, "p seed 7", _fail, (7,))], 1, 1, lines.append))
    assert "[p seed 7] about to fail" in lines


def _write_later(worker, path: str, log) -> str:
    time.sleep(0.5)
    Path(path).write_text(worker.shared)
    return "wrote"


def _read(worker, path: str, log) -> str:
    worker.memo["reads"] = worker.memo.get("reads", 0) + 1
    return f"{Path(path).read_text()} {worker.memo['reads']}"


def test_a_task_starts_only_after_the_tasks_it_waits_for(tmp_path):
    """The reader would fail (no file) if it ran before the slow writer ended, though a second worker is free;
    every worker gets the shared inputs, and its memo outlives a task."""
    first, second = str(tmp_path / "a"), str(tmp_path / "b")
    tasks = [Task("write a", "w", _write_later, (first,)), Task("read a", "r", _read, (first,), after=("write a",)),
             Task("write b", "w", _write_later, (second,)),
             Task("read b", "r", _read, (second,), after=("write b", "read a"))]
    ended = [(key, value) for key, value, _ in run_tasks(tasks, 2, 1, lambda line: None, shared="shared")]
    assert [key for key, _ in ended].index("read a") > [key for key, _ in ended].index("write a")
    assert [key for key, _ in ended][-1] == "read b"
    values = dict(ended)
    assert values["read a"].startswith("shared ") and values["read b"].startswith("shared ")
    with pytest.raises(ValueError, match="unknown"):
        list(run_tasks([Task("x", "x", _square, (1,), after=("y",))], 1, 1, print))
    with pytest.raises(ValueError, match="cycle"):
        list(run_tasks([Task("x", "x", _square, (1,), after=("y",)), Task("y", "y", _square, (1,), after=("x",))],
                       1, 1, print))


def test_parallel_runs_build_what_one_process_builds(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["reproduce", "--preset", "synthetic,digits", "--quick", "--no-progress", "--no-theory", "--no-followups",
            "--seeds", "2"]
    assert main([*argv, "--out", str(out), "--jobs", "2"]) == 0
    log = capsys.readouterr().out
    assert "4 runs" in log and "on 2 worker processes, 1 thread each" in log
    for preset in ("synthetic", "digits"):
        results = json.loads((out / preset / "results.json").read_text())
        assert results["seeds"] == [0, 1] and set(results["accuracy"]) >= {"D", "D_adv", "D_R", "D_NR"}
        for seed in (0, 1):
            assert any(line.startswith(f"[{preset} seed {seed}] D_adv ") for line in log.splitlines()), log
    assert (out / "report.html").is_file() and "still running" not in (out / "results.md").read_text()
    # the same numbers as one process running every stage in order on the same thread count: no stage depends on
    # which worker ran it or what ran before it there
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*argv, "--out", str(tmp_path / "serial"), "--jobs", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    capsys.readouterr()
    for preset in ("synthetic", "digits"):
        parallel, serial = (json.loads((folder / preset / "results.json").read_text())["per_seed"]
                            for folder in (out, tmp_path / "serial"))
        for a, b in zip(parallel, serial, strict=True):
            for part in ("accuracy", "construction", "attack_check", "transfer", "robust_source"):
                assert _numbers(a[part]) == _numbers(b[part]), (preset, part)
            assert list(a["seconds"]) == list(b["seconds"])  # every stage, in stage order
    # the same stage records, keys and files as the in-process path: nothing runs again
    assert main([*argv, "--out", str(out), "--jobs", "1"]) == 0
    stages = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    assert len(stages) > 20 and all(line.endswith("cached") for line in stages), stages


def _numbers(tree):
    """A result without its timings."""
    if isinstance(tree, dict):
        return {k: _numbers(v) for k, v in tree.items() if "seconds" not in k}
    if isinstance(tree, list):
        return [_numbers(v) for v in tree]
    return tree


def test_jobs_must_be_positive(capsys, tmp_path):
    with pytest.raises(SystemExit) as stop:
        main(["reproduce", "--jobs", "0", "--out", str(tmp_path / "r")])
    assert stop.value.code == 2 and "--jobs: must be a positive whole number" in capsys.readouterr().err


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_workers_end_when_their_parent_is_killed(tmp_path):
    """A killed `reproduce` (SIGKILL: no cleanup runs) must not leave workers computing into its folder."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "advfeatures", "reproduce", "--preset", "synthetic,digits", "--quick", "--no-theory",
           "--no-progress", "--jobs", "2", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:  # a worker has logged: the pool is up
            if line.startswith("[synthetic seed 0] ") or line.startswith("[digits seed 0] "):
                break
        workers = [pid for pid in _children(proc.pid) if "spawn_main" in _cmdline(pid)]
        assert len(workers) == 2, workers
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.time() + 10
    while any(Path(f"/proc/{pid}").exists() and "spawn_main" in _cmdline(pid) for pid in workers):
        assert time.time() < deadline, "workers outlived their parent"
        time.sleep(0.1)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""


def _sleep(worker, seconds: float, log) -> float:
    log("  asleep")
    time.sleep(seconds)
    return seconds


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_an_interrupted_parent_ends_its_workers_at_once():
    """SIGINT to the parent alone (`kill -INT`, not Ctrl-C's whole process group): it must not wait for the running
    tasks to finish."""
    here = Path(__file__).resolve().parent
    # SIGINT's handler set explicitly: a shell runs background commands (`pytest &`) with SIGINT ignored, and a
    # child inherits that
    script = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
              "from advfeatures.jobs import Task, run_tasks; from test_jobs import _sleep\n"
              "tasks = [Task(i, f'p seed {i}', _sleep, (120,)) for i in range(2)]\n"
              "for _ in run_tasks(tasks, 2, 1, lambda line: print(line, flush=True)): pass\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=here, env={**os.environ, "PYTHONPATH": str(here)})
    seen = 0
    for line in proc.stdout:
        seen += line.endswith("asleep\n")
        if seen == 2:
            break
    workers = [pid for pid in _children(proc.pid) if "spawn_main" in _cmdline(pid)]
    assert len(workers) == 2, workers
    started = time.time()
    os.kill(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert "KeyboardInterrupt" in proc.stderr.read() and time.time() - started < 30
    assert not any("spawn_main" in _cmdline(pid) for pid in workers)


def _declared(name: str, needs: tuple[str, ...] = (), heavy: bool = False):
    from advfeatures.runfolder import Stage

    return Stage(name, lambda run, upstream: {}, needs=needs, heavy=heavy)


def test_stage_tasks_wait_for_their_inputs_and_start_the_long_chains_first():
    """Ready stages go to workers by how many stages build on them, then by run, then by stage order."""
    from advfeatures.jobs import Unit
    from advfeatures.pipeline import stage_tasks

    stages = [_declared("D"), _declared("D_adv"), _declared("construct", ("D",)), _declared("model", ("construct",)),
              _declared("robust_use", ("D_adv",)), _declared("check", ("D", "D_adv", "model")), _declared("toy")]
    a, b = Unit("a", 0), Unit("b", 0)
    tasks = stage_tasks({a: stages, b: stages})
    order = [t.key for t in tasks]
    # D: 3 build on it (construct, model, check); D_adv 2; construct 2; model 1; the rest 0
    assert order[:6] == [(a, "D"), (b, "D"), (a, "D_adv"), (a, "construct"), (b, "D_adv"), (b, "construct")]
    assert order[-2:] == [(b, "check"), (b, "toy")]
    after = {t.key: t.after for t in tasks}
    assert after[(a, "check")] == ((a, "D"), (a, "D_adv"), (a, "model")) and after[(b, "toy")] == ()
    assert {t.label for t in tasks} == {"a seed 0", "b seed 0"}


def test_a_heavy_stage_is_taken_before_every_other_ready_stage():
    """A stage declared heavy (one dependant, hours of work) goes before stages many others build on."""
    from advfeatures.jobs import Unit
    from advfeatures.pipeline import stage_tasks

    stages = [_declared("D"), _declared("construct", ("D",)), _declared("model", ("construct",)),
              _declared("noise", ("D",), heavy=True), _declared("noise_model", ("noise",))]
    a = Unit("a", 0)
    order = [t.key[1] for t in stage_tasks({a: stages})]
    # without `heavy`: D (4 build on it), construct (1), noise (1), ...: noise after construct
    assert order[:3] == ["noise", "D", "construct"]
    assert dict((t.key[1], t.after) for t in stage_tasks({a: stages}))["noise"] == ((a, "D"),)
