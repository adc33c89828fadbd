"""Work on a CPU's cores in worker processes: the stages of (preset, seed) runs as a task graph.

Why: the offline presets' networks are small (a 16x16 width-16 CNN, an 8x8 digit CNN), and PyTorch spreads one such
step over two cores poorly (an attack step at batch 256: ~1.4x faster on 2 threads than on 1), while two processes
on one core each run at ~1.6x the rate of one (benchmarks/RESULTS.md, "Speed"). Whole runs side by side left one
core idle once the shorter run ended (the presets are unequal), so a worker takes a *stage*: the next one, in the
caller's order, whose upstream stages have all ended, of whichever run. Each stage reads what it builds on from the
run folder (its records and artefacts), seeds itself, and writes only its own files, so which worker runs it, and
after what, changes nothing it computes.

What it does change: a worker computes with cores // jobs threads, and on some CPUs the thread count changes which
kernels run and so the floating-point summation order, and with it a seed's numbers (as running on another machine
does; measured in RESULTS.md). The thread count is fixed for the whole command and recorded in results.json
("machine"), so the same command on the same machine gives the same numbers.

Workers are spawned (not forked: a forked PyTorch with live OpenMP threads can hang), get the shared inputs once
when they start (the presets and their data), print nothing themselves, and send their log lines to the parent,
which prefixes each with its task's label, so interleaved lines stay readable.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field

import torch

from .errors import BadInputError


@dataclass(frozen=True)
class Unit:
    """One seed of one preset: its own run folder and seed, independent of every other."""

    preset: str
    seed: int

    @property
    def label(self) -> str:
        return f"{self.preset} seed {self.seed}"


@dataclass(frozen=True)
class Task:
    """One piece of work for a worker: `fn(worker, *args, log)`, handed out once every task named in `after` has
    ended. `fn` must be a module-level function and `args` picklable."""

    key: Hashable
    label: str  # the prefix of its log lines
    fn: Callable
    args: tuple = ()
    after: tuple[Hashable, ...] = ()


@dataclass
class Worker:
    """What a task's function gets besides its arguments: the inputs every task shares (sent once per worker) and
    a dict that lives as long as the worker (to keep what later tasks can reuse)."""

    shared: object = None
    memo: dict = field(default_factory=dict)


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one: a container's limit, `taskset`)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def plan_jobs(requested: int | None, units: int, device: str, distributed: bool) -> tuple[int, int]:
    """(worker processes, torch threads in each). None on a CPU: one worker per (preset, seed) run, at least two
    (workers take stages, so one run's independent stages share them: D and D_adv, the constructions), at most one
    per core; on 2 cores two one-thread workers did more work than one two-thread process on every network but digits'
    (benchmarks/records/worker_processes.md). One process on a GPU or under torchrun (their parallelism is elsewhere).
    A requested N is taken as given."""
    if requested is not None and requested < 1:
        raise BadInputError(f"--jobs must be at least 1, got {requested}")
    cores = usable_cores()
    if requested is None:
        jobs = 1 if device != "cpu" or distributed else min(cores, max(units, 2))
    else:
        if distributed and requested > 1:
            raise BadInputError("--jobs above 1 cannot be combined with torchrun; use one or the other")
        jobs = requested
    jobs = max(1, jobs)
    return jobs, max(1, (cores if jobs == 1 else cores // jobs))


def run_tasks(tasks: list[Task], jobs: int, threads: int, log: Callable[[str], None],
              shared: object = None) -> Iterator[tuple[Hashable, object, float]]:
    """Run the tasks on `jobs` worker processes, each ready task in the order given; yield (key, result, seconds)
    as each ends.

    The first failure (raised here with its own message), an interrupt of this process, or a caller that stops
    reading ends every worker at once; what finished stays where its task wrote it.
    """
    keys = [t.key for t in tasks]
    if len(set(keys)) != len(keys):
        raise ValueError("task keys must be unique")
    unknown = {a for t in tasks for a in t.after} - set(keys)
    if unknown:
        raise ValueError(f"tasks wait for unknown tasks: {sorted(map(str, unknown))}")
    context = multiprocessing.get_context("spawn")
    inbox, messages = context.SimpleQueue(), context.Queue()
    workers = [context.Process(target=_worker, args=(inbox, messages, threads, os.getpid(), shared), daemon=True,
                               name=f"advfeatures-worker-{i}") for i in range(max(1, min(jobs, len(tasks))))]
    waiting, ended, running = list(tasks), set(), 0
    try:
        for worker in workers:  # started before any task is sent: a put into the pipe waits for a reader
            worker.start()
        while waiting or running:
            while running < len(workers):  # at most one task per worker in flight: the order given is kept
                ready = next((t for t in waiting if all(a in ended for a in t.after)), None)
                if ready is None:
                    break
                waiting.remove(ready)
                inbox.put(ready)
                running += 1
            if not running:
                raise ValueError("tasks wait for each other in a cycle")
            try:
                kind, label, payload = messages.get(timeout=1.0)
            except queue.Empty:
                if not any(w.is_alive() for w in workers):
                    raise RuntimeError("every worker process ended before its tasks did (killed, or out of "
                                       "memory?)") from None
                continue
            if kind == "line":
                log(f"[{label}] {payload.strip()}")
            elif kind == "failed":
                raise payload
            else:
                key, result, seconds = payload
                ended.add(key)
                running -= 1
                yield key, result, seconds
        for _ in workers:  # every task ended: each worker leaves its loop (a terminated one would leave its
            inbox.put(None)  # queue semaphores to the resource tracker's warning at exit)
        for worker in workers:
            worker.join(timeout=10)
    finally:
        for worker in workers:  # daemon processes: never joined at exit, ended here whatever happened
            if worker.is_alive():
                worker.terminate()
        for worker in workers:
            if worker.pid is not None:  # started
                worker.join(timeout=5)


def _worker(inbox, messages, threads: int, parent: int, shared: object) -> None:
    """A worker process: runs tasks until told there are no more, and reports lines, results and failures on the
    one message queue (in order, so every line of a task arrives before its result)."""
    torch.set_num_threads(threads)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    worker = Worker(shared)
    while (task := inbox.get()) is not None:

        def log(message: str, label: str = task.label) -> None:
            messages.put(("line", label, message))

        t0 = time.perf_counter()
        try:
            result = task.fn(worker, *task.args, log)
        except Exception as err:  # the parent raises it; a failure whose exception cannot travel still names itself
            messages.put(("failed", task.label, _portable(err)))
            return
        messages.put(("done", task.label, (task.key, result, time.perf_counter() - t0)))


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
