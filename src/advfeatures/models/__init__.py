"""Architectures behind one registry, and safetensors checkpoints that carry their own architecture."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import BadInputError, CorruptFileError
from ..io import load_tensors, save_tensors
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
    if arch not in MODELS:
        raise BadInputError(f"unknown model {arch!r}; choose one of: {', '.join(sorted(MODELS))}")
    config = {"in_channels": in_channels, "num_classes": num_classes, "image_size": image_size, **kwargs}
    try:
        model = MODELS[arch](**config)
    except (TypeError, ValueError) as err:
        raise BadInputError(f"model {arch!r}: bad arguments {kwargs} ({err})") from err
    model.config = {"arch": arch, **config}
    return model


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
    """Rebuild a saved model in eval mode: (N, C, H, W) floats in [0, 1] -> logits."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such checkpoint; train one with `advfeatures train ... --out {path}`")
    state, meta = load_tensors(path)
    if meta.get("format") != CHECKPOINT_FORMAT or "config" not in meta:
        raise CorruptFileError(f"{path}: not an advfeatures model checkpoint (no architecture metadata)")
    try:
        config = json.loads(meta["config"])
        arch = config.pop("arch")
        model = build_model(arch, **config)
        model.load_state_dict(state)
    except (json.JSONDecodeError, KeyError, RuntimeError) as err:
        raise CorruptFileError(f"{path}: checkpoint does not match its architecture ({err})") from err
    return model.to(device).eval()


__all__ = ["MODELS", "ImageClassifier", "build_model", "load_model", "register_model", "save_model"]
