"""Independent (preset, seed) runs side by side on a CPU's cores, one worker process each.

Why: the offline presets' networks are small (a 16x16 width-16 CNN, an 8x8 digit CNN), and PyTorch spreads one such
step over two cores poorly (an attack step at batch 256: ~1.4x faster on 2 threads than on 1), while two processes
on one core each run at ~1.6x the rate of one (benchmarks/RESULTS.md, "Speed"). Every (preset, seed) already has its
own run folder and seed, so runs at once write nothing in common: each writes only its own folder, under the run
lock its parent holds, and the parent assembles results and the report as it does without workers.

What it changes: a worker computes with cores // jobs threads, and on some CPUs the thread count changes which
kernels run and so the floating-point summation order, and with it a seed's numbers (as running on another machine
does; measured in RESULTS.md). The thread count of each run is fixed when it starts and recorded in results.json
("machine"); it never changes mid-run, so the same command on the same machine gives the same numbers.

Workers are spawned (not forked: a forked PyTorch with live OpenMP threads can hang), get the preset object itself
(so a caller's changed preset is the one that runs), print nothing themselves, and send their log lines to the
parent, which prefixes each with its run, so interleaved lines stay readable.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from .errors import BadInputError


@dataclass(frozen=True)
class Unit:
    """One seed of one preset: the smallest piece of a run that is independent of every other."""

    preset: str
    seed: int

    @property
    def label(self) -> str:
        return f"{self.preset} seed {self.seed}"


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one: a container's limit, `taskset`)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def plan_jobs(requested: int | None, units: int, device: str, distributed: bool) -> tuple[int, int]:
    """(worker processes, torch threads in each). None: as many workers as cores and units allow on a CPU, one
    process on a GPU or under torchrun (their parallelism is elsewhere)."""
    if requested is not None and requested < 1:
        raise BadInputError(f"--jobs must be at least 1, got {requested}")
    cores = usable_cores()
    if requested is None:
        jobs = 1 if device != "cpu" or distributed else min(units, cores)
    else:
        if distributed and requested > 1:
            raise BadInputError("--jobs above 1 cannot be combined with torchrun; use one or the other")
        jobs = min(requested, units)
    jobs = max(1, jobs)
    return jobs, max(1, (cores if jobs == 1 else cores // jobs))


def run_units(work: list[tuple[Unit, Callable, tuple]], jobs: int, threads: int,
              log: Callable[[str], None]) -> Iterator[tuple[Unit, object, float]]:
    """Run `fn(*args, log)` for every unit on `jobs` worker processes; yield (unit, result, seconds) as each ends.

    `fn` must be a module-level function and `args` picklable. The first failure (raised here with its own message),
    an interrupt of this process, or a caller that stops reading ends every worker at once; what finished stays
    cached in the run folders.
    """
    context = multiprocessing.get_context("spawn")
    tasks, messages = context.SimpleQueue(), context.Queue()
    workers = [context.Process(target=_worker, args=(tasks, messages, threads, os.getpid()), daemon=True,
                               name=f"advfeatures-worker-{i}") for i in range(min(jobs, len(work)))]
    try:
        for worker in workers:  # started before any task is sent: a put into the pipe waits for a reader
            worker.start()
        for task in work:
            tasks.put(task)
        for _ in workers:
            tasks.put(None)  # one "no more work" per worker
        remaining = len(work)
        while remaining:
            try:
                kind, label, payload = messages.get(timeout=1.0)
            except queue.Empty:
                if not any(w.is_alive() for w in workers):
                    raise RuntimeError("every worker process ended before its runs did (killed, or out of "
                                       "memory?)") from None
                continue
            if kind == "line":
                log(f"[{label}] {payload.strip()}")
            elif kind == "failed":
                raise payload
            else:
                remaining -= 1
                yield payload
    finally:
        for worker in workers:  # daemon processes: never joined at exit, ended here whatever happened
            if worker.is_alive():
                worker.terminate()
        for worker in workers:
            if worker.pid is not None:  # started
                worker.join(timeout=5)


def _worker(tasks, messages, threads: int, parent: int) -> None:
    """A worker process: takes units until told there are no more, and reports lines, results and failures on the
    one message queue (in order, so every line of a unit arrives before its result)."""
    torch.set_num_threads(threads)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    while (task := tasks.get()) is not None:
        unit, fn, args = task

        def log(message: str, label: str = unit.label) -> None:
            messages.put(("line", label, message))

        t0 = time.perf_counter()
        try:
            result = fn(*args, log)
        except Exception as err:  # the parent raises it; a failure whose exception cannot travel still names itself
            messages.put(("failed", unit.label, _portable(err)))
            return
        messages.put(("done", unit.label, (unit, result, time.perf_counter() - t0)))


def _portable(err: Exception) -> Exception:
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:
        return RuntimeError(f"{type(err).__name__}: {err}")


def _exit_with_parent(parent: int) -> None:
    """End this worker as soon as its parent has gone (killed, even by SIGKILL): an orphan would go on computing
    and writing into a run folder whose lock nobody holds any more. Files are renamed into place only when complete,
    so stopping at any moment loses at most the stage in progress."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)
