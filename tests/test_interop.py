"""`advfeatures import-model` and advfeatures.interop: the authors' (MadryLab robustness) and RobustBench files.

The reference networks (tests/reference_models.py) are written from the authors' and RobustBench's sources,
independently of advfeatures' models. Each test fills one with random weights and non-trivial BatchNorm
statistics, writes the file layout its library writes (with plain pickle: the suite does not need dill or the
authors' library; benchmarks/compare/vs_authors_import.py checks against the real thing), imports it, and compares
logits and representations. Widths are tiny except in one full-size ResNet-50 test.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from fake_formats import write_malicious_pickle, write_malicious_torch_file
from reference_models import (
    CIFAR_MEAN,
    CIFAR_STD,
    RIN_MEAN,
    RIN_STD,
    RefResNet,
    RefWideResNet,
    randomise,
    resnet,
    robustness_checkpoint,
    robustness_forward,
    robustness_state,
)
from safetensors import safe_open

from advfeatures import load_model
from advfeatures.cli import main
from advfeatures.data import save_dataset_file
from advfeatures.interop import import_checkpoint, read_checkpoint


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def assert_same_function(imported, reference, x, *, forward=robustness_forward, atol=1e-5, **kwargs):
    ref_logits, ref_latent = forward(reference, x, **kwargs)
    with torch.no_grad():
        logits, latent = imported(x), imported.representation(x)
    assert logits.shape == ref_logits.shape and latent.shape == ref_latent.shape
    assert (logits - ref_logits).abs().max() <= atol
    assert (latent - ref_latent).abs().max() <= atol * max(1.0, float(ref_latent.abs().max()))


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_refused(capsys, src: Path, out: Path, *words, argv=()) -> str:
    """Exit 2, one stderr line naming the file and every word, and nothing written beside --out."""
    before = set(out.parent.iterdir()) if out.parent.exists() else set()
    code, _, err = run_cli(capsys, "import-model", src, "--out", out, *argv)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("advfeatures: error: "), err
    for word in (str(src), *words):
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    assert not out.exists()
    assert (set(out.parent.iterdir()) if out.parent.exists() else set()) == before, "something was left behind"
    return lines[0]


# --------------------------------------------------------------------------------------------------------
# robustness (the paper authors' library)


@pytest.mark.parametrize("key", ["model", "state_dict"])
def test_robustness_resnet50_checkpoint_imports_exactly(tmp_path, capsys, images, key):
    reference = resnet()
    src, out = tmp_path / "checkpoint.pt.best", tmp_path / "robust.safetensors"
    torch.save(robustness_checkpoint(reference, key=key), src)
    code, stdout, err = run_cli(capsys, "import-model", src, "--out", out)
    assert code == 0, err
    assert "robustness" in stdout and "resnet50" in stdout and "epoch 150" in stdout and str(out) in stdout
    model = load_model(out)
    assert model.config["arch"] == "resnet50" and model.config["width"] == 4 and model.clamp_input
    assert_same_function(model, reference, images)
    assert_same_function(model, reference, images * 1.6 - 0.3)  # out-of-box inputs: clamped, as theirs
    with safe_open(str(out), framework="pt") as f:
        provenance = json.loads(f.metadata()["imported"])
    assert provenance["library"] == "robustness" and provenance["epoch"] == 150 and len(provenance["sha256"]) == 64


def test_full_size_resnet50_the_papers_model(tmp_path, images):
    reference = resnet(width=64)
    src = tmp_path / "cifar_l2_0_5.pt"
    torch.save(robustness_checkpoint(reference), src)
    imported = import_checkpoint(src, tmp_path / "robust.safetensors")
    assert imported.model.config["width"] == 64 and imported.model.head.in_features == 2048
    assert torch.allclose(imported.model.mean.flatten(), CIFAR_MEAN)
    assert_same_function(load_model(tmp_path / "robust.safetensors"), reference, images[:2], atol=1e-4)


def test_robustness_resnet18(tmp_path, images):
    reference = resnet(bottleneck=False, width=8, seed=3)
    torch.save(robustness_checkpoint(reference), tmp_path / "r18.pt")
    imported = read_checkpoint(tmp_path / "r18.pt")
    assert imported.model.config["arch"] == "resnet18"
    assert_same_function(imported.model, reference, images)


def test_robustness_restricted_imagenet_layout(tmp_path):
    """robustness's imagenet_models are torchvision's layout (7x7 stem, max-pool, downsample, fc); 9 classes."""
    import torchvision

    torch.manual_seed(0)
    reference = randomise(torchvision.models.resnet18(num_classes=9))

    def forward(model, x):
        with torch.no_grad():
            z = (x.clamp(0, 1) - RIN_MEAN.view(1, 3, 1, 1)) / RIN_STD.view(1, 3, 1, 1)
            latent = torch.flatten(model.avgpool(model.layer4(model.layer3(model.layer2(model.layer1(
                model.maxpool(model.relu(model.bn1(model.conv1(z))))))))), 1)
            return model.fc(latent), latent

    torch.save(robustness_checkpoint(reference, mean=RIN_MEAN, std=RIN_STD), tmp_path / "rin.pt")
    imported = read_checkpoint(tmp_path / "rin.pt")
    c = imported.model.config
    assert (c["arch"], c["stem"], c["num_classes"], c["image_size"]) == ("resnet18", "imagenet", 9, 224)
    assert imported.dataset == "restricted_imagenet"
    assert_same_function(imported.model, reference, torch.rand(2, 3, 64, 64), forward=forward)


def test_checkpoint_without_module_prefix_or_attacker_copy(tmp_path, images):
    reference = resnet()
    state = {k.removeprefix("module."): v for k, v in robustness_state(reference).items()
             if not k.startswith("module.attacker.")}
    torch.save({"model": state, "epoch": 3}, tmp_path / "plain.pt")
    assert_same_function(read_checkpoint(tmp_path / "plain.pt").model, reference, images)


# --------------------------------------------------------------------------------------------------------
# RobustBench


def robustbench_forward(model, x, mean=CIFAR_MEAN, std=CIFAR_STD):
    """RobustBench's Engstrom2019RobustnessNet: (x - mu) / sigma, then the ResNet (no clamp)."""
    with torch.no_grad():
        return model((x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1))


@pytest.mark.parametrize("wrap", ["state_dict+module", "bare"])
def test_robustbench_engstrom_resnet50(tmp_path, images, wrap):
    reference = resnet(seed=5)
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3])
    state = {**reference.state_dict(), "mu": mean.view(1, 3, 1, 1), "sigma": std.view(1, 3, 1, 1)}
    if wrap == "bare":
        torch.save(state, tmp_path / "Engstrom2019Robustness.pt")
    else:
        torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, tmp_path / "Engstrom2019Robustness.pt")
    imported = read_checkpoint(tmp_path / "Engstrom2019Robustness.pt")
    assert imported.library == "robustbench" and not imported.model.clamp_input
    assert_same_function(imported.model, reference, images, forward=robustbench_forward, mean=mean, std=std)
    assert_same_function(imported.model, reference, images * 1.6 - 0.3, forward=robustbench_forward, mean=mean,
                         std=std)  # no clamp on this side


def test_robustbench_file_without_mu_sigma_uses_its_class_defaults(tmp_path, images):
    """RobustBench loads Engstrom2019Robustness even when mu / sigma are absent (its class holds CIFAR's)."""
    reference = resnet(seed=6)
    torch.save(reference.state_dict(), tmp_path / "Engstrom2019Robustness.pt")
    imported = read_checkpoint(tmp_path / "Engstrom2019Robustness.pt", library="robustbench")
    assert any("mu / sigma" in note for note in imported.notes)
    assert_same_function(imported.model, reference, images, forward=robustbench_forward)


@pytest.mark.parametrize("depth,widen", [(10, 1), (16, 2)])
def test_robustbench_standard_wide_resnet(tmp_path, capsys, images, depth, widen):
    """RobustBench's `Standard` is a WideResNet on raw [0, 1] input (no normalisation)."""
    torch.manual_seed(depth)
    reference = randomise(RefWideResNet(depth, widen), seed=depth)
    torch.save({"state_dict": {"module." + k: v for k, v in reference.state_dict().items()}}, tmp_path / "Standard.pt")
    out = tmp_path / "standard.safetensors"
    code, stdout, err = run_cli(capsys, "import-model", tmp_path / "Standard.pt", "--out", out)
    assert code == 0, err
    model = load_model(out)
    assert (model.config["arch"], model.config["depth"], model.config["width"]) == ("wide_resnet", depth, widen)

    def raw(m, x):
        with torch.no_grad():
            return m(x)

    assert_same_function(model, reference, images, forward=raw)


def test_wide_resnet_default_is_wrn_28_10():
    from advfeatures import build_model

    model = build_model("wide_resnet", in_channels=3, num_classes=10, image_size=32)
    reference = RefWideResNet()
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in reference.parameters())
    assert model.head.in_features == 640


# --------------------------------------------------------------------------------------------------------
# Every command takes it


def test_evaluate_accepts_an_imported_model(tmp_path, capsys):
    torch.save(robustness_checkpoint(resnet()), tmp_path / "ckpt.pt")
    out, data = tmp_path / "m.safetensors", tmp_path / "data.safetensors"
    assert run_cli(capsys, "import-model", tmp_path / "ckpt.pt", "--out", out)[0] == 0
    save_dataset_file(data, torch.rand(4, 3, 32, 32), torch.arange(4))
    code, stdout, err = run_cli(capsys, "evaluate", out, "--dataset-file", data, "--eps", "0.25", "--steps", "2",
                                "--restarts", "1", "--targets", "0", "--device", "cpu")
    assert code == 0, err
    assert "clean accuracy" in stdout and "robust accuracy" in stdout


# --------------------------------------------------------------------------------------------------------
# Refusals: exit 2, one line naming the file, nothing run, nothing written


@pytest.mark.parametrize("kind", ["torch", "pickle"])
def test_malicious_pickle_is_refused_unrun(tmp_path, capsys, kind):
    src, marker, out = tmp_path / "evil.pt", tmp_path / "PWNED", tmp_path / "out" / "m.safetensors"
    (write_malicious_torch_file if kind == "torch" else write_malicious_pickle)(src, marker)
    assert_refused(capsys, src, out, "refused", "nothing in it was run")
    assert not marker.exists(), "the pickle's payload ran"
    assert not out.parent.exists()


def test_malicious_object_inside_a_real_looking_checkpoint(tmp_path, capsys):
    from fake_formats import ShellPayload

    marker = tmp_path / "PWNED"
    checkpoint = robustness_checkpoint(resnet())
    checkpoint["schedule"] = ShellPayload(marker)
    torch.save(checkpoint, tmp_path / "ckpt.pt")
    assert_refused(capsys, tmp_path / "ckpt.pt", tmp_path / "m.safetensors", "refused")
    assert not marker.exists()


def test_only_weights_only_loads_are_used(tmp_path, monkeypatch):
    torch.save(robustness_checkpoint(resnet()), tmp_path / "ckpt.pt")
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        assert kwargs.get("weights_only") is True and "pickle_module" not in kwargs
        return real_load(*args, **kwargs)

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle.load(s) called directly")

    monkeypatch.setattr(torch, "load", spy)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    read_checkpoint(tmp_path / "ckpt.pt")
    assert len(calls) == 1


def _change(state: dict, key: str, value: torch.Tensor | None = None) -> dict:
    """Drop (value None) or set `key` in both copies of the weights (module.model.*, module.attacker.model.*)."""
    keys = [key, key.replace("module.model.", "module.attacker.model.")] if key.startswith("module.model.") else [key]
    state = {k: v for k, v in state.items() if value is not None or k not in keys}
    return {**state, **({k: value for k in keys} if value is not None else {})}


@pytest.mark.parametrize("change,words", [
    (lambda s: _change(s, "module.model.layer4.2.bn3.running_var"), ["1 missing", "layer4.2.bn3.running_var"]),
    (lambda s: _change(s, "module.model.extra.weight", torch.zeros(2)), ["1 unexpected", "extra.weight"]),
    (lambda s: _change(s, "module.model.linear.weight", torch.zeros(10, 7)), ["wrong shape", "linear.weight"]),
    (lambda s: _change(s, "module.normalizer.new_std"), ["missing", "normalizer.new_std"]),
    (lambda s: {**s, "module.attacker.model.linear.bias": torch.ones(10)}, ["inconsistent"]),
    (lambda s: _change(s, "module.model.layer1.0.bn1.num_batches_tracked"), None),  # torch < 0.4.1 files: fine
])
def test_key_mismatch_exits_2_and_writes_nothing(tmp_path, capsys, change, words):
    checkpoint = robustness_checkpoint(resnet())
    checkpoint["model"] = change(checkpoint["model"])
    torch.save(checkpoint, tmp_path / "ckpt.pt")
    if words is None:
        assert run_cli(capsys, "import-model", tmp_path / "ckpt.pt", "--out", tmp_path / "m.safetensors")[0] == 0
        return
    assert_refused(capsys, tmp_path / "ckpt.pt", tmp_path / "m.safetensors", *words)


def test_unsupported_architecture_is_named(tmp_path, capsys):
    torch.manual_seed(0)
    resnet34 = RefResNet(False, (3, 4, 6, 3), width=4)
    torch.save(robustness_checkpoint(resnet34), tmp_path / "r34.pt")
    assert_refused(capsys, tmp_path / "r34.pt", tmp_path / "m.safetensors", "[3, 4, 6, 3]", "ResNet-50")


def _not_checkpoints(tmp_path: Path) -> dict[str, Path]:
    files = {}
    files["text"] = tmp_path / "notes.txt"
    files["text"].write_text("not a checkpoint\n")
    files["junk"] = tmp_path / "junk.pt"
    files["junk"].write_bytes(bytes(range(256)) * 8)
    full = tmp_path / "full.pt"
    torch.save(robustness_checkpoint(resnet()), full)
    files["truncated"] = tmp_path / "truncated.pt"
    files["truncated"].write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    files["empty"] = tmp_path / "empty.pt"
    files["empty"].write_bytes(b"")
    files["tensor"] = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), files["tensor"])
    files["no weights"] = tmp_path / "meta.pt"
    torch.save({"epoch": 3, "optimizer": {"state": {}}}, files["no weights"])
    files["missing"] = tmp_path / "nothing_here.pt"
    return files


@pytest.mark.parametrize("kind", ["text", "junk", "truncated", "empty", "tensor", "no weights", "missing"])
def test_not_a_checkpoint_exits_2(tmp_path, capsys, kind):
    src = _not_checkpoints(tmp_path)[kind]
    assert_refused(capsys, src, tmp_path / "out" / "m.safetensors")


@pytest.mark.parametrize("argv,words", [
    (["--arch", "wide_resnet"], ["--arch wide_resnet", "leave out --arch"]),
    (["--arch", "resnet18"], ["--arch resnet18"]),
    (["--from", "robustbench"], ["--from robustness"]),
    (["--dataset", "restricted_imagenet"], ["10 outputs", "restricted_imagenet has 9"]),
])
def test_options_that_contradict_the_file(tmp_path, capsys, argv, words):
    torch.save(robustness_checkpoint(resnet()), tmp_path / "ckpt.pt")
    assert_refused(capsys, tmp_path / "ckpt.pt", tmp_path / "m.safetensors", *words, argv=argv)


def test_from_robustness_on_a_robustbench_file(tmp_path, capsys):
    torch.save(resnet().state_dict(), tmp_path / "rb.pt")
    assert_refused(capsys, tmp_path / "rb.pt", tmp_path / "m.safetensors", "--from robustbench",
                   argv=["--from", "robustness"])


def test_explicit_options_that_agree_are_accepted(tmp_path, capsys):
    torch.save(robustness_checkpoint(resnet()), tmp_path / "ckpt.pt")
    code, _, err = run_cli(capsys, "import-model", tmp_path / "ckpt.pt", "--out", tmp_path / "m.safetensors",
                           "--from", "robustness", "--arch", "resnet50", "--dataset", "cifar10")
    assert code == 0, err


def test_out_must_not_be_the_source(tmp_path, capsys):
    src = tmp_path / "ckpt.pt"
    torch.save(robustness_checkpoint(resnet()), src)
    size = src.stat().st_size
    code, _, err = run_cli(capsys, "import-model", src, "--out", src)
    assert code == 2 and "source file itself" in err
    assert src.stat().st_size == size


def test_unknown_option_value_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["import-model", str(tmp_path / "x.pt"), "--out", str(tmp_path / "y"), "--from", "timm"])
    assert exc.value.code == 2


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["import-model", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "weights_only" in out and "exit code 2" in out
