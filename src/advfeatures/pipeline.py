"""`reproduce`: the order of the stages, and the run around them (options, pre-flight checks, seeds, report).

The stages themselves are declarations in experiments/<name>/stages.py (runfolder.Stage: a body, the settings it
reads, the stages it builds on); the run folder, its stage cache and keys are runfolder.py; one seed's data and
helpers are experiments/context.py (PresetRun); results.json's assembly and the means over seeds are results.py;
the report is report.py. This module is the only one that knows every stage and the order they run in.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .construct import ConstructedDataset
from .data import as_tensors, load_dataset, load_dataset_file
from .data.base import TensorImageDataset
from .device import resolve_device
from .distributed import ProcessGroup
from .errors import BadInputError
from .experiments.attack_check import stages as attack_check
from .experiments.context import PresetRun
from .experiments.controls import stages as controls
from .experiments.figure2 import stages as figure2
from .experiments.followups import stages as followups
from .experiments.robust_source import stages as robust_source
from .experiments.sources import fingerprint_suffix, inspect_given_model, sources_record
from .experiments.sources import stages as sources
from .experiments.theory.stages import run_theory_stage
from .experiments.transfer import stages as transfer
from .io import write_json_atomic
from .jobs import Task, Unit, Worker, plan_jobs, run_tasks
from .presets import DEFAULT_PRESETS, Preset, get_preset
from .results import format_table, machine_record, new_seed_results, place, preset_results
from .runfolder import Stage, changed_presets, check_out_dir, write_manifest
from .runlock import run_folder_lock
from .training import ModelSpec, TrainConfig
from .validation import check_run_options

RELEASED_FOLDERS = {
    "D_R": "d_robust_CIFAR", "D_NR": "d_non_robust_CIFAR", "D_rand": "drand_CIFAR", "D_det": "ddet_CIFAR",
}

# Every stage of one seed, in the order they run (each after the stages it needs; a stage whose `when` is false
# for this run is skipped).
STAGES: tuple[Stage, ...] = (
    *sources.STAGES,  # D, D_adv (trained, or given)
    *figure2.STAGES,  # construct_D_R ... construct_D_det, D_R ... D_det, D_det_unleaked, audit
    *attack_check.STAGES,
    *transfer.STAGES,
    *robust_source.STAGES,
    *followups.STAGES,  # followup_ensemble, construct_D_det_bugs, followup_nakkiran, _squares, _goh, _wallace
    *controls.STAGES,  # --controls: D_rand_shortcut, D_det_shortcut, D_rand_no_true, D_R_noise, D_NR_noise
)


@dataclass
class Overrides:
    """Quick-run knobs on top of a preset. Each changes settings, so in an existing run folder the stages that read
    them (and what is built from those) run again; runs never mix."""

    limit: int | None = None  # first N training images (and N // 2 test images)
    epochs: int | None = None  # every training
    steps: int | None = None  # cap on inversion / relabelling / evaluation steps
    eval_restarts: int | None = None  # APGD-CE runs per example in evaluation
    eval_targets: int | None = None  # APGD-T target classes per example in evaluation
    width: int | None = None  # `width` option for every architecture that has one
    quick: bool = False  # limit 256, 2 epochs, 5 steps, 1 restart, 1 target, width 8, one curve point, attack check
    # on 32 images: a smoke test


@dataclass
class RunOptions:
    out: Path = Path("runs/default")
    presets: tuple[str, ...] = DEFAULT_PRESETS
    seeds: int = 1
    device: str = "auto"
    overrides: Overrides = field(default_factory=Overrides)
    data_root: str | None = None
    download: bool = False
    released: Path | None = None
    standard_model: Path | None = None  # a checkpoint to use as D instead of training it (experiments/sources/)
    robust_model: Path | None = None  # a checkpoint to use as D_adv instead of training it
    full: bool = False  # all transfer architectures
    theory: bool = True
    amp: bool | None = None  # bf16 autocast for training and construction; None: the preset's choice
    channels_last: bool | None = None  # NHWC weights and activations; None: the preset's choice
    compile: bool | str = False  # torch.compile every model (training, attacks, inversion); True or a backend
    autoattack: bool = False  # attack_check with AutoAttack on the whole test set, recorded beside our numbers
    followups: bool = True  # the Distill discussion's experiments (experiments/followups/)
    controls: bool = False  # the shortcut / no-true-label / from-noise controls (experiments/controls/)
    progress: bool = True  # progress bars (the CLI turns them off when stderr is not a terminal)
    status_seconds: float = 60.0  # without progress bars: a "still running" line this often during a long stage
    group: ProcessGroup = field(default_factory=ProcessGroup)  # torchrun ranks (a group of one without torchrun)
    # worker processes taking stages of any (preset, seed) run; None: one per run, at least 2, at most the cores
    # (jobs.py); 1: everything in this process
    jobs: int | None = 1


def apply_overrides(preset: Preset, ov: Overrides) -> Preset:
    p = dataclasses.replace(preset)
    if ov.quick:
        ov = dataclasses.replace(
            ov, limit=ov.limit or 256, epochs=ov.epochs or 2, steps=ov.steps or 5,
            eval_restarts=ov.eval_restarts or 1, eval_targets=1 if ov.eval_targets is None else ov.eval_targets,
            width=ov.width or 8,
        )
        p.evaluation = dataclasses.replace(p.evaluation, curve_eps=[p.threat.eps], check_limit=32,
                                           check_method="own")
    if ov.limit:
        p.limit_train, p.limit_test = ov.limit, max(ov.limit // 2, 10)

    def train(c: TrainConfig) -> TrainConfig:
        return dataclasses.replace(c, epochs=ov.epochs) if ov.epochs is not None else c

    def model(m: ModelSpec) -> ModelSpec:
        if ov.width is None or m.arch == "mlp":
            return m
        return ModelSpec(m.arch, {**m.options, "width": ov.width})

    p.train, p.adversarial_train = train(p.train), train(p.adversarial_train)
    if ov.epochs is not None:  # "every training" includes the follow-ups' squares network
        p.followups = dataclasses.replace(p.followups, squares=dataclasses.replace(p.followups.squares,
                                                                                   epochs=ov.epochs))
    p.constructed_train = {k: train(v) for k, v in p.constructed_train.items()}
    p.model = model(p.model)
    p.transfer_models = [model(m) for m in p.transfer_models]
    p.transfer_models_full = [model(m) for m in p.transfer_models_full]
    if ov.steps is not None:
        p.inversion = dataclasses.replace(p.inversion, steps=min(p.inversion.steps, ov.steps))
        p.relabel = dataclasses.replace(p.relabel, steps=min(p.relabel.steps, ov.steps))
        p.evaluation = dataclasses.replace(p.evaluation, steps=min(p.evaluation.steps, ov.steps))
    if ov.eval_restarts is not None:
        p.evaluation = dataclasses.replace(p.evaluation, restarts=ov.eval_restarts)
    if ov.eval_targets is not None:
        p.evaluation = dataclasses.replace(p.evaluation, targets=ov.eval_targets,
                                           curve_targets=min(p.evaluation.curve_targets, ov.eval_targets))
    return p


# ---------------------------------------------------------------- one seed


def active_stages(run: PresetRun, stages: tuple[Stage, ...] = STAGES) -> list[Stage]:
    """The stages that run for this seed, in order (a stage whose `when` is false for it is left out)."""
    return [stage for stage in stages if stage.active(run)]


def run_seed(run: PresetRun, stages: tuple[Stage, ...] = STAGES) -> dict:
    """Every active stage in order (cached where its record still holds); the seed's results."""
    done = {stage.name: run.cache.run_stage(stage, run) for stage in active_stages(run, stages)}
    return seed_results(run, done, dict(run.cache.seconds), stages, computed=dict(run.cache.computed))


def seed_results(run: PresetRun, done: dict[str, dict], seconds: dict[str, float],
                 stages: tuple[Stage, ...] = STAGES, computed: dict[str, dict | None] | None = None) -> dict:
    """One seed's results from its stages' results (`done`, by stage name), seconds and where each was computed (by
    record name), wherever the stages ran."""
    results = new_seed_results()
    for stage in active_stages(run, stages):
        if stage.into and stage.name in done:
            place(results, stage.into, done[stage.name])
    if run.autoattack_beside_ours:
        attack_check.autoattack_beside_ours(results)
    results["seconds"] = seconds
    results["computed"] = computed or {}
    results["precision"] = "bf16 autocast (training, construction); float32 evaluation" if run.amp else "float32"
    results["memory_format"] = "channels_last" if run.channels_last else "contiguous"
    return results


# ---------------------------------------------------------------- data and pre-flight checks


def load_preset_data(preset: Preset, options: RunOptions) -> dict:
    """Load (and validate) everything a preset needs before any long work or any write to --out."""
    kwargs = dict(preset.dataset_options)
    if preset.dataset not in ("synthetic", "digits"):
        kwargs["download"] = options.download
    train = as_tensors(load_dataset(preset.dataset, "train", options.data_root, **kwargs))
    test = as_tensors(load_dataset(preset.dataset, "test", options.data_root, **kwargs))
    train, test = _limited(train, preset.limit_train), _limited(test, preset.limit_test)
    num_classes = max(train.num_classes, test.num_classes)
    data = {"train": train, "test": test, "num_classes": num_classes}
    if options.released:
        data["released"] = load_released(Path(options.released), num_classes, train.image_shape, preset.limit_train)
    if options.standard_model or options.robust_model:
        paths = {"D": options.standard_model, "D_adv": options.robust_model}
        data["given"] = {name: inspect_given_model(name, path, train.image_shape, num_classes, preset.name)
                         for name, path in paths.items() if path}
    return data


def _limited(ds: TensorImageDataset, n: int | None) -> TensorImageDataset:
    if n is None or n >= len(ds):
        return ds
    limited = ds.subset(n)
    if hasattr(ds, "features"):
        limited.features = ds.features
    return limited


def load_released(root: Path, num_classes: int, image_shape, limit: int | None) -> dict[str, ConstructedDataset]:
    if not root.is_dir():
        raise BadInputError(f"{root}: --released must be the folder holding {', '.join(RELEASED_FOLDERS.values())}")
    out = {}
    for name, folder in RELEASED_FOLDERS.items():
        data = load_dataset_file(root / folder, num_classes)
        if tuple(data["images"].shape[1:]) != tuple(image_shape):
            raise BadInputError(
                f"{root / folder}: images are {tuple(data['images'].shape[1:])} but the preset's are {image_shape}"
            )
        images, labels = data["images"][:limit], data["labels"][:limit]
        out[name] = ConstructedDataset(images, labels, labels.clone(), {"source": "released"})
    return out


# ---------------------------------------------------------------- the whole run


def log_line(message: str) -> None:
    """The default log: one line, flushed at once, so a log file or CI shows each stage when it ends."""
    print(message, flush=True)


def reproduce(options: RunOptions, log: Callable[[str], None] = log_line) -> dict[str, dict]:
    """Run every preset (every seed), the theory stage and the report; returns {preset: results}.

    Under torchrun (options.group of several ranks) every rank calls this; rank 0 logs and writes.
    """
    t_start = time.perf_counter()
    group = options.group
    if not group.is_main:
        log = _silent
    if options.seeds < 1:
        raise BadInputError("--seeds must be at least 1")
    check_run_options(options)  # presets, seeds, device, compile backend, overrides: before any work (validation.py)
    presets = [apply_overrides(get_preset(name), options.overrides) for name in options.presets]
    if options.released and any(p.dataset != "cifar10" for p in presets):
        raise BadInputError("--released holds the authors' CIFAR-10 datasets; use it with --preset cifar10 only")
    device = resolve_device(options.device)
    jobs = plan_jobs(options.jobs, len(presets) * options.seeds, device.type, group.distributed)
    if options.autoattack:
        from .autoattack import require_autoattack

        require_autoattack()  # before any long work
    data = {p.name: load_preset_data(p, options) for p in presets}  # every input checked before any write
    out = Path(options.out)
    fingerprints = {p.name: p.fingerprint() + ("-released" if options.released else "")
                    + fingerprint_suffix(data[p.name].get("given", {})) for p in presets}
    check_out_dir(out, write_probe=group.is_main)
    group.barrier()  # every rank has checked --out before rank 0 writes to it
    # one run per folder: run.lock is held from here to the end (a second run is refused, naming this one); under
    # it run.json is checked again and temporaries left by an interrupted run are removed (runlock.py)
    with run_folder_lock(out, group, log, recheck=lambda: check_out_dir(out, write_probe=False)):
        return _reproduce_locked(options, log, presets, data, out, fingerprints, t_start, jobs)


def _reproduce_locked(options: RunOptions, log, presets: list[Preset], data: dict, out: Path,
                      fingerprints: dict[str, str], t_start: float, jobs: tuple[int, int]) -> dict[str, dict]:
    """`reproduce` after its pre-flight checks, with the run lock held."""
    group = options.group
    for name in changed_presets(out, fingerprints):
        log(f"[{name}] {out / name} was last run with other settings: the stages that read them run again")
    if group.is_main:
        write_manifest(out, __version__, fingerprints)

    theory = run_theory_stage(out, log, group) if options.theory else None
    jobs, threads = jobs  # worker processes, torch threads in each
    machine = machine_record(resolve_device(options.device), jobs, threads if jobs > 1 else None)
    from .report import write_report

    units = [Unit(p.name, seed) for p in presets for seed in range(options.seeds)]
    by_name = {p.name: p for p in presets}
    per_seed: dict[str, dict[int, dict]] = {p.name: {} for p in presets}
    seconds: dict[str, float] = {p.name: 0.0 for p in presets}
    all_results: dict[str, dict] = {}
    report_made: dict = {}  # a finished preset's report blocks and figures, drawn once
    if jobs > 1:
        finished = _in_workers(units, by_name, out, data, options, jobs, threads, log)
    else:
        finished = _in_process(units, by_name, out, data, options, log)
    for unit, result, unit_seconds in finished:
        per_seed[unit.preset][unit.seed] = result
        seconds[unit.preset] += unit_seconds
        p = by_name[unit.preset]
        if len(per_seed[p.name]) < options.seeds:
            continue
        given = data[p.name].get("given", {})
        results = preset_results(p, [per_seed[p.name][s] for s in range(options.seeds)],
                                 num_classes=data[p.name]["num_classes"], released=options.released,
                                 sources=sources_record(given, options.seeds), seconds=seconds[p.name],
                                 theory=theory, machine=machine)
        all_results[p.name] = results
        if group.is_main:  # the report as soon as a preset finishes, rewritten as the next ones do
            write_json_atomic(out / p.name / "results.json", results)
            write_report(out, {q.name: all_results[q.name] for q in presets if q.name in all_results}, theory,
                         pending=[q.name for q in presets if q.name not in all_results], made=report_made)
        log(format_table(results))
    group.barrier()
    log(f"done in {time.perf_counter() - t_start:.0f}s: {out / 'report.html'}")
    return {q.name: all_results[q.name] for q in presets}


def _header(p: Preset, seeds: int) -> str:
    return f"[{p.name}] {p.description}; threat model {p.threat.norm} eps {p.threat.eps}; seeds {seeds}"


def _seed_dir(out: Path, unit: Unit) -> Path:
    return out / unit.preset if unit.seed == 0 else out / unit.preset / "seeds" / str(unit.seed)


def _in_process(units: list[Unit], presets: dict[str, Preset], out: Path, data: dict, options: RunOptions,
                log: Callable[[str], None]):
    """The units one after another in this process (one core's worth of work, a GPU, or torchrun ranks); yields
    (unit, its results, seconds) as each ends."""
    for unit in units:
        p = presets[unit.preset]
        if unit.seed == 0:
            log(_header(p, options.seeds))
        log(f" seed {unit.seed}:")
        t0 = time.perf_counter()
        result = run_seed(PresetRun(p, unit.seed, _seed_dir(out, unit), data[p.name], options, log))
        yield unit, result, time.perf_counter() - t0


def _in_workers(units: list[Unit], presets: dict[str, Preset], out: Path, data: dict, options: RunOptions,
                jobs: int, threads: int, log: Callable[[str], None]):
    """Every unit's stages as tasks (stage_tasks) on `jobs` worker processes (jobs.py). Yields (unit, its results,
    the sum of its stages' seconds) as each unit's last stage ends."""
    worker_options = dataclasses.replace(options, progress=False)  # no bars from several processes at once
    runs = {u: PresetRun(presets[u.preset], u.seed, _seed_dir(out, u), data[u.preset], worker_options, log)
            for u in units}
    active = {u: active_stages(runs[u]) for u in units}
    tasks = stage_tasks(active)
    log(f"{len(units)} run{'s' * (len(units) > 1)} ({', '.join(u.label for u in units)}): {len(tasks)} stages on "
        f"{jobs} worker processes, {threads} thread{'s' * (threads > 1)} each")
    for p in presets.values():
        log(_header(p, options.seeds))
    shared = {u: (presets[u.preset], _seed_dir(out, u), data[u.preset], worker_options) for u in units}
    done: dict[Unit, dict[str, tuple[dict, str, float, dict | None]]] = {u: {} for u in units}
    for (unit, name), ended_stage, _ in run_tasks(tasks, jobs, threads, log, shared):
        done[unit][name] = ended_stage
        if len(done[unit]) == len(active[unit]):
            ended = done[unit]
            record_seconds = {ended[s.name][1]: ended[s.name][2] for s in active[unit]}  # in stage order
            computed = {ended[s.name][1]: ended[s.name][3] for s in active[unit]}
            results = seed_results(runs[unit], {n: r for n, (r, _, _, _) in ended.items()}, record_seconds,
                                   computed=computed)
            yield unit, results, sum(record_seconds.values())


def stage_tasks(active: dict[Unit, list[Stage]]) -> list[Task]:
    """Each unit's active stages as tasks, each after the stages it needs, in the order a free worker takes them
    when several are ready: a stage declared heavy first, then the stage that the most stages build on (so the long
    chains start first), then the earlier unit's, then stage order. It needs no cost estimates: simulated on the
    default run's measured stage times (benchmarks/speed/stage_order.py), it ends as early as ordering by the
    critical path (353 s) and ends the first preset at 314 s instead of at the end (stage order: 351 s). The one
    exception is declared: the `--controls` from-noise inversions (hours on cifar10_cpu, against minutes for the
    rest) have one dependant each, so without `heavy` they started last and ran alone while the other workers
    idled."""
    tasks, priority = [], {}
    for i, (unit, stages) in enumerate(active.items()):
        provider = {stage.output: stage.name for stage in stages}
        built_on = {stage.name: 0 for stage in stages}
        for stage in stages:
            for upstream in _upstream(stage, stages):
                built_on[upstream.name] += 1
        for j, stage in enumerate(stages):
            tasks.append(Task((unit, stage.name), unit.label, _stage_task, (unit, stage.name),
                              after=tuple((unit, provider[n]) for n in stage.needs)))
            priority[(unit, stage.name)] = (not stage.heavy, -built_on[stage.name], i, j)
    return sorted(tasks, key=lambda t: priority[t.key])


def _stage_task(worker: Worker, unit: Unit, name: str,
                log: Callable[[str], None]) -> tuple[dict, str, float, dict | None]:
    """In a worker process: one stage of one unit; (its result, its record's name, its seconds, where it was
    computed). The stages it builds on have ended (in this worker or another): their records are loaded, quietly,
    in stage order."""
    runs = worker.memo.setdefault("runs", {})
    if unit not in runs:
        preset, directory, data, options = worker.shared[unit]
        runs[unit] = PresetRun(preset, unit.seed, directory, data, options, log)
    run = runs[unit]
    stages = active_stages(run)
    stage = next(s for s in stages if s.name == name)
    for upstream in _upstream(stage, stages):
        if upstream.output not in run.cache.builds:
            run.cache.run_stage(upstream, run, finished=True)
    result = run.cache.run_stage(stage, run)
    record = stage.record(run) if stage.record else stage.name
    return result, record, run.cache.seconds[record], run.cache.computed[record]


def _upstream(stage: Stage, stages: list[Stage]) -> list[Stage]:
    """Every stage `stage` builds on, directly or not, in stage order."""
    by_output = {s.output: s for s in stages}
    needed: set[str] = set()
    pending = list(stage.needs)
    while pending:
        output = pending.pop()
        if output not in needed:
            needed.add(output)
            pending.extend(by_output[output].needs)
    return [s for s in stages if s.output in needed]


def _silent(message: str) -> None:
    """The log of ranks other than 0."""
