"""PresetRun: one seed of one preset, and everything a stage body may use.

A stage body (runfolder.Stage) gets the seed's data on the device and the helpers every experiment shares:
`fit` (standard or adversarial training, saved as models/NAME.safetensors), `load`, `evaluate` (clean and robust
accuracy, the eps curve), `invert` and `relabel` (the one call that builds D_R / D_NR, and D_rand / D_det /
Table 9 / D_det_bugs), `save_constructed` / `load_constructed`.

Settings reach a body only through this object, and only those its declaration names: while a stage runs,
`run.preset` is a view of the preset that raises `UndeclaredRead` on any other setting, and the run-level settings
(`settings` lists them) are guarded the same way. So a stage's key (runfolder.stage_key) covers everything its
result depends on, and a stage that reads something new fails its first test until it says so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

import torch

from ..construct import ConstructedDataset, PartialChunks, build_inverted_dataset, build_relabelled_dataset
from ..data import load_dataset_file, save_dataset_file
from ..device import bf16_is_fast, compile_model, resolve_device
from ..distributed import gather_shards
from ..evaluation import clean_accuracy, robust_accuracy_curve, robust_examples
from ..io import load_tensors, pack_mask, save_tensors
from ..models import load_model, save_model
from ..presets import Preset
from ..results import computed_where
from ..runfolder import StageCache, partial_folder
from ..training import ModelSpec, TrainConfig, channel_stats, train_new_model

ALWAYS = ("name", "description", "paper", "seed")  # identity and report text: readable by every stage
DATA = ("dataset", "dataset_options", "limit_train", "limit_test")  # what "data" stands for in a key
SOURCES = ("D", "D_adv")
# what `evaluate` reads: every stage that calls it declares these
EVALUATE = ("threat", "evaluation.steps", "evaluation.restarts", "evaluation.targets", "evaluation.curve_eps",
            "evaluation.curve_limit", "evaluation.curve_targets", "evaluation.batch_size")


class UndeclaredRead(RuntimeError):
    """A stage body read a setting its declaration does not name (a programming error: add it to `reads`)."""


def _covers(declared: Iterable[str], path: str) -> bool:
    return any(path == d or path.startswith(d + ".") for d in declared)


def _leads_to(declared: Iterable[str], path: str) -> bool:
    return any(d.startswith(path + ".") for d in declared)


class SettingsView:
    """Part of the preset as one stage sees it: declared settings read through, anything else raises."""

    def __init__(self, obj, path: str, declared: tuple[str, ...], stage: str):
        self._obj, self._path, self._declared, self._stage = obj, path, declared, stage

    def _child(self, name: str, value):
        path = f"{self._path}.{name}" if self._path else name
        if _covers(self._declared, path):
            return value
        if _leads_to(self._declared, path):
            return SettingsView(value, path, self._declared, self._stage)
        raise UndeclaredRead(f"stage {self._stage} reads the setting {path!r}, which its declaration does not name; "
                             "add it to the stage's `reads`")

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return self._child(name, getattr(self._obj, name))

    def __getitem__(self, key):
        return self._child(str(key), self._obj[key])

    def __contains__(self, key) -> bool:
        self._child(str(key), None)
        return key in self._obj


class PresetRun:
    """Everything one seed of one preset needs: the data on the device, the stage cache, and the shared helpers."""

    def __init__(self, preset: Preset, seed: int, directory: Path, data: dict, options, log):
        self._preset, self.seed, self.dir, self.log = preset, seed, directory, log
        self.device = resolve_device(options.device)
        self.group = options.group
        self.progress = options.progress and self.group.is_main  # bars on rank 0 only
        self.compile = options.compile
        self._train, self._test = data["train"], data["test"]
        self._train_x, self._train_y = self._train.images.to(self.device), self._train.labels.to(self.device)
        self._test_x, self._test_y = self._test.images.to(self.device), self._test.labels.to(self.device)
        self._num_classes = data["num_classes"]
        self.mean, self.std = channel_stats(self._train.images)
        self.cache = StageCache(directory, log, self.group, None if options.progress else options.status_seconds,
                                where=computed_where(self.device))
        self._released = data.get("released")
        self._released_from = str(options.released) if options.released else None
        self._given = data.get("given", {})  # {"D" / "D_adv": GivenModel}: sources used instead of trained
        self._features = getattr(self._train, "features", None)  # planted ground truth (synthetic only)
        self._full, self._autoattack = options.full, options.autoattack
        self.with_followups = options.followups  # whether the follow-up stages run (not a setting of any stage)
        self.with_controls = getattr(options, "controls", False)  # whether the control stages run
        self.autoattack_beside_ours = options.autoattack  # AutoAttack's numbers into the accuracy entries
        # bf16 for training and construction (where the device has it); evaluation stays float32, so a robust
        # accuracy never depends on a lower-precision attack
        self._amp = (preset.amp if options.amp is None else options.amp) and bf16_is_fast(self.device)
        self.channels_last = preset.channels_last if options.channels_last is None else options.channels_last
        self._reading: tuple[str, tuple[str, ...]] | None = None  # (stage, declared reads) while a body runs
        self._stage_key: str | None = None  # the running stage's key (what its partial constructions are bound to)
        self._constructions = 0  # constructions the running stage has started (each keeps its chunks apart)
        self._models: dict[str, torch.nn.Module] = {}  # loaded models, by name, until a stage writes that name

    # -- settings, guarded while a stage body runs
    @contextmanager
    def reading(self, stage: str, paths: tuple[str, ...], key: str | None = None):
        """While the block runs (stage `stage`'s body, whose key is `key`), only `paths` (and ALWAYS) are
        readable."""
        before = self._reading, self._stage_key, self._constructions
        self._reading, self._stage_key, self._constructions = (stage, (*ALWAYS, *paths)), key, 0
        try:
            yield
        finally:
            self._reading, self._stage_key, self._constructions = before

    def _check(self, path: str) -> None:
        if self._reading is not None and not _covers(self._reading[1], path):
            raise UndeclaredRead(f"stage {self._reading[0]} reads {path!r}, which its declaration does not name; "
                                 "add it to the stage's `reads`")

    def settings(self, paths: Iterable[str]) -> dict:
        """{path: value} for declared settings: the preset's fields (dotted paths into them), "seed", and the
        run-level ones: "data" (dataset, its options and limits), "precision" (bf16 or float32 and the memory format,
        as they run here: both change a seed's numbers on a CPU, so a stage computed under another is computed again),
        "transfer_set" (--full), "autoattack" (--autoattack), "sources.D" / "sources.D_adv" (the given file's
        SHA-256, or "trained"), "released" (the --released folder, or None)."""
        tree = dataclasses.asdict(self._preset)
        tree.update(
            seed=self.seed, data={k: tree[k] for k in DATA}, precision=self.numerics,
            transfer_set="full" if self._full else "default", autoattack=bool(self._autoattack),
            sources={n: self._given[n].sha256 if n in self._given else "trained" for n in SOURCES},
            released=self._released_from,
        )
        out = {"seed": self.seed}
        for path in paths:
            value = tree
            for part in path.split("."):
                if not isinstance(value, dict) or part not in value:
                    raise RuntimeError(f"a stage declares the unknown setting {path!r}")
                value = value[part]
            out[path] = value
        return out

    @property
    def preset(self):
        """The preset; while a stage runs, a view of the settings it declared."""
        if self._reading is None:
            return self._preset
        return SettingsView(self._preset, "", self._reading[1], self._reading[0])

    @property
    def train_x(self) -> torch.Tensor:
        self._check("data")
        return self._train_x

    @property
    def train_y(self) -> torch.Tensor:
        self._check("data")
        return self._train_y

    @property
    def test_x(self) -> torch.Tensor:
        self._check("data")
        return self._test_x

    @property
    def test_y(self) -> torch.Tensor:
        self._check("data")
        return self._test_y

    @property
    def num_classes(self) -> int:
        self._check("data")
        return self._num_classes

    @property
    def features(self):
        """The planted ground truth of synthetic data (None for other data)."""
        self._check("data")
        return self._features

    @property
    def numerics(self) -> str:
        """How this run computes: "float32" or "bf16", and "/channels_last" where convolutions run NHWC."""
        return ("bf16" if self._amp else "float32") + ("/channels_last" if self.channels_last else "")

    @property
    def amp(self) -> bool:
        self._check("precision")
        return self._amp

    @property
    def full(self) -> bool:
        self._check("transfer_set")
        return self._full

    @property
    def autoattack(self) -> bool:
        self._check("autoattack")
        return self._autoattack

    @property
    def released(self) -> dict | None:
        self._check("released")
        return self._released

    def given(self, name: str):
        """The GivenModel used as `name` ("D" / "D_adv") instead of training it, or None."""
        self._check(f"sources.{name}")
        return self._given.get(name)

    # -- models
    def model_path(self, name: str) -> Path:
        return self.dir / "models" / f"{name}.safetensors"

    def dataset_path(self, name: str) -> Path:
        return self.dir / "datasets" / f"{name}.safetensors"

    def fit(self, name: str, images, labels, config: TrainConfig, spec: ModelSpec | None = None):
        """Train a model of `spec` (default: the preset's) on (images, labels) and save it as models/NAME."""
        config = dataclasses.replace(
            config, seed=config.seed + 1000 * self.seed, amp=self.amp, compile=self.compile,
            channels_last=self.channels_last,
        )
        self._check("data")
        self._models.pop(name, None)
        model, history = train_new_model(
            spec or self.preset.model, images, labels, self._num_classes, config, mean=self.mean, std=self.std,
            progress=self.progress, desc=name, checkpoint=self.dir / "models" / f".{name}.checkpoint",
            group=self.group,
        )
        if self.group.is_main:
            save_model(model, self.model_path(name), preset=self.preset.name, seed=str(self.seed),
                       train=config.as_dict())
        self.group.barrier()
        return model, history

    def load(self, name: str):
        """models/NAME, loaded once per seed (until a stage writes it again)."""
        if name not in self._models:
            model = load_model(self.model_path(name), self.device)
            if self.channels_last:
                model.to(memory_format=torch.channels_last)
            self._models[name] = compile_model(model, self.compile) if self.compile else model
        return self._models[name]

    def forget(self, name: str) -> None:
        """Drop a loaded model whose file a stage is about to replace."""
        self._models.pop(name, None)

    def evaluate(self, model) -> dict:
        """Clean and full-strength robust accuracy at the threat model on the whole test set, and a curve over eps on
        the first `curve_limit` test images. Reads EVALUATE.

        The curve's threat-model point is the full-strength result on those images (no second attack); its other
        radii are attacked in increasing order with `curve_targets` APGD-T runs, and a point broken at a radius
        counts as broken at every larger one without another attack (evaluation.robust_accuracy_curve). Which test
        images withstood the full-strength attack is kept ("robust_examples", a bit string), so the attack check
        compares AutoAttack with our evaluation on the same images without attacking them again."""
        ev, threat = self.preset.evaluation, self.preset.threat
        attack = dict(steps=ev.steps, restarts=ev.restarts, seed=self.seed, amp=False, progress=self.progress,
                      batch_size=ev.batch_size)
        robust = robust_examples(model, self.test_x, self.test_y, threat.norm, threat.eps, targets=ev.targets,
                                 **attack)
        out = {"clean": clean_accuracy(model, self.test_x, self.test_y), "robust": float(robust.float().mean())}
        n = min(ev.curve_limit or self.test_x.shape[0], self.test_x.shape[0])
        xs, ys = self.test_x[:n], self.test_y[:n]
        curve = {"0": out["clean"] if n == self.test_x.shape[0] else clean_accuracy(model, xs, ys)}
        curve.update(robust_accuracy_curve(model, xs, ys, threat.norm, ev.curve_eps, known={threat.eps: robust[:n]},
                                           targets=ev.curve_targets, **attack))
        out["curve"] = curve
        out["curve_images"] = int(n)
        out["curve_targets"] = ev.curve_targets
        out["test_images"] = int(self.test_x.shape[0])
        out["robust_examples"] = pack_mask(robust)
        return out

    def train_and_evaluate(self, name: str, images, labels, config: TrainConfig) -> dict:
        """A model stage's body: fit, then evaluate; reads "data", "model", "precision", EVALUATE and `config`."""
        model, history = self.fit(name, images, labels, config)
        return {**self.evaluate(model), "train_seconds": history["seconds"], "train_images": int(len(labels))}

    # -- constructed datasets
    def invert(self, source, desc: str, *, start: str | None = None, steps: int | None = None) -> ConstructedDataset:
        """D_R (through the robust model) or D_NR (the standard one): representation inversion at the preset's
        `inversion` settings (or another `start` and number of `steps`: the controls from noise), every rank's
        chunks joined."""
        inv = self.preset.inversion
        start = start or inv.start
        steps = inv.steps if steps is None else steps
        partial = self._partial()
        ds = build_inverted_dataset(source, self.train_x, self.train_y, steps=steps, step_size=inv.step_size,
                                    start=start, tolerance=inv.tolerance, seed=self.seed, amp=self.amp,
                                    progress=self.progress, shard=self.group.shard, desc=desc,
                                    batch_size=inv.batch_size, partial=partial)
        self._log_reused(partial)
        ds.images = gather_shards(ds.images, self.group)  # each rank built its own chunks
        return ds

    def relabel(self, source, mode: str, keep_models=()) -> ConstructedDataset:
        """The one relabelling call: targeted PGD against `source` toward random ("rand") or y+1 ("det") targets at
        the preset's `relabel` settings and threat norm, every rank's chunks joined. D_rand / D_det (the standard
        model), Table 9 (the robust one) and Nakkiran's D_det_bugs (with `keep_models`) all come from here."""
        rel, norm = self.preset.relabel, self.preset.threat.norm
        ds = build_relabelled_dataset(source, self.train_x, self.train_y, mode=mode, num_classes=self.num_classes,
                                      norm=norm, eps=rel.eps, steps=rel.steps, step_size=rel.step_size,
                                      early_stop=rel.early_stop, seed=self.seed, amp=self.amp,
                                      progress=self.progress, shard=self.group.shard, keep_models=keep_models,
                                      batch_size=rel.batch_size, partial=(partial := self._partial()))
        self._log_reused(partial)
        ds.images = gather_shards(ds.images, self.group)
        return ds

    def _partial(self) -> PartialChunks | None:
        """Where the running stage keeps this construction's finished chunks (partial/STAGE/N/ for the stage's N-th
        construction, bound to the stage's key and N; StageCache removes partial/STAGE/ when the stage ends): a stage
        killed mid-construction resumes from them. A stage may build several sets (Table 9 builds D_rand and D_det
        against the robust model): each has its own folder and key, so one never takes another's chunks (before
        they did, and Table 9's D_det was D_rand's images)."""
        if self._reading is None or self._stage_key is None:
            return None
        n, self._constructions = self._constructions, self._constructions + 1
        return PartialChunks(partial_folder(self.dir, self._reading[0]) / str(n), f"{self._stage_key}/{n}")

    def _log_reused(self, partial: PartialChunks | None) -> None:
        if partial is not None and partial.reused:
            self.log(f"  {self._reading[0]:<16} resumed: {partial.reused} finished chunk(s) taken from an "
                     "interrupted run")

    def save_constructed(self, name: str, ds: ConstructedDataset) -> None:
        """datasets/NAME (images, labels) and datasets/NAME.original_labels, written by rank 0."""
        if self.group.is_main:
            save_dataset_file(self.dataset_path(name), ds.images, ds.labels)
            save_tensors(self.dir / "datasets" / f"{name}.original_labels.safetensors",
                         {"original_labels": ds.original_labels}, {"dataset": name})
        self.group.barrier()

    def check_constructed(self, name: str) -> None:
        load_dataset_file(self.dataset_path(name))

    def load_constructed(self, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        data = load_dataset_file(self.dataset_path(name), self._num_classes)
        original = load_tensors(self.dir / "datasets" / f"{name}.original_labels.safetensors",
                                required=("original_labels",))[0]["original_labels"]
        return data["images"].to(self.device), data["labels"].to(self.device), original.to(self.device)

    def audit(self, images, labels, original=None) -> dict | None:
        """Synthetic data only: how much of each planted feature the images carry (None elsewhere)."""
        if self.features is None:
            return None
        return self.features.audit(images.cpu(), labels.cpu(), None if original is None else original.cpu())
