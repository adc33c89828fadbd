"""`reproduce --standard-model A --robust-model B`: given checkpoints replace the training of D and D_adv.

The given models are untrained tiny networks (saved with save_model): what is checked is the plumbing, not
accuracy. One two-seed quick run (~1 min on 2 cores) serves most tests; bad inputs stop before any work.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fake_formats import write_malicious_torch_file

from advfeatures import build_model, load_model, save_model
from advfeatures.cli import main
from advfeatures.data import as_tensors, load_dataset, save_dataset_file
from advfeatures.evaluation import clean_accuracy
from advfeatures.pipeline import Overrides, apply_overrides
from advfeatures.presets import get_preset

QUICK = ["reproduce", "--preset", "synthetic", "--quick", "--no-progress", "--no-theory", "--jobs", "1"]
SEED_DIRS = ("synthetic", "synthetic/seeds/1")


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """(exit code, stdout, stderr); a worker's stage line ("[synthetic seed 1] D ...", two seeds run in two
    processes) with its label turned back into the one-process indent, so every stage line starts with two spaces."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, re.sub(r"(?m)^\[\w+ seed \d+\] ", "  ", captured.out), captured.err


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def given(tmp_path_factory) -> dict[str, Path]:
    """An untrained small_cnn as D (the quick preset's own architecture) and an untrained MLP as D_adv."""
    folder = tmp_path_factory.mktemp("given")
    torch.manual_seed(1)
    paths = {"D": folder / "standard.safetensors", "D_adv": folder / "robust.safetensors"}
    save_model(build_model("small_cnn", in_channels=1, num_classes=10, image_size=16, width=8), paths["D"])
    save_model(build_model("mlp", in_channels=1, num_classes=10, image_size=16, hidden=32), paths["D_adv"])
    return paths


@pytest.fixture(scope="module")
def given_run(tmp_path_factory, given) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    code = main([*QUICK, "--seeds", "2", "--standard-model", str(given["D"]), "--robust-model", str(given["D_adv"]),
                 "--out", str(out)])
    assert code == 0
    return out


def results(out: Path) -> dict:
    return json.loads((out / "synthetic" / "results.json").read_text())


def test_given_models_are_used_not_trained(given_run, given):
    r = results(given_run)
    x = torch.rand(4, 1, 16, 16)
    for folder in SEED_DIRS:  # the same given models for every seed
        for name, path in given.items():
            copy = given_run / folder / "models" / f"{name}.safetensors"
            assert copy.read_bytes() == path.read_bytes(), (folder, name)
            with torch.no_grad():
                assert torch.equal(load_model(copy)(x), load_model(path)(x))
            assert not (given_run / folder / "models" / f".{name}.checkpoint").exists()  # no training started
            assert not (given_run / folder / "stages" / f"{name}.json").exists()
            assert (given_run / folder / "stages" / f"given_{name}.json").is_file()
    stages = r["seconds"]["stages"]
    assert "D" not in stages and "D_adv" not in stages and {"given_D", "given_D_adv"} <= set(stages)
    for seed in r["per_seed"]:
        for name in ("D", "D_adv"):
            assert "train_seconds" not in seed["accuracy"][name]
            assert seed["accuracy"][name]["given"]["sha256"] == sha256(given[name])


def test_given_models_are_evaluated_and_downstream_stages_run(given_run, given):
    r = results(given_run)
    n_test = r["settings"]["limit_test"]
    test = as_tensors(load_dataset("synthetic", "test"))
    # the preset's own evaluation of the given model: its clean accuracy on the run's test images, every seed
    assert r["accuracy"]["D"]["clean"] == pytest.approx(
        clean_accuracy(load_model(given["D"]), test.images[:n_test], test.labels[:n_test]))
    assert r["accuracy"]["D"]["clean_std"] == 0.0
    for name in ("D", "D_adv", "D_R", "D_NR", "D_rand", "D_det"):
        entry = r["accuracy"][name]
        assert 0 <= entry["clean"] <= 1 and 0 <= entry["robust"] <= 1 and set(entry["curve"]) >= {"0", "1"}
    for name in ("D_R", "D_NR", "D_rand", "D_det"):
        assert (given_run / "synthetic" / "datasets" / f"{name}.safetensors").is_file()
        assert f"construct_{name}" in r["seconds"]["stages"] and name in r["seconds"]["stages"]
    assert set(r["attack_check"]["models"]) == {"D", "D_adv", "D_R", "D_NR"}
    # a given D is not one of the transfer architectures: each trains its own D (no "(source)" point)
    assert "small_cnn" in r["transfer"] and not any("(source)" in k for k in r["transfer"])
    assert r["transfer"]["source"]["fooled"] >= 0
    assert set(r["robust_source"]) == {"D_rand", "D_det"}


def test_results_and_report_name_the_sources(given_run, given):
    sources = results(given_run)["sources"]
    for name, flag in (("D", "--standard-model"), ("D_adv", "--robust-model")):
        s = sources[name]
        assert s["origin"] == "given" and s["trained_here"] is False and s["flag"] == flag
        assert s["path"] == str(given[name].absolute()) and s["sha256"] == sha256(given[name])
        assert s["same_for_every_seed"] is True and s["seeds"] == 2
    assert sources["D"]["arch"] == "small_cnn" and sources["D_adv"]["arch"] == "mlp"
    for report in ("results.md", "report.html"):
        text = (given_run / report).read_text()
        for name in ("D", "D_adv"):
            assert str(given[name].absolute()) in text and sha256(given[name])[:12] in text, report
        assert "not trained here" in text and "same for all 2 seeds" in text, report
        # the claims table does not credit adversarial training it did not run
        assert "adversarial training buys robustness" not in text, report
        assert "the given robust model is more robust than D (adversarial training was not run here)" in text
        assert "the given standard model is not robust" in text and "standard models are not robust" not in text


def test_switching_a_source_reruns_what_is_built_on_it_and_nothing_else(given_run, given, tmp_path, capsys):
    """Sources never mix: the given files' hashes are settings of the stages that use them. A copy of the given
    run resumed with D trained instead: D and everything built on it run again; D_adv (still the given file) and
    what is built on it alone are loaded."""
    import shutil

    trained = apply_overrides(get_preset("synthetic"), Overrides(quick=True)).fingerprint()
    manifest = json.loads((given_run / "run.json").read_text())["presets"]["synthetic"]
    assert manifest != trained and manifest.startswith(trained)
    assert sha256(given["D"])[:12] in manifest and sha256(given["D_adv"])[:12] in manifest
    out = tmp_path / "switched"
    shutil.copytree(given_run, out)
    code, log, _ = run_cli(capsys, *QUICK, "--robust-model", given["D_adv"], "--out", out)
    assert code == 0 and "last run with other settings" in log
    lines = {line.split()[0]: line for line in log.splitlines() if line.startswith("  ")}
    reran = {name for name, line in lines.items() if not line.endswith("cached")}
    assert reran == {"D", "construct_D_NR", "construct_D_rand", "construct_D_det", "D_NR", "D_rand", "D_det",
                     "D_det_unleaked", "audit", "attack_check_own_32", "transfer", "construct_D_det_bugs",
                     "followup_nakkiran", "followup_goh"}, lines
    assert {"given_D_adv", "construct_D_R", "D_R", "robust_source", "followup_ensemble", "followup_wallace"} <= set(
        lines) - reran
    r = results(out)
    assert r["sources"]["D"]["origin"] == "trained" and r["sources"]["D_adv"]["origin"] == "given"
    assert (out / "synthetic" / "models" / "D.safetensors").read_bytes() != given["D"].read_bytes()
    assert r["per_seed"][0]["accuracy"]["D_R"] == results(given_run)["per_seed"][0]["accuracy"]["D_R"]
    assert json.loads((out / "run.json").read_text())["presets"]["synthetic"] != manifest


def test_rerun_resumes_and_a_replaced_copy_is_reinstalled(given_run, given, capsys):
    argv = [*QUICK, "--seeds", "2", "--standard-model", given["D"], "--robust-model", given["D_adv"],
            "--out", given_run]
    code, out, _ = run_cli(capsys, *argv)
    stage_lines = [line for line in out.splitlines() if line.startswith("  ")]
    assert code == 0 and stage_lines and all(line.endswith("cached") for line in stage_lines), stage_lines
    # the run's copy of D replaced by another checkpoint: the cached given stage is not trusted, D reinstalled
    copy = given_run / "synthetic" / "models" / "D.safetensors"
    copy.write_bytes(given["D_adv"].read_bytes())
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0 and any(line.split()[0] == "given_D" and "cached record unusable" in line
                             for line in out.splitlines() if line.startswith("  "))
    assert copy.read_bytes() == given["D"].read_bytes()
    rebuilt = [line.split()[0] for line in out.splitlines() if line.startswith("  ") and not line.endswith("cached")]
    assert rebuilt == ["given_D", "given_D"], out  # the notice and the re-evaluation; everything else cached


@pytest.fixture
def bad_files(tmp_path) -> dict[str, Path]:
    files = {"missing": tmp_path / "nowhere.safetensors", "garbage": tmp_path / "garbage.safetensors",
             "dataset": tmp_path / "dataset.safetensors", "shape": tmp_path / "cifar_shaped.safetensors",
             "channels": tmp_path / "rgb.safetensors", "classes": tmp_path / "five_classes.safetensors"}
    files["garbage"].write_bytes(b"not a checkpoint " * 20)
    save_dataset_file(files["dataset"], torch.rand(4, 1, 16, 16), torch.zeros(4, dtype=torch.int64))
    save_model(build_model("small_cnn", in_channels=1, num_classes=10, image_size=32, width=8), files["shape"])
    save_model(build_model("small_cnn", in_channels=3, num_classes=10, image_size=16, width=8), files["channels"])
    save_model(build_model("small_cnn", in_channels=1, num_classes=5, image_size=16, width=8), files["classes"])
    return files


@pytest.mark.parametrize("flag", ["--standard-model", "--robust-model"])
@pytest.mark.parametrize("kind, words", [
    ("missing", ["no such file", "import-model"]),
    ("garbage", ["not a readable safetensors file", "import-model"]),
    ("dataset", ["not an advfeatures model checkpoint", "import-model"]),
    ("shape", ["1x32x32 images", "1x16x16 images", "synthetic", "--preset"]),
    ("channels", ["3x16x16 images", "1x16x16 images"]),
    ("classes", ["5 classes", "10 classes"]),
])
def test_bad_given_model_exits_2_before_any_write(capsys, tmp_path, bad_files, flag, kind, words):
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, *QUICK, flag, bad_files[kind], "--out", out)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("advfeatures: error: "), err
    assert flag in lines[0] and all(w in lines[0] for w in words), lines[0]
    assert not out.exists()


def test_a_pickle_given_as_model_is_refused_unrun(capsys, tmp_path):
    bad, marker, out = tmp_path / "model.pt", tmp_path / "pwned", tmp_path / "out"
    write_malicious_torch_file(bad, marker)
    code, _, err = run_cli(capsys, *QUICK, "--robust-model", bad, "--out", out)
    assert code == 2 and "--robust-model" in err and "import-model" in err
    assert not marker.exists() and not out.exists()


def test_torchrun_two_processes_use_the_given_models(given_run, given, tmp_path):
    """Rank 0 installs the copies, every rank evaluates them; the numbers match the one-process run's seed 0."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
           "-m", "advfeatures", *QUICK, "--device", "cpu", "--standard-model", str(given["D"]),
           "--robust-model", str(given["D_adv"]), "--out", str(out)]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=400)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name, path in given.items():
        assert (out / "synthetic" / "models" / f"{name}.safetensors").read_bytes() == path.read_bytes()
    one, two = results(given_run)["per_seed"][0], results(out)
    n_test = two["settings"]["limit_test"]
    for name in ("D", "D_adv", "D_R", "D_NR", "D_rand", "D_det"):
        for key in ("clean", "robust"):
            assert abs(one["accuracy"][name][key] - two["accuracy"][name][key]) <= 2 / n_test, (name, key)
    assert two["sources"]["D"]["origin"] == "given" and run_json_matches(given_run, out)


def run_json_matches(a: Path, b: Path) -> bool:
    """The same given files give the same fingerprint, whatever the number of processes or seeds."""
    read = lambda p: json.loads((p / "run.json").read_text())["presets"]  # noqa: E731
    return read(a) == read(b)
