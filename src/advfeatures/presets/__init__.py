"""Presets: every hyperparameter of a `reproduce` run, one small file per dataset, each value with its reason."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from ..errors import BadInputError
from ..training import ModelSpec, TrainConfig


@dataclass
class ThreatModel:
    norm: str = "l2"
    eps: float = 0.5


@dataclass
class InversionConfig:
    steps: int = 1000
    step_size: float = 0.1
    start: str = "image"  # "image": a different random training image; "noise": uniform noise
    tolerance: float | None = None  # early exit at this relative representation error (None: run all steps)
    batch_size: int = 512  # images per inversion step (speed only: thousands on a GPU, 128-256 in a CPU's cache)


@dataclass
class RelabelConfig:
    eps: float = 0.5
    steps: int = 100
    step_size: float = 0.1
    early_stop: bool = False  # stop each example once it hits its target (changes the data: measured in benchmarks)
    batch_size: int = 512  # images per attack step (speed only, as InversionConfig.batch_size)


@dataclass
class EvalConfig:
    """The robust-accuracy evaluation (evaluation.py): an APGD cascade, AutoAttack's gradient half in our engine."""

    steps: int = 100  # APGD steps per run (AutoAttack's own number)
    restarts: int = 1  # APGD-CE runs, each from a random start
    targets: int = 9  # APGD-T runs: targeted DLR toward each of the top-k other classes (capped at classes - 1)
    curve_eps: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0])
    curve_limit: int | None = 500  # test images used for the eps curve (the threat-model number uses all)
    curve_targets: int = 1  # APGD-T runs at the curve's other radii (the threat-model eps uses `targets`): the curve
    # shows the shape; the threat-model number, the one checked against AutoAttack, gets the full cascade
    check_limit: int | None = 500  # test images for attack_check (AutoAttack, or our strongest settings); None: all
    check_method: str = "auto"  # "auto": AutoAttack where installed, else "own" (our strongest settings)
    batch_size: int = 512  # images per attack step; random starts are drawn per batch, so it is a setting


@dataclass
class SquaresConfig:
    """Nakkiran's "adversarial squares" toy (followups.adversarial_squares): the same small task in every preset."""

    train: int = 1000  # images to fit, label noise included
    test: int = 500
    size: int = 8  # 8x8, one channel
    label_noise: float = 0.1  # his 10%
    eps: float = 1.0  # L2; the linear rule needs 8x the amplitude to flip, so it stays robust at this radius
    epochs: int = 100  # long enough to fit the noisy labels (memorising them is what makes the net non-robust)


@dataclass
class FollowupsConfig:
    """The Distill discussion's experiments (experiments/followups/); `reproduce --no-followups` skips them."""

    ensemble: int = 2  # Nakkiran's K: models of the source architecture trained on D with other seeds
    teacher_epochs: int = 1  # Wallace's weak teacher: standard training on D for this many epochs
    linear_epochs: int = 300  # Goh: full-batch steps of the robust linear model and of the leakage probe
    squares: SquaresConfig = field(default_factory=SquaresConfig)


@dataclass
class ControlsConfig:
    """Controls for D_rand / D_det and D_R / D_NR (experiments/controls/); `reproduce --controls` runs them."""

    pattern_family: str = "tile"  # the shortcut controls' fixed class patterns (construct.class_patterns)
    weak_epochs: int = 1  # Keller Jordan's weakly trained clean model: D's recipe for this many epochs
    noise_steps: int | None = None  # inversion steps from uniform noise (None: 10x the preset's, as the paper)


@dataclass
class Preset:
    name: str
    dataset: str
    description: str
    threat: ThreatModel
    model: ModelSpec
    train: TrainConfig  # standard training on D
    adversarial_train: TrainConfig  # adversarial training on D (D_adv), the robust source model
    constructed_train: dict[str, TrainConfig]  # standard training on each constructed set
    inversion: InversionConfig
    relabel: RelabelConfig
    evaluation: EvalConfig
    transfer_models: list[ModelSpec] = field(default_factory=list)  # architectures for Figure 3
    transfer_models_full: list[ModelSpec] = field(default_factory=list)  # with --full
    dataset_options: dict = field(default_factory=dict)
    limit_train: int | None = None  # use only the first N training images (quick runs)
    limit_test: int | None = None
    amp: bool = False  # bf16 autocast for training and construction where the device runs bf16 natively
    # (device.bf16_is_fast); the evaluation always runs in float32. `reproduce --[no-]amp` overrides it.
    # NHWC memory format: faster convolutions (GPU tensor cores; oneDNN on a CPU). The same computation in another
    # floating-point order: on a CPU it changes a seed's numbers the way the thread count does. `--[no-]channels-last`
    channels_last: bool = False
    paper: dict = field(default_factory=dict)  # the paper's numbers to print beside ours
    followups: FollowupsConfig = field(default_factory=FollowupsConfig)
    controls: ControlsConfig = field(default_factory=ControlsConfig)

    def fingerprint(self) -> str:
        """A short hash of every setting, recorded in run.json. What a run folder resumes is decided stage by
        stage: each stage's key covers exactly the settings it reads (runfolder.py)."""
        settings = dataclasses.asdict(self)
        blob = json.dumps(settings, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def get_preset(name: str) -> Preset:
    from . import cifar10, cifar10_cpu, cifar10_fast, digits, restricted_imagenet, synthetic

    presets = {
        "synthetic": synthetic.preset,
        "digits": digits.preset,
        "cifar10": cifar10.preset,
        "cifar10_cpu": cifar10_cpu.preset,
        "cifar10_fast": cifar10_fast.preset,
        "restricted_imagenet": restricted_imagenet.preset,
    }
    if name not in presets:
        raise BadInputError(f"unknown preset {name!r}; choose from: {', '.join(presets)}")
    return presets[name]()


PRESETS = ("synthetic", "digits", "cifar10", "cifar10_fast", "cifar10_cpu", "restricted_imagenet")
DEFAULT_PRESETS = ("synthetic", "digits")

# The offline presets' Figure 3 architectures besides an MLP and their own CNN: a VGG-style net and a residual net at
# widths that cost 2-4 of synthetic's attack steps, not 8 (wide_cnn at width 48 and tiny_resnet at 32 took 135 and
# 132 ms per step of batch 256 on 2 cores against 17 for synthetic's CNN: the transfer stage was a quarter of the
# default run). The 3-seed verdicts at these widths are in benchmarks/RESULTS.md.
SMALL_TRANSFER_OTHERS = (ModelSpec("wide_cnn", {"width": 24}), ModelSpec("tiny_resnet", {"width": 16}))

# The paper's CIFAR-10 numbers (Figure 2, Section 3; arXiv 1905.02175), printed beside ours in every report.
PAPER_CIFAR10 = {
    "D": {"clean": 0.9525, "robust": 0.0449},
    "D_adv": {"clean": 0.9083, "robust": 0.8248},
    "D_R": {"clean": 0.8540, "robust": 0.4820},
    "D_NR": {"clean": 0.8768, "robust": 0.0082},
    "D_rand": {"clean": 0.633, "robust": None},
    "D_det": {"clean": 0.437, "robust": None},
    "threat": "CIFAR-10, ResNet-50, L2 eps 0.25",
}
