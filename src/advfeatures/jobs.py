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
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass

import torch

from .errors import BadInputError

_LOG_QUEUE = None  # in a worker: where its log lines go


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


def _init_worker(log_queue, threads: int, parent: int) -> None:
    global _LOG_QUEUE
    _LOG_QUEUE = log_queue
    torch.set_num_threads(threads)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """End this worker as soon as its parent has gone (killed, even by SIGKILL): an orphan would go on computing
    and writing into a run folder whose lock nobody holds any more. Files are renamed into place only when complete,
    so stopping at any moment loses at most the stage in progress."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _worker_log(label: str) -> Callable[[str], None]:
    def log(message: str) -> None:
        _LOG_QUEUE.put((label, message))

    return log


def _call(unit: Unit, fn: Callable, args: tuple) -> tuple[Unit, object, float]:
    t0 = time.perf_counter()
    try:
        result = fn(*args, _worker_log(unit.label))
    finally:
        _LOG_QUEUE.put((unit.label, None))  # this unit's last line: the parent shows every line before its result
    return unit, result, time.perf_counter() - t0


def run_units(work: list[tuple[Unit, Callable, tuple]], jobs: int, threads: int,
              log: Callable[[str], None]) -> Iterator[tuple[Unit, object, float]]:
    """Run `fn(*args, log)` for every unit on `jobs` worker processes; yield (unit, result, seconds) as each ends.

    `fn` must be a module-level function and `args` picklable. The first failure, an interrupt of this process or a
    caller that stops reading ends every worker at once (what finished stays cached in the run folders) and is
    raised here, with its own message.
    """
    context = multiprocessing.get_context("spawn")
    log_queue = context.Queue()
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_init_worker,
                               initargs=(log_queue, threads, os.getpid()))
    try:
        pending: set[Future] = {pool.submit(_call, unit, fn, args) for unit, fn, args in work}
        ended: set[str] = set()  # units whose last log line has arrived
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            _drain(log_queue, log, ended)
            for future in done:
                unit, result, seconds = future.result()
                _drain(log_queue, log, ended, until=unit.label)
                yield unit, result, seconds
    except BaseException:
        _drain(log_queue, log, ended=set())
        # without this, leaving the pool would wait for every running unit to finish its whole run
        processes = getattr(pool, "_processes", None) or {}  # private, but the only handle before Python 3.14
        for process in list(processes.values()):
            process.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _drain(log_queue, log: Callable[[str], None], ended: set[str], until: str | None = None) -> None:
    """Pass the workers' lines on to `log`; with `until`, wait (up to 10 s) for that unit's last line."""
    while True:
        waiting = until is not None and until not in ended
        try:
            label, message = log_queue.get(timeout=10) if waiting else log_queue.get_nowait()
        except queue.Empty:
            return
        if message is None:
            ended.add(label)
        else:
            log(f"[{label}] {message.strip()}")
