"""bf16 autocast: only where the device computes bf16 natively, and never inside the robust-accuracy evaluation."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import advfeatures.device as device_module
from advfeatures.device import autocast, bf16_is_fast
from advfeatures.experiments import context
from advfeatures.experiments.context import PresetRun
from advfeatures.models import build_model
from advfeatures.pipeline import Overrides, RunOptions, apply_overrides, load_preset_data
from advfeatures.presets import get_preset
from advfeatures.training import ModelSpec, TrainConfig, train_new_model

CPU = torch.device("cpu")


def _product_dtype() -> torch.dtype:
    return (torch.ones(4, 4) @ torch.ones(4, 4)).dtype


@pytest.mark.parametrize("native", [True, False])
def test_cpu_autocast_follows_native_bf16(monkeypatch, native):
    monkeypatch.setattr(device_module, "_cpu_has_bf16", lambda: native)
    assert bf16_is_fast(CPU) is native
    with autocast(CPU, True):
        assert _product_dtype() == (torch.bfloat16 if native else torch.float32)
    with autocast(CPU, False):
        assert _product_dtype() == torch.float32


def test_bf16_training_on_cpu_learns(monkeypatch):
    """A bf16-autocast training run (emulated here if the CPU lacks bf16: correctness, not speed) fits a separable
    toy problem as well as float32 does."""
    monkeypatch.setattr(device_module, "_cpu_has_bf16", lambda: True)
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (256,), generator=g)
    x = torch.full((256, 1, 8, 8), 0.3) + 0.4 * y.view(-1, 1, 1, 1) + 0.05 * torch.rand(256, 1, 8, 8, generator=g)
    config = TrainConfig(epochs=3, batch_size=32, lr=0.05, schedule="constant", amp=True)
    model, history = train_new_model(ModelSpec("small_cnn", {"width": 4}), x, y, 2, config, progress=False)
    assert all(torch.isfinite(torch.tensor(history["loss"])))
    assert (model(x).argmax(1) == y).float().mean() > 0.95


def test_pipeline_trains_in_bf16_but_evaluates_in_float32(monkeypatch, tmp_path):
    """With amp on (preset or --amp), training and construction may use bf16; every robust-accuracy call gets
    amp=False, so a reported number never rests on a lower-precision attack."""
    monkeypatch.setattr(device_module, "_cpu_has_bf16", lambda: True)
    preset = dataclasses.replace(apply_overrides(get_preset("synthetic"), Overrides(quick=True)), amp=True)
    options = RunOptions(out=tmp_path, presets=("synthetic",), progress=False)
    data = load_preset_data(preset, options)
    seen = []

    def recording_examples(model, images, labels, norm, eps, **attack):
        seen.append(attack["amp"])
        return torch.zeros(images.shape[0], dtype=torch.bool)

    def recording_curve(model, images, labels, norm, eps_values, **attack):
        seen.append(attack["amp"])
        return {str(e): 0.0 for e in eps_values}

    monkeypatch.setattr(context, "robust_examples", recording_examples)
    monkeypatch.setattr(context, "robust_accuracy_curve", recording_curve)
    run = PresetRun(preset, 0, tmp_path / "synthetic", data, options, print)
    assert run.amp
    model = build_model(preset.model.arch, in_channels=data["train"].images.shape[1], num_classes=data["num_classes"],
                        image_size=data["train"].images.shape[-1], **preset.model.options)
    run.evaluate(model.eval())
    assert len(seen) == 2 and not any(seen)


def test_amp_is_off_where_the_device_lacks_bf16(monkeypatch, tmp_path):
    monkeypatch.setattr(device_module, "_cpu_has_bf16", lambda: False)
    preset = dataclasses.replace(apply_overrides(get_preset("synthetic"), Overrides(quick=True)), amp=True)
    options = RunOptions(out=tmp_path, presets=("synthetic",), progress=False)
    run = PresetRun(preset, 0, tmp_path / "synthetic", load_preset_data(preset, options), options, print)
    assert not run.amp


@pytest.mark.parametrize("flag, expected", [(None, True), (False, False), (True, True)])
def test_amp_flag_overrides_the_preset(monkeypatch, tmp_path, flag, expected):
    """`--amp` / `--no-amp` (RunOptions.amp True / False) override a preset's choice; no flag (None) keeps it."""
    monkeypatch.setattr(device_module, "_cpu_has_bf16", lambda: True)
    preset = dataclasses.replace(apply_overrides(get_preset("digits"), Overrides(quick=True)), amp=True)
    options = RunOptions(out=tmp_path, presets=("digits",), progress=False, amp=flag)
    run = PresetRun(preset, 0, tmp_path / "digits", load_preset_data(preset, options), options, print)
    assert run.amp is expected
