"""`advfeatures reproduce --preset cifar10 --quick` end to end on a fake CIFAR-10 root in the exact on-disk format.

The root (5 training batches of 60 images, a test batch of 100) is written by fake_formats.py, so this runs
offline on a CPU. Quick mode: the first 256 training images, all 100 test images, width-8 ResNet-50, 2 epochs,
10 attack steps, 1 restart. It checks the pipeline and the run-directory contract of DESIGN.md, not the paper.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch
from fake_formats import RELEASED_CIFAR_FOLDERS, make_cifar10_root, make_released_root

import advfeatures
from advfeatures.cli import main
from advfeatures.presets import get_preset

pytestmark = pytest.mark.slow

TRAINED = ("D", "D_adv", "D_R", "D_NR", "D_rand", "D_det")
CONSTRUCTED = ("D_R", "D_NR", "D_rand", "D_det")
RELEASED_NAME = dict(zip(CONSTRUCTED, RELEASED_CIFAR_FOLDERS, strict=True))
QUICK = ["reproduce", "--preset", "cifar10", "--quick", "--no-theory", "--no-progress", "--jobs", "1"]


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    return make_cifar10_root(tmp_path_factory.mktemp("data"), train_per_batch=60, n_test=100)


@pytest.fixture(scope="module")
def quick_run(cifar_root, tmp_path_factory) -> tuple[Path, float]:
    """One quick run shared by the tests below: (run directory, wall seconds)."""
    out = tmp_path_factory.mktemp("run") / "out"
    t0 = time.perf_counter()
    code = main([*QUICK, "--data-root", str(cifar_root), "--out", str(out)])
    seconds = time.perf_counter() - t0
    assert code == 0
    return out, seconds


def read_results(out: Path) -> dict:
    return json.loads((out / "cifar10" / "results.json").read_text())


def check_accuracy_table(results: dict) -> None:
    for name in TRAINED:
        entry = results["accuracy"][name]
        for key in ("clean", "robust"):
            assert 0.0 <= entry[key] <= 1.0, (name, key, entry[key])


def test_quick_run_results_json(quick_run):
    out, seconds = quick_run
    results = read_results(out)
    assert results["preset"] == "cifar10"
    assert results["seeds"] == [0]
    assert results["threat_model"]["norm"] == "l2"
    assert math.isclose(results["threat_model"]["eps"], 0.25)
    check_accuracy_table(results)
    assert results["released"] is None
    assert set(CONSTRUCTED) <= set(results["construction"])
    # the quick overrides reached the preset: 256 training images, all 100 fake test images, width 8
    assert results["settings"]["limit_train"] == 256
    assert results["per_seed"][0]["accuracy"]["D"]["curve_images"] == 100
    assert results["per_seed"][0]["accuracy"]["D"]["train_images"] == 256
    assert results["settings"]["model"]["options"]["width"] == 8
    stages = results["seconds"]["stages"]
    assert set(TRAINED) <= set(stages)
    print(f"quick cifar10 run: {seconds:.1f}s wall; slowest stages: "
          + ", ".join(f"{k} {v:.1f}s" for k, v in sorted(stages.items(), key=lambda kv: -kv[1])[:4]))


def test_quick_run_models_load_and_predict(quick_run):
    out, _ = quick_run
    batch = torch.rand(2, 3, 32, 32)
    for name in TRAINED:
        model = advfeatures.load_model(out / "cifar10" / "models" / f"{name}.safetensors")
        assert not model.training
        with torch.no_grad():
            logits = model(batch)
        assert logits.shape == (2, 10), name
        assert torch.isfinite(logits).all(), name


def test_quick_run_datasets_and_report(quick_run):
    out, _ = quick_run
    files = sorted((out / "cifar10" / "datasets").glob("*.safetensors"))
    assert {f"{name}.safetensors" for name in CONSTRUCTED} <= {f.name for f in files}
    for name in CONSTRUCTED:
        data = advfeatures.load_dataset_file(out / "cifar10" / "datasets" / f"{name}.safetensors")
        images, labels = data["images"], data["labels"]
        assert images.shape == (256, 3, 32, 32), name
        assert images.dtype == torch.float32 and labels.dtype == torch.int64, name
        assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0, name
        assert labels.shape == (256,) and int(labels.min()) >= 0 and int(labels.max()) <= 9, name
    assert (out / "report.html").is_file() and (out / "report.html").stat().st_size > 0
    assert (out / "results.md").is_file() and "cifar10" in (out / "results.md").read_text()
    assert (out / "run.json").is_file()


def test_released_datasets_replace_construction(cifar_root, tmp_path):
    """--released: the four folders are read (never unpickled as code) and trained on instead of constructing."""
    released = tmp_path / "release_datasets"
    written = make_released_root(released, n=64, chunks=4)
    out = tmp_path / "out"
    # smaller than --quick alone (64 images, 1 epoch, 2 attack steps): only the released plumbing is under test
    code = main([*QUICK, "--limit", "64", "--epochs", "1", "--steps", "2", "--data-root", str(cifar_root),
                 "--released", str(released), "--out", str(out)])
    assert code == 0
    results = read_results(out)
    assert results["released"] == str(released)
    check_accuracy_table(results)
    for name, folder in RELEASED_NAME.items():
        assert results["construction"][name] == {"source": "released"}, name
        data = advfeatures.load_dataset_file(out / "cifar10" / "datasets" / f"{name}.safetensors")
        images, labels = written[folder]
        torch.testing.assert_close(data["images"], images)
        assert torch.equal(data["labels"], labels), name
        assert (out / "cifar10" / "models" / f"{name}.safetensors").is_file()


def test_cpu_tier_preset_keeps_the_papers_threat_model_and_pools_globally():
    """cifar10_cpu: the paper's eps (0.5 to train adversarially, 0.25 to evaluate; relabelling at 1.0, the measured
    departure the preset documents) and a globally pooled network, so the representation inversion matches is a
    channel vector, not the image's pixels."""
    preset = get_preset("cifar10_cpu")
    assert preset.dataset == "cifar10"
    assert math.isclose(preset.threat.eps, 0.25) and preset.threat.norm == "l2"
    assert math.isclose(preset.adversarial_train.adversarial.eps, 0.5)
    assert math.isclose(preset.relabel.eps, 1.0)
    model = advfeatures.build_model(preset.model.arch, in_channels=3, num_classes=10, image_size=32,
                                    **preset.model.options)
    representation = model.representation(torch.rand(2, 3, 32, 32))
    assert representation.shape[1] < 3 * 32 * 32 // 4  # far fewer numbers than pixels: inversion cannot copy
    assert preset.limit_train is not None and preset.limit_test is not None


def test_cpu_tier_quick_run(cifar_root, tmp_path):
    """`reproduce --preset cifar10_cpu --quick` on the fake root: every stage runs and writes its artefacts."""
    out = tmp_path / "out"
    code = main(["reproduce", "--preset", "cifar10_cpu", "--quick", "--no-theory", "--no-progress", "--limit", "64",
                 "--epochs", "1", "--steps", "2", "--data-root", str(cifar_root), "--out", str(out)])
    assert code == 0
    results = json.loads((out / "cifar10_cpu" / "results.json").read_text())
    assert results["preset"] == "cifar10_cpu"
    check_accuracy_table(results)
    assert results["settings"]["model"]["arch"] == "resnet9"
    assert set(CONSTRUCTED) <= set(results["construction"])
    assert {"transfer", "robust_source", "attack_check"} <= set(results["per_seed"][0])
    for name in TRAINED:
        assert (out / "cifar10_cpu" / "models" / f"{name}.safetensors").is_file(), name
    assert "cifar10_cpu" in (out / "results.md").read_text()
