"""The `reproduce` stages, their cache and resume; the only module that knows about presets and run folders.

Layout of a run directory DIR (see ../shared/DESIGN.md):

    DIR/run.json                      which presets (and settings fingerprints) live here
    DIR/<preset>/results.json         the numbers, aggregated over seeds
    DIR/<preset>/models/NAME.safetensors, DIR/<preset>/datasets/NAME.safetensors   (seed 0)
    DIR/<preset>/seeds/<k>/...        the same for seed k > 0
    DIR/<preset>/stages/*.json        one record per finished stage (what resume trusts)
    DIR/theory/                       Section 4 figures and numbers
    DIR/results.md, DIR/report.html, DIR/figures/*.png

A stage's record is written (atomically) only after its artefacts, so a kill at any moment loses at most the
stage in progress; a record whose artefacts fail validation is discarded and the stage rebuilt.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import __version__
from .construct import (
    ConstructedDataset,
    build_non_robust_dataset,
    build_relabelled_dataset,
    build_robust_dataset,
    inversion_diagnostics,
    relabelled_diagnostics,
)
from .data import as_tensors, load_dataset, load_dataset_file, save_dataset_file
from .data.base import TensorImageDataset
from .device import bf16_is_fast, compile_model, resolve_device
from .distributed import ProcessGroup, gather_shards
from .errors import BadInputError, CorruptFileError
from .evaluation import clean_accuracy, predict, robust_accuracy
from .io import is_temporary_name, load_tensors, read_json, write_json_atomic
from .models import load_model, save_model
from .presets import DEFAULT_PRESETS, Preset, get_preset
from .runlock import LOCK_NAME, run_folder_lock
from .stages.followups import run_followups
from .stages.given_sources import check_installed, fingerprint_suffix, inspect_given_model, install, sources_record
from .stages.robust_source import run_robust_source
from .stages.transfer import run_transfer
from .training import ModelSpec, TrainConfig, channel_stats, train_new_model
from .validation import check_run_options

TRAINED_SETS = ("D_R", "D_NR", "D_rand", "D_det")
RELEASED_FOLDERS = {
    "D_R": "d_robust_CIFAR", "D_NR": "d_non_robust_CIFAR", "D_rand": "drand_CIFAR", "D_det": "ddet_CIFAR",
}


@dataclass
class Overrides:
    """Quick-run knobs on top of a preset (each changes the fingerprint, so runs never mix)."""

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
    standard_model: Path | None = None  # a checkpoint to use as D instead of training it (stages/given_sources.py)
    robust_model: Path | None = None  # a checkpoint to use as D_adv instead of training it
    full: bool = False  # all transfer architectures
    theory: bool = True
    amp: bool = False
    channels_last: bool = False  # NHWC weights and activations (faster convolutions on tensor cores)
    compile: bool | str = False  # torch.compile every model (training, attacks, inversion); True or a backend
    autoattack: bool = False  # attack_check with AutoAttack on the whole test set, recorded beside our numbers
    followups: bool = True  # the Distill discussion's experiments (stages/followups.py)
    progress: bool = True  # progress bars (the CLI turns them off when stderr is not a terminal)
    status_seconds: float = 60.0  # without progress bars: a "still running" line this often during a long stage
    group: ProcessGroup = field(default_factory=ProcessGroup)  # torchrun ranks (a group of one without torchrun)


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


# ---------------------------------------------------------------- stage cache


class StageCache:
    """Runs named stages once: a stage whose record exists (and whose artefacts validate) is loaded instead.

    Under torchrun every rank runs every stage (stages hold collectives: DDP training, sharded construction)
    unless `main_only`; only rank 0 writes the record, and every rank takes the same cached/rebuild decision.
    """

    def __init__(self, directory: Path, log: Callable[[str], None], group: ProcessGroup | None = None,
                 status_seconds: float | None = None):
        self.dir, self.log, self.group = directory, log, group or ProcessGroup()
        self.seconds: dict[str, float] = {}
        self.status_seconds = status_seconds  # a "still running" line this often (None: never; progress bars)

    def run(self, name: str, compute: Callable[[], dict], validate: Callable[[], None] | None = None,
            main_only: bool = False) -> dict:
        record = self.dir / "stages" / f"{name}.json"
        data, problem = None, None
        if record.exists():
            try:
                data = read_json(record)
                if validate:
                    validate()
                if "result" not in data:
                    raise KeyError("result")
            except (BadInputError, KeyError) as err:  # corrupt or missing artefact: never trust, rebuild
                data, problem = None, err
        if self.group.all_agree(data is not None):
            self.seconds[name] = data.get("seconds", 0.0)
            self.log(f"  {name:<16} cached")
            return data["result"]
        if problem is not None:
            self.log(f"  {name:<16} cached record unusable ({problem}); rebuilding")
        self.group.barrier()  # every rank has read the record before rank 0 removes it
        if self.group.is_main:
            record.unlink(missing_ok=True)
        t0 = time.perf_counter()
        with status_lines(self.log, name, self.status_seconds):
            result = compute() if (self.group.is_main or not main_only) else None
        seconds = time.perf_counter() - t0
        if self.group.is_main:
            write_json_atomic(record, {"result": result, "seconds": seconds})
        self.group.barrier()
        if result is None:  # a main-only stage on another rank: read what rank 0 computed
            written = read_json(record)
            result, seconds = written["result"], written["seconds"]
        self.seconds[name] = seconds
        self.log(f"  {name:<16} {seconds:6.1f}s  {summarise(result)}")
        return result


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


# ---------------------------------------------------------------- one preset, one seed


class PresetRun:
    """Everything one seed of one preset needs: data on the device, the cache, and the stage bodies."""

    def __init__(self, preset: Preset, seed: int, directory: Path, data: dict, options: RunOptions, log):
        self.p, self.seed, self.dir, self.opts, self.log = preset, seed, directory, options, log
        self.device = resolve_device(options.device)
        self.group = options.group
        self.train, self.test = data["train"], data["test"]
        self.train_x, self.train_y = self.train.images.to(self.device), self.train.labels.to(self.device)
        self.test_x, self.test_y = self.test.images.to(self.device), self.test.labels.to(self.device)
        self.num_classes = data["num_classes"]
        self.mean, self.std = channel_stats(self.train.images)
        self.cache = StageCache(directory, log, self.group, None if options.progress else options.status_seconds)
        self.released = data.get("released")
        self.given = data.get("given", {})  # {"D" / "D_adv": GivenModel}: sources used instead of trained
        self.features = getattr(self.train, "features", None)  # planted ground truth (synthetic only)
        # bf16 for training and construction (where the device has it); evaluation stays float32, so a robust
        # accuracy never depends on a lower-precision attack
        self.amp = (options.amp or preset.amp) and bf16_is_fast(self.device)
        self.channels_last = options.channels_last or preset.channels_last

    # -- models
    def model_path(self, name: str) -> Path:
        return self.dir / "models" / f"{name}.safetensors"

    def dataset_path(self, name: str) -> Path:
        return self.dir / "datasets" / f"{name}.safetensors"

    def fit(self, name: str, images, labels, config: TrainConfig, spec: ModelSpec | None = None):
        config = dataclasses.replace(
            config, seed=config.seed + 1000 * self.seed, amp=self.amp, compile=self.opts.compile,
            channels_last=self.channels_last,
        )
        model, history = train_new_model(
            spec or self.p.model, images, labels, self.num_classes, config, mean=self.mean, std=self.std,
            progress=self.opts.progress and self.group.is_main, desc=name,
            checkpoint=self.dir / "models" / f".{name}.checkpoint",
            group=self.group,
        )
        if self.group.is_main:
            save_model(model, self.model_path(name), preset=self.p.name, seed=str(self.seed),
                       train=config.as_dict())
        self.group.barrier()
        return model, history

    def load(self, name: str):
        model = load_model(self.model_path(name), self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return compile_model(model, self.opts.compile) if self.opts.compile else model

    def evaluate(self, model) -> dict:
        """Clean and full-strength robust accuracy at the threat model on the whole test set, and a curve over eps
        (the threat-model point of the curve is the full-strength number when the curve uses the whole test set)."""
        ev, threat = self.p.evaluation, self.p.threat
        attack = dict(steps=ev.steps, restarts=ev.restarts, seed=self.seed, amp=False,
                      progress=self.opts.progress and self.group.is_main)
        out = {
            "clean": clean_accuracy(model, self.test_x, self.test_y),
            "robust": robust_accuracy(model, self.test_x, self.test_y, threat.norm, threat.eps,
                                      targets=ev.targets, **attack),
        }
        n = min(ev.curve_limit or self.test_x.shape[0], self.test_x.shape[0])
        xs, ys = self.test_x[:n], self.test_y[:n]
        whole = n == self.test_x.shape[0]
        curve = {"0": out["clean"] if whole else clean_accuracy(model, xs, ys)}
        for eps in ev.curve_eps:
            if whole and eps == threat.eps:
                curve[f"{eps:g}"] = out["robust"]
            else:
                curve[f"{eps:g}"] = robust_accuracy(
                    model, xs, ys, threat.norm, eps, targets=ev.curve_targets, **attack
                )
        out["curve"] = curve
        out["curve_images"] = int(n)
        out["curve_targets"] = ev.curve_targets
        return out

    def train_and_evaluate(self, name: str, images, labels, config: TrainConfig) -> dict:
        def compute():
            model, history = self.fit(name, images, labels, config)
            return {**self.evaluate(model), "train_seconds": history["seconds"], "train_images": int(len(labels))}

        return self.cache.run(name, compute, validate=lambda: load_model(self.model_path(name)))

    def source(self, name: str, config: TrainConfig) -> dict:
        """D or D_adv: trained here, or the given checkpoint (--standard-model / --robust-model) evaluated."""
        if name not in self.given:
            return self.train_and_evaluate(name, self.train_x, self.train_y, config)
        given, path = self.given[name], self.model_path(name)

        def compute():
            if self.group.is_main:
                install(given, path)  # the run's own byte-for-byte copy: what every later stage loads
                (self.dir / "stages" / f"{name}.json").unlink(missing_ok=True)  # never a trained record for it
            self.group.barrier()
            return {**self.evaluate(self.load(name)), "given": given.record()}

        return self.cache.run(f"given_{name}", compute, validate=lambda: check_installed(given, path))

    # -- constructed datasets
    def constructed(self, name: str, build: Callable[[], ConstructedDataset], diagnose: Callable) -> dict:
        path = self.dataset_path(name)

        def compute():
            ds = build()
            ds.images = gather_shards(ds.images, self.group)  # each rank built its own chunks
            if self.group.is_main:
                save_dataset_file(path, ds.images, ds.labels)
                self._save_originals(name, ds.original_labels)
            self.group.barrier()
            return diagnose(ds)

        return self.cache.run(f"construct_{name}", compute, validate=lambda: load_dataset_file(path))

    def _save_originals(self, name: str, original_labels: torch.Tensor) -> None:
        from .io import save_tensors

        save_tensors(self.dir / "datasets" / f"{name}.original_labels.safetensors",
                     {"original_labels": original_labels}, {"dataset": name})

    def load_constructed(self, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        data = load_dataset_file(self.dataset_path(name), self.num_classes)
        original = load_tensors(self.dir / "datasets" / f"{name}.original_labels.safetensors",
                                required=("original_labels",))[0]["original_labels"]
        return data["images"].to(self.device), data["labels"].to(self.device), original.to(self.device)

    def audit(self, images, labels, original=None) -> dict | None:
        if self.features is None:
            return None
        return self.features.audit(images.cpu(), labels.cpu(), None if original is None else original.cpu())

    # -- the stages
    def run(self) -> dict:
        p, results = self.p, {"accuracy": {}, "construction": {}}
        acc = results["accuracy"]
        acc["D"] = self.source("D", p.train)
        acc["D_adv"] = self.source("D_adv", p.adversarial_train)
        standard, robust = self.load("D"), self.load("D_adv")
        if self.features is not None:
            results["audit"] = {"D": self.audit(self.train_x, self.train_y)}
        results["construction"] = self.build_all(standard, robust)
        for name in TRAINED_SETS:
            images, labels, original = self.load_constructed(name)
            acc[name] = self.train_and_evaluate(name, images, labels, p.constructed_train[name])
            if self.features is not None:
                results["audit"][name] = self.audit(images, labels, original if name in ("D_rand", "D_det") else None)
        acc["D_det_unleaked"] = self.unleaked_det(robust)
        results["attack_check"] = self.attack_check(acc)
        results["transfer"] = self.cache.run("transfer", lambda: run_transfer(self, standard))
        results["robust_source"] = self.cache.run("robust_source", lambda: run_robust_source(self, robust))
        if self.opts.followups:
            results["followups"] = run_followups(self, standard, robust, acc)
        results["seconds"] = dict(self.cache.seconds)
        results["precision"] = "bf16 autocast (training, construction); float32 evaluation" if self.amp else "float32"
        return results

    def attack_check(self, acc: dict) -> dict:
        """The default evaluation against another attack family (stages/attack_check.py); with --autoattack, on the
        whole test set, and AutoAttack's number is recorded beside ours in `acc`."""
        from .stages.attack_check import CHECKED, check_method, run_attack_check

        own = self.p.evaluation.check_method == "own" and not self.opts.autoattack
        method = "own" if own else check_method(required=self.opts.autoattack)
        limit = None if self.opts.autoattack else self.p.evaluation.check_limit
        n = min(limit or self.test_x.shape[0], self.test_x.shape[0])
        names = [m for m in CHECKED if m in acc and "robust" in acc[m]]

        def compute():
            models = {m: self.load(m) for m in names}
            defaults = {m: acc[m]["robust"] for m in names} if n == self.test_x.shape[0] else None
            return run_attack_check(models, self.test_x[:n], self.test_y[:n], self.p.threat, self.p.evaluation,
                                    method=method, seed=self.seed, defaults=defaults)

        result = self.cache.run(f"attack_check_{method}_{n}", compute, main_only=True)
        if self.opts.autoattack:
            for m in names:
                acc[m]["autoattack"] = result["models"][m]["check"]
        return result

    def build_all(self, standard, robust) -> dict:
        p, x, y = self.p, self.train_x, self.train_y
        common = dict(seed=self.seed, amp=self.amp, progress=self.opts.progress and self.group.is_main,
                      shard=self.group.shard)
        inv = dict(steps=p.inversion.steps, step_size=p.inversion.step_size, start=p.inversion.start,
                   tolerance=p.inversion.tolerance, **common)
        rel = dict(num_classes=self.num_classes, norm=p.threat.norm, eps=p.relabel.eps, steps=p.relabel.steps,
                   step_size=p.relabel.step_size, early_stop=p.relabel.early_stop, **common)
        out = {}
        if self.released:
            for name in TRAINED_SETS:
                out[name] = self.constructed(name, lambda n=name: self.released[n], lambda ds: {"source": "released"})
            return out
        out["D_R"] = self.constructed(
            "D_R", lambda: build_robust_dataset(robust, x, y, **inv),
            lambda ds: inversion_diagnostics(robust, x, ds),
        )
        out["D_NR"] = self.constructed(
            "D_NR", lambda: build_non_robust_dataset(standard, x, y, **inv),
            lambda ds: inversion_diagnostics(standard, x, ds),
        )
        for mode in ("rand", "det"):
            out[f"D_{mode}"] = self.constructed(
                f"D_{mode}", lambda m=mode: build_relabelled_dataset(standard, x, y, mode=m, **rel),
                lambda ds: relabelled_diagnostics(standard, robust, x, ds, p.threat.norm),
            )
        return out

    def unleaked_det(self, robust) -> dict:
        """D_det restricted to images the robust model still reads as their original class (no robust leakage)."""
        images, labels, original = self.load_constructed("D_det")
        keep = predict(robust, images) == original
        if int(keep.sum()) < self.num_classes:
            return {"skipped": "fewer unleaked images than classes", "train_images": int(keep.sum())}
        return self.train_and_evaluate(
            "D_det_unleaked", images[keep], labels[keep], self.p.constructed_train["D_det_unleaked"]
        )


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


def check_out_dir(out: Path, fingerprints: dict[str, str], write_probe: bool = True) -> None:
    """Refuse a non-empty folder that is not an advfeatures run, or one holding a preset run with other settings."""
    if out.exists() and not out.is_dir():
        raise BadInputError(f"--out {out} is a file; give a folder")
    manifest = out / "run.json"
    if out.is_dir() and any(not _ours_in_passing(p.name) for p in out.iterdir()) and not manifest.exists():
        raise BadInputError(
            f"--out {out} is not empty and holds no advfeatures run (no run.json); choose a new or empty folder"
        )
    if manifest.exists():
        previous = read_json(manifest).get("presets", {})
        for name, fp in fingerprints.items():
            if name in previous and previous[name] != fp:
                what = "different settings"
                if previous[name].split("-given-")[0] == fp.split("-given-")[0]:  # only the sources differ
                    what = "other D / D_adv sources (trained vs --standard-model / --robust-model, or other files)"
                raise BadInputError(
                    f"{out / name} was produced with {what}; use another --out, or delete {out / name}"
                )
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


# ---------------------------------------------------------------- aggregation over seeds


def aggregate(per_seed: list[dict]) -> dict:
    """Means over seeds, with std and per-seed values beside them, for every accuracy entry."""
    first = per_seed[0]
    accuracy = {}
    for name, entry in first["accuracy"].items():
        if "clean" not in entry:
            accuracy[name] = entry
            continue
        agg = {}
        for key in ("clean", "robust", "autoattack"):
            if not all(key in s["accuracy"][name] for s in per_seed):
                continue
            values = torch.tensor([s["accuracy"][name][key] for s in per_seed], dtype=torch.float64)
            agg[key] = float(values.mean())
            agg[f"{key}_std"] = float(values.std(unbiased=False)) if len(per_seed) > 1 else 0.0
            agg[f"{key}_per_seed"] = values.tolist()
        agg["curve"] = {e: float(torch.tensor([s["accuracy"][name]["curve"][e] for s in per_seed]).mean())
                        for e in entry["curve"]}
        accuracy[name] = agg
    return {
        "accuracy": accuracy,
        "construction": _mean_dicts([s["construction"] for s in per_seed]),
        **{k: _mean_dicts([s[k] for s in per_seed]) for k in ("audit", "attack_check", "transfer", "robust_source",
                                                                "followups")
           if k in first},
        "per_seed": per_seed,
    }


def _mean_dicts(items: list):
    """Elementwise mean of nested dicts of numbers (other values from the first)."""
    head = items[0]
    if isinstance(head, dict):
        return {k: _mean_dicts([i[k] for i in items if isinstance(i, dict) and k in i]) for k in head}
    if isinstance(head, (int, float)) and not isinstance(head, bool):
        values = [float(i) for i in items]
        return sum(values) / len(values)
    return head


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
    resolve_device(options.device)
    if options.autoattack:
        from .autoattack import require_autoattack

        require_autoattack()  # before any long work
    data = {p.name: load_preset_data(p, options) for p in presets}  # every input checked before any write
    out = Path(options.out)
    fingerprints = {p.name: p.fingerprint() + ("-released" if options.released else "")
                    + fingerprint_suffix(data[p.name].get("given", {})) for p in presets}
    check_out_dir(out, fingerprints, write_probe=group.is_main)
    group.barrier()  # every rank has checked --out before rank 0 writes to it
    # one run per folder: run.lock is held from here to the end (a second run is refused, naming this one); under
    # it run.json is checked again and temporaries left by an interrupted run are removed (runlock.py)
    with run_folder_lock(out, group, log, recheck=lambda: check_out_dir(out, fingerprints, write_probe=False)):
        return _reproduce_locked(options, log, presets, data, out, fingerprints, t_start)


def _reproduce_locked(options: RunOptions, log, presets: list[Preset], data: dict, out: Path,
                      fingerprints: dict[str, str], t_start: float) -> dict[str, dict]:
    """`reproduce` after its pre-flight checks, with the run lock held."""
    group = options.group
    manifest = out / "run.json"
    if group.is_main:
        known = read_json(manifest).get("presets", {}) if manifest.exists() else {}
        write_json_atomic(manifest, {"advfeatures": __version__, "presets": {**known, **fingerprints}})

    theory = None
    if options.theory:
        theory = run_theory_stage(out, log, group)
    all_results = {}
    for p in presets:
        t0 = time.perf_counter()
        log(f"[{p.name}] {p.description}; threat model {p.threat.norm} eps {p.threat.eps}; seeds {options.seeds}")
        per_seed = []
        for seed in range(options.seeds):
            directory = out / p.name if seed == 0 else out / p.name / "seeds" / str(seed)
            log(f" seed {seed}:")
            per_seed.append(PresetRun(p, seed, directory, data[p.name], options, log).run())
        results = {
            "preset": p.name,
            "seeds": list(range(options.seeds)),
            "threat_model": {"norm": p.threat.norm, "eps": p.threat.eps},
            "num_classes": data[p.name]["num_classes"],
            **aggregate(per_seed),
            "settings": p.as_dict(),
            "released": str(options.released) if options.released else None,
            "sources": sources_record(data[p.name].get("given", {}), options.seeds),
            "precision": per_seed[0]["precision"],
            "seconds": {"total": time.perf_counter() - t0, "stages": per_seed[0]["seconds"]},
        }
        if theory is not None:
            results["theory"] = theory
        if group.is_main:
            write_json_atomic(out / p.name / "results.json", results)
        all_results[p.name] = results
        log(format_table(results))
    from .report import write_report

    if group.is_main:
        write_report(out, all_results, theory)
    group.barrier()
    log(f"done in {time.perf_counter() - t_start:.0f}s: {out / 'report.html'}")
    return all_results


def run_theory_stage(out: Path, log, group: ProcessGroup | None = None) -> dict:
    from .theory import run_theory

    cache = StageCache(out / "theory", log, group)
    return cache.run("theory", lambda: json.loads(json.dumps(run_theory(out / "theory"), default=float)),
                     validate=lambda: _require_files(out / "theory", ("theory_figure4.png",)), main_only=True)


def _silent(message: str) -> None:
    """The log of ranks other than 0."""


def _require_files(folder: Path, names) -> None:
    for n in names:
        if not (folder / n).is_file():
            raise CorruptFileError(f"{folder / n} missing")


def format_table(results: dict) -> str:
    eps = results["threat_model"]["eps"]
    lines = [f"{'training set':<16}{'clean':>8}{f'robust@{eps:g}':>14}"]
    for name, entry in results["accuracy"].items():
        if "clean" in entry:
            lines.append(f"{name:<16}{entry['clean']:>8.3f}{entry['robust']:>14.3f}")
    return "\n".join(lines)
