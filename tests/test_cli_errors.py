"""Every bad input to the CLI: exit code 2, one stderr line naming what was wrong and the fix, no traceback,
and nothing written to --out by a run that cannot start. Plus `--help` on every command (exit 0).

All inputs are generated in tmp_path in the exact on-disk formats (fake_formats.py); runs `advfeatures.cli.main`
in-process, so the whole file takes seconds.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from fake_formats import (
    RELEASED_CIFAR_FOLDERS,
    make_cifar10,
    make_released_folder,
    make_released_root,
    write_malicious_pickle,
    write_malicious_torch_file,
)
from safetensors.torch import save_file

from advfeatures import build_model, load_model, save_model
from advfeatures.cli import main
from advfeatures.data import save_dataset_file

QUICK_CIFAR = ["reproduce", "--preset", "cifar10", "--quick", "--no-theory", "--no-progress"]


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def assert_bad_input(code: int, err: str, *words) -> str:
    """Exit 2, no traceback, exactly one stderr line `advfeatures: error: ...` containing every word."""
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("advfeatures: error: "), err
    for word in words:
        assert str(word) in lines[0], f"{word!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture
def cifar_root(tmp_path) -> Path:
    root = tmp_path / "data"
    make_cifar10(root, per_batch=4)
    return root


@pytest.fixture
def released_root(tmp_path) -> Path:
    root = tmp_path / "release_datasets"
    make_released_root(root, n=8, chunks=2)
    return root


def reproduce_fails(capsys, tmp_path, *extra, words=()) -> str:
    """A cifar10 quick run with `extra` arguments must refuse to start and leave --out uncreated."""
    out = tmp_path / "out"
    code, err = run_cli(capsys, *QUICK_CIFAR, *extra, "--out", out)
    line = assert_bad_input(code, err, *words)
    assert not out.exists(), f"{out} was created by a run that could not start"
    return line


# ---------------------------------------------------------------------------------------------------------
# Usage errors


def test_unknown_preset(capsys, tmp_path):
    out = tmp_path / "out"
    code, err = run_cli(capsys, "reproduce", "--preset", "nope", "--out", out)
    assert_bad_input(code, err, "'nope'", "choose from", "cifar10")
    assert not out.exists()


def test_unknown_dataset_for_train(capsys, tmp_path):
    out = tmp_path / "out" / "model.safetensors"
    code, err = run_cli(capsys, "train", "--dataset", "nope", "--out", out)
    assert_bad_input(code, err, "'nope'", "choose one of", "cifar10")
    assert not out.parent.exists()


def test_seeds_zero(capsys, tmp_path):
    out = tmp_path / "out"
    code, err = run_cli(capsys, "reproduce", "--seeds", "0", "--out", out)
    assert_bad_input(code, err, "--seeds", "positive", "0")
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------------
# The CIFAR-10 data root


def test_missing_data_root(capsys, tmp_path):
    missing = tmp_path / "no-such-root"
    reproduce_fails(capsys, tmp_path, "--data-root", missing, words=(missing, "does not exist", "--download"))


def test_root_without_cifar_files(capsys, tmp_path):
    root = tmp_path / "empty-root"
    (root / "something-else").mkdir(parents=True)
    expected = root / "cifar-10-batches-py" / "data_batch_1"
    reproduce_fails(capsys, tmp_path, "--data-root", root, words=(expected, "missing", "--download"))


def test_truncated_cifar_batch(capsys, tmp_path, cifar_root):
    batch = cifar_root / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[: batch.stat().st_size // 2])
    reproduce_fails(capsys, tmp_path, "--data-root", cifar_root, words=(batch, "truncated", "download CIFAR again"))


def test_malicious_cifar_batch_is_refused_unrun(capsys, tmp_path, cifar_root):
    marker = tmp_path / "PWNED"
    batch = cifar_root / "cifar-10-batches-py" / "test_batch"
    write_malicious_pickle(batch, marker)
    reproduce_fails(capsys, tmp_path, "--data-root", cifar_root, words=(batch, "refused", "download CIFAR again"))
    assert not marker.exists(), "the pickle payload ran"


# ---------------------------------------------------------------------------------------------------------
# --released folders


def test_released_folder_missing_a_file(capsys, tmp_path, cifar_root, released_root):
    folder = released_root / "drand_CIFAR"
    (folder / "CIFAR_lab").unlink()
    reproduce_fails(capsys, tmp_path, "--data-root", cifar_root, "--released", released_root,
                    words=(folder, "CIFAR_lab", "missing", "unpack"))


def test_released_lengths_differ(capsys, tmp_path, cifar_root, released_root):
    folder = released_root / "d_non_robust_CIFAR"
    make_released_folder(folder, torch.rand(8, 3, 32, 32), torch.zeros(6, dtype=torch.int64))
    reproduce_fails(capsys, tmp_path, "--data-root", cifar_root, "--released", released_root,
                    words=(folder, "(8, 3, 32, 32)", "(6,)", "one label per image"))


def test_released_labels_out_of_range(capsys, tmp_path, cifar_root, released_root):
    folder = released_root / "ddet_CIFAR"
    make_released_folder(folder, torch.rand(8, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 5, 6, 12]))
    reproduce_fails(capsys, tmp_path, "--data-root", cifar_root, "--released", released_root,
                    words=(folder, "0..9", "12"))


def test_released_folder_is_not_a_folder(capsys, tmp_path, cifar_root):
    missing = tmp_path / "no-release"
    reproduce_fails(capsys, tmp_path, "--data-root", cifar_root, "--released", missing,
                    words=(missing, "--released", RELEASED_CIFAR_FOLDERS[0]))


def test_released_malicious_pickle_is_refused_unrun(capsys, tmp_path, cifar_root, released_root):
    marker = tmp_path / "PWNED"
    target = released_root / "d_robust_CIFAR" / "CIFAR_ims"
    write_malicious_torch_file(target, marker)
    reproduce_fails(capsys, tmp_path, "--data-root", cifar_root, "--released", released_root,
                    words=(target, "refused", "nothing in it was run"))
    assert not marker.exists(), "the pickle payload ran"


def test_dataset_file_that_is_a_pickle_is_refused_unrun(capsys, tmp_path):
    marker = tmp_path / "PWNED"
    fake = tmp_path / "evil.safetensors"
    write_malicious_pickle(fake, marker)
    out = tmp_path / "out" / "model.safetensors"
    code, err = run_cli(capsys, "train", "--dataset-file", fake, "--epochs", "1", "--device", "cpu", "--out", out)
    assert_bad_input(code, err, fake, "pickles are never loaded", "save_dataset_file")
    assert not marker.exists(), "the pickle payload ran"
    assert not out.parent.exists()


# ---------------------------------------------------------------------------------------------------------
# --out


def test_foreign_out_folder_untouched(capsys, tmp_path, cifar_root):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "sub" / "data.bin").write_bytes(b"\x00\x01")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code, err = run_cli(capsys, *QUICK_CIFAR, "--data-root", cifar_root, "--out", out)
    assert_bad_input(code, err, out, "run.json", "new or empty folder")
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == [Path("notes.txt"), Path("sub"), Path("sub/data.bin")]


def test_out_is_a_file(capsys, tmp_path, cifar_root):
    out = tmp_path / "out"
    out.write_text("mine")
    code, err = run_cli(capsys, *QUICK_CIFAR, "--data-root", cifar_root, "--out", out)
    assert_bad_input(code, err, out, "is a file", "give a folder")
    assert out.read_text() == "mine"


def test_out_holds_an_unreadable_run_json(capsys, tmp_path, cifar_root):
    """A run folder made with other settings is resumed stage by stage (tests/test_pipeline.py); one whose run.json
    cannot be read is refused before any work, and left as it was."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text('{"advfeatures": "0.1.0", "presets": {')
    code, err = run_cli(capsys, *QUICK_CIFAR, "--data-root", cifar_root, "--out", out)
    assert_bad_input(code, err, out / "run.json", "not valid JSON", "delete it")
    assert sorted(p.name for p in out.iterdir()) == ["run.json"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device(capsys, tmp_path):
    out = tmp_path / "out"
    code, err = run_cli(capsys, "reproduce", "--device", "cuda", "--out", out)
    assert_bad_input(code, err, "'cuda'", "--device cpu")
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------------
# evaluate and train on bad files


@pytest.fixture
def digits_model(tmp_path) -> Path:
    """A small_cnn checkpoint for 1x8x8 images and 10 classes (untrained: only its shape matters)."""
    path = tmp_path / "model.safetensors"
    save_model(build_model("small_cnn", in_channels=1, num_classes=10, image_size=8), path)
    return path


@pytest.fixture
def cifar_like_file(tmp_path) -> Path:
    path = tmp_path / "cifar_like.safetensors"
    save_dataset_file(path, torch.rand(6, 3, 32, 32), torch.arange(6))
    return path


def test_evaluate_missing_checkpoint(capsys, tmp_path, cifar_like_file):
    missing = tmp_path / "nothing.safetensors"
    code, err = run_cli(capsys, "evaluate", missing, "--dataset-file", cifar_like_file, "--device", "cpu")
    assert_bad_input(code, err, missing, "advfeatures train")


def test_evaluate_truncated_checkpoint(capsys, tmp_path, digits_model, cifar_like_file):
    digits_model.write_bytes(digits_model.read_bytes()[: digits_model.stat().st_size // 2])
    code, err = run_cli(capsys, "evaluate", digits_model, "--dataset-file", cifar_like_file, "--device", "cpu")
    assert_bad_input(code, err, digits_model, "truncated", "recreate")


def test_evaluate_image_shape_mismatch(capsys, digits_model, cifar_like_file):
    code, err = run_cli(capsys, "evaluate", digits_model, "--dataset-file", cifar_like_file, "--device", "cpu")
    assert_bad_input(code, err, digits_model, "(3, 32, 32)", "(1, 8, 8)")


def test_train_dataset_file_with_nan(capsys, tmp_path):
    images = torch.rand(6, 3, 8, 8)
    images[2, 1, 3, 4] = float("nan")
    bad = tmp_path / "nan.safetensors"
    save_file({"images": images, "labels": torch.arange(6)}, str(bad))  # bypasses save_dataset_file's checks
    out = tmp_path / "out" / "model.safetensors"
    code, err = run_cli(capsys, "train", "--dataset-file", bad, "--epochs", "1", "--device", "cpu", "--out", out)
    assert_bad_input(code, err, bad, "NaN", "regenerate")
    assert not out.parent.exists()


def test_dataset_file_missing(capsys, tmp_path):
    missing = tmp_path / "missing.safetensors"
    out = tmp_path / "out" / "model.safetensors"
    code, err = run_cli(capsys, "train", "--dataset-file", missing, "--device", "cpu", "--out", out)
    assert_bad_input(code, err, missing, "no such file")
    assert not out.parent.exists()


@pytest.mark.parametrize("options", [["--steps", "0"], ["--restarts", "0", "--targets", "0"], ["--targets", "-1"]])
def test_evaluate_needs_an_attack(capsys, options, digits_model, cifar_like_file):
    code, err = run_cli(capsys, "evaluate", digits_model, "--dataset-file", cifar_like_file, *options)
    assert_bad_input(code, err, "--steps must be at least 1", "--targets")


def test_autoattack_without_the_extra_says_how_to_install(capsys, monkeypatch, tmp_path, digits_model,
                                                          cifar_like_file):
    import advfeatures.autoattack as aa

    monkeypatch.setattr(aa, "autoattack_available", lambda: False)
    code, err = run_cli(capsys, "evaluate", digits_model, "--dataset-file", cifar_like_file, "--autoattack")
    assert_bad_input(code, err, "--autoattack", "pip install 'advfeatures[autoattack]'")
    out = tmp_path / "run"
    code, err = run_cli(capsys, "reproduce", "--preset", "synthetic", "--quick", "--no-theory", "--out", out,
                        "--autoattack")
    assert_bad_input(code, err, "--autoattack", "pip install 'advfeatures[autoattack]'")
    assert not out.exists()  # refused before any write


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_negative_limit(capsys, tmp_path, command, digits_model, cifar_like_file):
    out = tmp_path / "out" / "model.safetensors"
    argv = ["train", "--out", out] if command == "train" else ["evaluate", digits_model]
    code, err = run_cli(capsys, *argv, "--dataset-file", cifar_like_file, "--limit", "-2", "--device", "cpu")
    assert_bad_input(code, err, "--limit", "positive", "-2")
    if command == "train":
        assert not out.parent.exists()


def test_evaluate_unknown_split_is_a_usage_error(capsys, digits_model, cifar_like_file):
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(digits_model), "--dataset-file", str(cifar_like_file), "--split", "bogus"])
    assert exc.value.code == 2
    assert "--split" in capsys.readouterr().err


def test_train_zero_epochs_saves_the_initial_model(capsys, tmp_path, cifar_like_file):
    out = tmp_path / "model.safetensors"
    argv = ["train", "--dataset-file", cifar_like_file, "--epochs", "0", "--width", "4", "--device", "cpu"]
    code, err = run_cli(capsys, *argv, "--out", out)
    assert code == 0, err
    assert load_model(out)(torch.rand(2, 3, 32, 32)).shape == (2, 6)


# ---------------------------------------------------------------------------------------------------------
# --help


@pytest.mark.parametrize("argv", [[], ["reproduce"], ["train"], ["evaluate"], ["theory"]])
def test_help_exits_zero(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    captured = capsys.readouterr()
    assert "usage: advfeatures" in captured.out
    assert "exit code 2" in captured.out
    assert captured.err == ""


def test_no_pickle_module_used_for_released(tmp_path, monkeypatch):
    """Belt and braces: loading a released folder never calls pickle.load / pickle.loads."""
    from advfeatures import load_dataset_file

    make_released_root(tmp_path, n=4, chunks=2)

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle.load(s) was called on a released file")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    data = load_dataset_file(tmp_path / RELEASED_CIFAR_FOLDERS[0], num_classes=10)
    assert data["images"].shape == (4, 3, 32, 32)


def test_safetensors_with_128_byte_header_is_not_taken_for_a_pickle(tmp_path):
    """A safetensors file starts with its header length (little-endian u64); 128 makes the first byte 0x80,
    the same byte as a pickle's PROTO opcode. Such a valid file must load, not be refused as a pickle."""
    from advfeatures import load_dataset_file

    path = tmp_path / "header128.safetensors"
    save_file({"images": torch.rand(6, 3, 8, 8), "labels": torch.arange(6)}, str(path))
    assert path.read_bytes()[:1] == b"\x80"  # the case under test
    data = load_dataset_file(path, num_classes=10)
    assert data["images"].shape == (6, 3, 8, 8) and data["labels"].dtype == torch.int64
