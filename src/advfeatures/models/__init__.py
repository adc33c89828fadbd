"""Architectures behind one registry, and safetensors checkpoints that carry their own architecture."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import BadInputError, CorruptFileError
from ..io import load_tensors, save_tensors
from ..validation import check_model_options
from .base import ImageClassifier
from .cifar import VGG16BN, DenseNet121, InceptionNet, ResNet9, ResNet18, ResNet50
from .fast import FastNet
from .small import MLP, SmallCNN, TinyResNet, WideCNN
from .wide_resnet import WideResNet

CHECKPOINT_FORMAT = "advfeatures-model-v1"

MODELS: dict[str, Callable[..., ImageClassifier]] = {
    "mlp": MLP,
    "small_cnn": SmallCNN,
    "wide_cnn": WideCNN,
    "tiny_resnet": TinyResNet,
    "resnet9": ResNet9,
    "fastnet": FastNet,
    "resnet18": ResNet18,
    "resnet50": ResNet50,
    "vgg16_bn": VGG16BN,
    "densenet121": DenseNet121,
    "inception": InceptionNet,
    "wide_resnet": WideResNet,
}


def register_model(name: str, constructor: Callable[..., ImageClassifier]) -> None:
    MODELS[name] = constructor


def build_model(arch: str, *, in_channels: int, num_classes: int, image_size: int, **kwargs) -> ImageClassifier:
    """A fresh model; every argument is recorded in `model.config` so checkpoints can rebuild it."""
    if not isinstance(arch, str) or arch not in MODELS:
        raise BadInputError(f"unknown model {arch!r}; choose one of: {', '.join(sorted(MODELS))}")
    config = {"in_channels": in_channels, "num_classes": num_classes, "image_size": image_size, **kwargs}
    check_model_options(arch, config)  # positive sizes (a width of 0 trains to chance silently), finite mean/std
    try:
        model = MODELS[arch](**config)
    except (TypeError, ValueError, RuntimeError, ZeroDivisionError) as err:
        raise BadInputError(f"model {arch!r}: bad arguments {kwargs} ({_first_line(err)})") from err
    model.config = {"arch": arch, **config}
    return model


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def check_architecture(arch: str, *, in_channels: int, num_classes: int, image_size: int, **kwargs) -> None:
    """Build the model on the meta device (no memory, no compute) and run one batch through it, so an architecture
    that cannot take this image size (a 1x1 image through two poolings) fails here, before any training, with
    one line instead of a torch error in the first step."""
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "zero-element tensors" note for a layer that is about to fail
        model = build_model(arch, in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)
        try:
            out = model.eval()(torch.empty(2, in_channels, image_size, image_size))
        except (RuntimeError, ValueError, IndexError) as err:
            raise BadInputError(f"model {arch!r} cannot take {in_channels}x{image_size}x{image_size} images "
                                f"({_first_line(err)}); choose another --arch or larger images") from err
    if tuple(out.shape) != (2, num_classes):
        raise BadInputError(f"model {arch!r} gives outputs of shape {tuple(out.shape[1:])} for {num_classes} classes")


def save_model(model: ImageClassifier, path: str | Path, **metadata) -> None:
    """Atomically write weights as safetensors, with the architecture and its arguments in the metadata."""
    config = getattr(model, "config", None)
    if not config or "arch" not in config:
        raise BadInputError("save_model needs a model made by advfeatures.build_model (it records its config)")
    state = {k: v for k, v in model.state_dict().items()}
    meta = {"format": CHECKPOINT_FORMAT, "config": json.dumps(config)}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
    save_tensors(path, state, meta)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> ImageClassifier:
    """Rebuild a saved model in eval mode: (N, C, H, W) floats in [0, 1] -> logits.

    The file is checked before a byte of the model is allocated: its config must be a JSON object naming a known
    architecture with sane sizes, and the architecture built on the meta device (free) must have exactly the
    file's tensor names and shapes, so a hostile config (width 10^9) cannot make us allocate what the file does not
    hold. Weights must be finite (NaN weights mean a diverged or damaged model) and the normalisation std > 0.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such checkpoint; train one with `advfeatures train ... --out {path}`")
    state, meta = load_tensors(path)
    if meta.get("format") != CHECKPOINT_FORMAT or "config" not in meta:
        raise CorruptFileError(f"{path}: not an advfeatures model checkpoint (no architecture metadata)")
    try:
        config = json.loads(meta["config"])
    except json.JSONDecodeError as err:
        raise CorruptFileError(f"{path}: its architecture metadata is not valid JSON ({err})") from err
    if not isinstance(config, dict) or not isinstance(config.get("arch"), str):
        raise CorruptFileError(f"{path}: its architecture metadata must be a JSON object with an 'arch' name, "
                               f"found {type(config).__name__}; recreate the checkpoint")
    config = dict(config)
    arch = config.pop("arch")
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = build_model(arch, **config).state_dict()
    except BadInputError as err:
        raise CorruptFileError(f"{path}: its architecture metadata is unusable ({err})") from err
    _check_state_matches(path, state, expected)
    _check_state_values(path, state)
    model = build_model(arch, **config)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # not expected after the checks above; one line all the same
        raise CorruptFileError(f"{path}: checkpoint does not match its architecture ({_first_line(err)})") from err
    return model.to(device).eval()


def _check_state_matches(path: Path, state: dict, expected: dict) -> None:
    """The file's tensors have exactly the architecture's names and shapes; the mismatch as one line."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} (expected {tuple(expected[k].shape)})"
              for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    problems = []
    for what, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if items:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            problems.append(f"{len(items)} {what}: {', '.join(items[:3])}{more}")
    if problems:
        raise CorruptFileError(f"{path}: tensors do not match the architecture in its metadata ({'; '.join(problems)});"
                               " the file is damaged or was edited - recreate it")


def _check_state_values(path: Path, state: dict) -> None:
    bad = [k for k, t in state.items() if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all())]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise CorruptFileError(f"{path}: NaN or inf weights in {', '.join(bad[:3])}{more}; the model diverged in "
                               "training or the file is damaged - retrain it (a lower lr) or recreate it")
    std = state.get("std")
    if isinstance(std, torch.Tensor) and std.numel() and not bool((std > 0).all()):
        raise CorruptFileError(f"{path}: its normalisation std has values <= 0; recreate the checkpoint")


__all__ = ["MODELS", "ImageClassifier", "build_model", "check_architecture", "load_model", "register_model",
           "save_model"]
