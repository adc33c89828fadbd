"""The run folder: its layout, the stage declarations and their cache, and the checks before a run writes to it.

Layout of a run directory DIR (see ../shared/DESIGN.md):

    DIR/run.json                      which presets live here (and the settings fingerprint each last ran with)
    DIR/<preset>/results.json         the numbers, aggregated over seeds
    DIR/<preset>/models/NAME.safetensors, DIR/<preset>/datasets/NAME.safetensors   (seed 0)
    DIR/<preset>/seeds/<k>/...        the same for seed k > 0
    DIR/<preset>/stages/*.json        one record per finished stage (what resume trusts)
    DIR/<preset>/partial/<stage>/<n>/ a running construction's finished chunks (removed when the stage ends)
    DIR/theory/                       Section 4 figures and numbers
    DIR/results.md, DIR/report.html, DIR/figures/*.png

A stage is a declaration (`Stage`): its name, the settings its body reads, the stages it builds on, and the body.
A finished stage leaves the record DIR/<preset>/stages/<name>.json:

    {"result": {...}, "seconds": 12.3, "key": "...", "build": "...", "reads": {...}, "upstream": {...},
     "computed": {"commit": "...", "device": "...", "torch": "2.x", "threads": 1}}

`key` hashes exactly the settings the stage declares it reads (their values in `reads`) and the `build` of every
stage it builds on (`upstream`); `build` names one computation of the stage, new each time it runs. A record is
trusted only when its key is the key the stage has now and its artefacts validate. So a changed setting re-runs
the stages that read it and everything built from them, and nothing else; and a stage computed again for any
reason (a changed setting, a corrupt or deleted file, a deleted record) re-runs everything built from it: resume
never relies on training being deterministic. A record is written (atomically) only after its artefacts, so a
kill at any moment loses at most the stage in progress, and of a construction (D_R, D_NR, D_rand, ..., the
noise-started controls) only the batch in progress: its finished chunks wait in partial/<stage>/<n>/, bound to the
stage's key (construct.PartialChunks), until the stage ends.

`computed` says where the stage's numbers came from: the code's commit, the device, torch and the thread count. None
of these is in the key (a resumed run on a new commit or with another --jobs keeps what still holds, by design), but
each can change a seed's numbers, so results.json lists every configuration with its stages ("computed_under"), and
the report warns when a run's stages came from more than one.

Under torchrun every rank runs every stage (stages hold collectives: DDP training, sharded construction) unless
it is `main_only`; only rank 0 writes, and every rank takes the same cached/rebuild decision and the same build.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .distributed import ProcessGroup
from .errors import BadInputError, CorruptFileError
from .io import is_temporary_name, read_json, write_json_atomic
from .runlock import LOCK_NAME

KEY_SCHEME = 1  # part of every key: a change to what keys cover makes old records stale instead of wrongly trusted


@dataclass(frozen=True)
class Stage:
    """One `reproduce` stage, declared. Adding a stage is writing its body and one of these.

    `body(run, upstream)` computes the stage's result (a JSON-able dict): `run` is the seed's
    `experiments.context.PresetRun` (data, settings, fit / load / evaluate / relabel), `upstream` the results of
    the stages named in `needs`. While the body runs, `run` answers only the settings named in `reads` (dotted
    paths such as "relabel", "evaluation.steps", "constructed_train.D_det", or a run-level one: "data",
    "precision", "sources.D", ...; see `PresetRun.settings`), so the key cannot miss one.
    """

    name: str  # the record (stages/<name>.json), the log line and the key in results["seconds"]["stages"]
    body: Callable[[Any, dict], dict]
    reads: tuple[str, ...] | Callable[[Any], tuple[str, ...]] = ()  # a function of the run where the settings
    # read depend on a run-level choice (--full reads the full list of transfer architectures, not the default)
    needs: tuple[str, ...] = ()  # the stages whose artefacts or results the body uses (by what they provide)
    provides: str | None = None  # the name dependants use, where two variants of one stage exist (default: name)
    into: tuple[str, ...] | None = None  # where the result goes in the seed's results (None: nowhere)
    when: Callable[[Any], bool] | None = None  # the stage runs only where this is true (default: always)
    validate: Callable[[Any, dict], None] | None = None  # raises BadInputError on an unusable artefact
    record: Callable[[Any], str] | None = None  # the record's name where it depends on the run (default: name)
    identity: Callable[[Any, dict], str] | None = None  # for a stage whose artefacts are verified copies: their
    # content names the build, so re-installing the same file invalidates nothing (default: a new build each time)
    main_only: bool = False  # computed on rank 0 only (the others read its record)
    revision: int = 0  # raised when a fix changes what the body computes: records of the faulty body (same settings,
    # same upstream builds) are then computed again instead of trusted (part of the key from 1 on)
    heavy: bool = False  # far longer than any other stage (the from-noise inversions, 10x the steps): a free worker
    # takes it before any other ready stage, so it does not start last and run alone at the end

    @property
    def output(self) -> str:
        return self.provides or self.name

    def active(self, run) -> bool:
        return self.when is None or bool(self.when(run))

    def settings_read(self, run) -> tuple[str, ...]:
        return tuple(self.reads(run) if callable(self.reads) else self.reads)


def partial_folder(directory: Path, stage: str) -> Path:
    """Where stage `stage` keeps a construction's finished chunks while it runs (construct.PartialChunks)."""
    return directory / "partial" / stage


def stage_key(reads: dict, upstream: dict[str, str]) -> str:
    blob = json.dumps({"scheme": KEY_SCHEME, "reads": reads, "upstream": upstream}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class StageCache:
    """Runs stages once: a stage whose record has its current key (and whose artefacts validate) is loaded instead.

    `builds` holds the build of every stage run or loaded so far (by what it provides); `results` their results.
    """

    def __init__(self, directory: Path, log: Callable[[str], None], group: ProcessGroup | None = None,
                 status_seconds: float | None = None, where: dict | None = None):
        self.dir, self.log, self.group = directory, log, group or ProcessGroup()
        self.where = where or {}  # what a new record's "computed" says besides the thread count
        self.seconds: dict[str, float] = {}
        self.computed: dict[str, dict | None] = {}  # by record name: where each stage's numbers were computed
        self.builds: dict[str, str] = {}
        self.results: dict[str, dict] = {}
        self.status_seconds = status_seconds  # a "still running" line this often (None: never; progress bars)

    def run_stage(self, stage: Stage, run, *, finished: bool = False) -> dict:
        """Run (or load) a declared stage of `run`, a PresetRun (`settings`, `reading`, `seed`). `finished`: the
        stage has ended elsewhere (another worker process), so its record is loaded quietly, and a record that is
        missing or stale is an error instead of a reason to compute it again."""
        missing = [n for n in stage.needs if n not in self.builds]
        if missing:  # a declaration error, never a user's
            raise RuntimeError(f"stage {stage.name} needs {missing}, which did not run before it")
        paths = stage.settings_read(run)
        reads = run.settings(paths)
        if stage.revision:
            reads["stage_revision"] = stage.revision
        upstream = {n: self.builds[n] for n in stage.needs}
        inputs = {n: self.results[n] for n in stage.needs}
        name = stage.record(run) if stage.record else stage.name

        def compute() -> dict:
            with run.reading(stage.name, paths, key=stage_key(reads, upstream)):
                return stage.body(run, inputs)

        validate = (lambda result: stage.validate(run, result)) if stage.validate else None
        identity = (lambda result: stage.identity(run, result)) if stage.identity else None
        result = self.run(name, compute, reads=reads, upstream=upstream, validate=validate, identity=identity,
                          main_only=stage.main_only, output=stage.output, finished=finished)
        leftover = partial_folder(self.dir, stage.name)
        if self.group.is_main and leftover.exists():  # the stage has ended (its record written): chunks not needed
            shutil.rmtree(leftover, ignore_errors=True)
            with contextlib.suppress(OSError):
                leftover.parent.rmdir()  # when empty
        return result

    def run(self, name: str, compute: Callable[[], dict], *, reads: dict | None = None,
            upstream: dict[str, str] | None = None, validate: Callable[[dict], None] | None = None,
            identity: Callable[[dict], str] | None = None, main_only: bool = False, output: str | None = None,
            finished: bool = False) -> dict:
        """Load the record stages/NAME.json if it has the key of (`reads`, `upstream`) and `validate(result)` passes;
        else compute, write the record (rank 0) and give the stage a new build (or `identity(result)`)."""
        reads, upstream = reads or {}, upstream or {}
        key = stage_key(reads, upstream)
        record = self.dir / "stages" / f"{name}.json"
        data, problem = None, None
        if record.exists():
            try:
                data = read_json(record)
                if not isinstance(data, dict):
                    raise CorruptFileError(f"{record}: not a stage record")
                if data.get("key") != key or "result" not in data or "build" not in data:
                    data, problem = None, _what_changed(data, reads, upstream)
                elif validate:
                    validate(data["result"])
            except BadInputError as err:  # corrupt record or missing artefact: never trust, rebuild
                data, problem = None, f"cached record unusable ({err}); rebuilding"
        if self.group.all_agree(data is not None):
            return self._done(name, output, data["result"], data["build"], data.get("seconds", 0.0), cached=True,
                              quiet=finished, computed=data.get("computed"))
        if finished:  # never computed twice at once: the worker that ran it left no usable record
            raise RuntimeError(f"stage {name} ended in another worker but its record is unusable: "
                               f"{problem or 'missing'}")
        if problem is not None:
            self.log(f"  {name:<16} {problem}")
        self.group.barrier()  # every rank has read the record before rank 0 removes it
        if self.group.is_main:
            record.unlink(missing_ok=True)
        t0 = time.perf_counter()
        with status_lines(self.log, name, self.status_seconds):
            result = compute() if (self.group.is_main or not main_only) else None
        seconds = time.perf_counter() - t0
        if self.group.is_main:
            build = identity(result) if identity else secrets.token_hex(8)
            write_json_atomic(record, {"result": result, "seconds": seconds, "key": key, "build": build,
                                       "reads": reads, "upstream": upstream,
                                       "computed": {**self.where, "threads": torch.get_num_threads()}})
        self.group.barrier()
        written = read_json(record)  # every rank takes rank 0's build (and, for a main-only stage, its result)
        if result is None:
            result, seconds = written["result"], written["seconds"]
        return self._done(name, output, result, written["build"], seconds, cached=False,
                          computed=written.get("computed"))

    def _done(self, name: str, output: str | None, result: dict, build: str, seconds: float, cached: bool,
              quiet: bool = False, computed: dict | None = None) -> dict:
        self.seconds[name] = seconds
        self.computed[name] = computed
        self.builds[output or name], self.results[output or name] = build, result
        if not quiet:
            self.log(f"  {name:<16} cached" if cached else f"  {name:<16} {seconds:6.1f}s  {summarise(result)}")
        return result


def _what_changed(data: dict, reads: dict, upstream: dict[str, str]) -> str:
    """The log's reason for running a stage again: which settings changed, which upstream stage was rebuilt."""
    if "key" not in data:
        return "recorded by an earlier advfeatures (no key): runs again"
    before_reads, before_up = data.get("reads", {}), data.get("upstream", {})
    changed = [p for p in sorted(set(reads) | set(before_reads)) if reads.get(p) != before_reads.get(p)]
    rebuilt = [n for n in sorted(set(upstream) | set(before_up)) if upstream.get(n) != before_up.get(n)]
    parts = ([f"settings changed ({', '.join(changed)})"] if changed else []) + (
        [f"built on a new {', '.join(rebuilt)}"] if rebuilt else [])
    return "; ".join(parts or ["record incomplete"]) + ": runs again"


@contextmanager
def status_lines(log: Callable[[str], None], name: str, every: float | None):
    """While the block runs, log "<name> running for N min" every `every` seconds (where no progress bar shows
    that the run is alive: a log file, CI, nohup)."""
    if not every:
        yield
        return
    done, t0 = threading.Event(), time.perf_counter()

    def beat():
        while not done.wait(every):
            log(f"  {name:<16} running for {(time.perf_counter() - t0) / 60:.1f} min")

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def summarise(result: dict) -> str:
    keys = ("clean", "robust", "attack_success", "robust_model_reads_original", "relative_representation_error_mean")
    parts = [f"{k}={result[k]:.3f}" for k in keys if isinstance(result.get(k), float)]
    return " ".join(parts)


def require_files(folder: Path, names) -> None:
    for n in names:
        if not (folder / n).is_file():
            raise CorruptFileError(f"{folder / n} missing")


# ---------------------------------------------------------------- the folder before a run writes to it


def check_out_dir(out: Path, write_probe: bool = True) -> None:
    """Refuse a file, a non-empty folder that is not an advfeatures run, or a folder that cannot be written.

    A run folder made with other settings is accepted: its stages' keys decide what runs again.
    """
    if out.exists() and not out.is_dir():
        raise BadInputError(f"--out {out} is a file; give a folder")
    manifest = out / "run.json"
    if out.is_dir() and any(not _ours_in_passing(p.name) for p in out.iterdir()) and not manifest.exists():
        raise BadInputError(
            f"--out {out} is not empty and holds no advfeatures run (no run.json); choose a new or empty folder"
        )
    if manifest.exists():
        read_manifest(out)  # an unreadable one stops the run here, before any work
    if not write_probe:
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink(missing_ok=True)
    except OSError as err:
        raise BadInputError(f"--out {out} is not writable ({err.strerror}); choose another folder") from err


def _ours_in_passing(name: str) -> bool:
    """The run lock and temporary files: ours, but no sign that a folder holds a run."""
    return name == LOCK_NAME or is_temporary_name(name)


def read_manifest(out: Path) -> dict:
    """DIR/run.json ({"advfeatures": version, "presets": {name: fingerprint}}), or an empty one."""
    manifest = out / "run.json"
    data = read_json(manifest) if manifest.exists() else {}
    if not isinstance(data, dict) or not isinstance(data.get("presets", {}), dict):
        raise BadInputError(f"{manifest} is not an advfeatures run manifest; delete it and run again")
    return data


def changed_presets(out: Path, fingerprints: dict[str, str]) -> list[str]:
    """The presets whose last run in `out` had other settings (their stages' keys say which stages run again)."""
    previous = read_manifest(out).get("presets", {})
    return [name for name, fp in fingerprints.items() if name in previous and previous[name] != fp]


def write_manifest(out: Path, version: str, fingerprints: dict[str, str]) -> None:
    known = read_manifest(out).get("presets", {})
    write_json_atomic(out / "run.json", {"advfeatures": version, "presets": {**known, **fingerprints}})
