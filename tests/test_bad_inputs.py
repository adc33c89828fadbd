"""Bad inputs to every command and to the library's public functions, as tables (issue 25).

Every row of a CLI table must give exit code 2, exactly one stderr line `advfeatures: error: ...` holding the
listed words, no traceback, and leave the command's output unwritten. Each row is a value a careless script or a
hostile file could pass: NaN and inf numbers (every comparison with NaN is false, so `eps < 0` checks let it
through and the result was silently wrong), negative or zero sizes, labels a model has no class for, images in
0-255, devices this library does not run on, outputs that cannot be written, and checkpoints whose metadata lies.

Commands run in-process (`advfeatures.cli.main`) on tiny tensors made here, so the whole file takes seconds; the
one exception is the closed-pipe test, which needs a real pipe.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import advfeatures as af
from advfeatures import BadInputError
from advfeatures.attacks import invert_representation, pgd_attack
from advfeatures.cli import main
from advfeatures.data import save_dataset_file
from advfeatures.evaluation import worst_case_examples
from advfeatures.models import CHECKPOINT_FORMAT
from advfeatures.runlock import LOCK_NAME, RunLock

SRC = str(Path(__file__).resolve().parents[1] / "src")


def run_cli(capsys, argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_bad_input(code: int, err: str, words) -> str:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("advfeatures: error: "), err
    for word in words:
        assert str(word) in lines[0], f"{word!r} not in {lines[0]!r}"
    return lines[0]


# ---------------------------------------------------------------------------------------------------------
# fixtures: a 1x8x8 10-class model and data for it, and files that are wrong in one way each


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    torch.manual_seed(0)
    f = {"tmp": tmp_path}
    f["model"] = tmp_path / "model.safetensors"
    af.save_model(af.build_model("small_cnn", in_channels=1, num_classes=10, image_size=8, width=4), f["model"])
    images, labels = torch.rand(20, 1, 8, 8), torch.arange(20) % 10

    def data(name: str, x=images, y=labels, checked: bool = False) -> None:
        f[name] = tmp_path / f"{name}.safetensors"
        if checked:
            save_dataset_file(f[name], x, y)
        else:  # bypasses save_dataset_file's checks: what a hostile or careless writer makes
            save_file({"images": x.contiguous(), "labels": y.contiguous()}, str(f[name]))

    data("data", checked=True)
    data("stray_label", y=torch.cat([labels[:-1], torch.tensor([99])]))
    data("negative_label", y=torch.cat([labels[:-1], torch.tensor([-1])]))
    data("bool_labels", y=labels % 2 == 0)
    data("float_labels", y=labels.float())
    data("one_class", y=torch.zeros(20, dtype=torch.int64))
    data("eight_bit", x=images * 255)
    data("inf_images", x=torch.where(images > 0.99, torch.tensor(float("inf")), images))
    data("not_square", x=torch.rand(20, 1, 8, 6))
    data("tiny_images", x=torch.rand(20, 1, 1, 1))
    data("empty", x=torch.rand(0, 1, 8, 8), y=torch.zeros(0, dtype=torch.int64))
    data("label_ten", y=torch.cat([labels[:-1], torch.tensor([10])]))
    f["junk"] = tmp_path / "junk.safetensors"
    f["junk"].write_bytes(os.urandom(200))
    f["a_file"] = tmp_path / "a_file"
    f["a_file"].write_text("mine")
    f["folder"] = tmp_path / "a_folder"
    f["folder"].mkdir()
    f["out"] = tmp_path / "new" / "out.safetensors"
    f["run"] = tmp_path / "run"
    return f


def write_checkpoint(path: Path, state: dict, config, fmt: str = CHECKPOINT_FORMAT) -> Path:
    meta = {"format": fmt}
    if config is not None:
        meta["config"] = config if isinstance(config, str) else json.dumps(config)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=meta)
    return path


def good_state_and_config(width: int = 4) -> tuple[dict, dict]:
    model = af.build_model("small_cnn", in_channels=1, num_classes=10, image_size=8, width=width)
    return dict(model.state_dict()), dict(model.config)


def hostile_model(kind: str, tmp_path: Path) -> Path:
    """A checkpoint that is wrong in one way (kind)."""
    state, config = good_state_and_config()
    path = tmp_path / f"{kind}.safetensors"
    if kind == "config_list":
        return write_checkpoint(path, state, "[1, 2, 3]")
    if kind == "config_string":
        return write_checkpoint(path, state, '"small_cnn"')
    if kind == "config_not_json":
        return write_checkpoint(path, state, "{arch: small_cnn")
    if kind == "no_config":
        return write_checkpoint(path, state, None)
    if kind == "other_format":
        return write_checkpoint(path, state, config, fmt="something-else")
    if kind == "unknown_arch":
        return write_checkpoint(path, state, {**config, "arch": "transformer9000"})
    if kind == "arch_not_a_string":
        return write_checkpoint(path, state, {**config, "arch": ["small_cnn"]})
    if kind == "width_a_string":
        return write_checkpoint(path, state, {**config, "width": "4"})
    if kind == "negative_classes":
        return write_checkpoint(path, state, {**config, "num_classes": -10})
    if kind == "huge_width":  # ~2 * 10^11 parameters (800 GB) if it were built before the shapes are checked
        return write_checkpoint(path, state, {**config, "width": 100_000})
    if kind == "unknown_option":
        return write_checkpoint(path, state, {**config, "rm_rf": True})
    if kind == "nan_weights":
        state["head.weight"] = state["head.weight"].clone().fill_(float("nan"))
        return write_checkpoint(path, state, config)
    if kind == "zero_std":
        state["std"] = torch.zeros_like(state["std"])
        return write_checkpoint(path, state, config)
    if kind == "missing_tensor":
        state.pop("head.bias")
        return write_checkpoint(path, state, config)
    if kind == "extra_tensor":
        state["payload"] = torch.zeros(3)
        return write_checkpoint(path, state, config)
    if kind == "wrong_shapes":  # weights of width 8 under a width-4 config: many mismatches, one line
        return write_checkpoint(path, good_state_and_config(width=8)[0], config)
    raise ValueError(kind)


HOSTILE_MODELS = {
    "config_list": ["architecture metadata must be a JSON object"],
    "config_string": ["architecture metadata must be a JSON object"],
    "config_not_json": ["not valid JSON"],
    "no_config": ["not an advfeatures model checkpoint"],
    "other_format": ["not an advfeatures model checkpoint"],
    "unknown_arch": ["transformer9000", "choose one of"],
    "arch_not_a_string": ["'arch' name"],
    "width_a_string": ["width must be an integer"],
    "negative_classes": ["num_classes must be at least 1"],
    "huge_width": ["wrong shape"],
    "unknown_option": ["rm_rf"],
    "nan_weights": ["NaN or inf weights", "head.weight"],
    "zero_std": ["std"],
    "missing_tensor": ["1 missing", "head.bias"],
    "extra_tensor": ["1 unexpected", "payload"],
    "wrong_shapes": ["wrong shape", "more"],
}


# ---------------------------------------------------------------------------------------------------------
# train

TRAIN = ["train", "--dataset-file", "{data}", "--epochs", "1", "--width", "4", "--device", "cpu", "--out", "{out}"]

TRAIN_CASES = {
    # numbers that change the result (NaN slips past `x < 0` and `x <= 0`)
    "adversarial eps nan": (["--adversarial", "--eps", "nan"], ["--eps", "NaN"]),
    "adversarial eps inf": (["--adversarial", "--eps", "inf"], ["--eps", "finite"]),
    "adversarial eps zero": (["--adversarial", "--eps", "0"], ["--eps", "> 0"]),
    "adversarial eps negative": (["--adversarial", "--eps", "-1"], ["--eps", "> 0"]),
    "adversarial step size nan": (["--adversarial", "--step-size", "nan"], ["--step-size", "NaN"]),
    "adversarial step size zero": (["--adversarial", "--step-size", "0"], ["--step-size", "> 0"]),
    "adversarial zero steps": (["--adversarial", "--attack-steps", "0"], ["--attack-steps", "at least 1"]),
    "adversarial norm l3": (["--adversarial", "--norm", "l3"], ["'l3'", "'l2' or 'linf'"]),
    "eps without --adversarial": (["--eps", "1.0"], ["--eps", "only apply to --adversarial"]),
    "lr nan": (["--lr", "nan"], ["--lr", "NaN"]),
    "lr inf": (["--lr", "inf"], ["--lr", "finite"]),
    "lr zero": (["--lr", "0"], ["--lr", "> 0"]),
    "width negative": (["--width", "-3"], ["--width", "at least 1", "-3"]),
    "width zero": (["--width", "0"], ["--width", "at least 1"]),
    "crop padding negative": (["--crop-padding", "-2"], ["--crop-padding", "at least 0"]),
    "epochs negative": (["--epochs", "-1"], ["--epochs", "at least 0"]),
    "batch size zero": (["--batch-size", "0"], ["--batch-size", "at least 1"]),
    "seed negative": (["--seed", "-1"], ["--seed", "at least 0"]),
    "seed too large": (["--seed", str(2**70)], ["--seed", "at most"]),
    "schedule unknown": (["--schedule", "exponential"], ["'exponential'", "onecycle"]),
    "arch unknown": (["--arch", "transformer9000"], ["transformer9000", "choose one of"]),
    "arch without width": (["--arch", "mlp"], ["'mlp'", "width"]),
    "arch too deep for the images": (["--arch", "wide_cnn", "--dataset-file", "{tiny_images}"],
                                     ["wide_cnn", "cannot take 1x1x1 images"]),
    "num classes one": (["--num-classes", "1"], ["--num-classes", "at least 2"]),
    "num classes below the labels": (["--num-classes", "5"], ["0..4", "found [0, 9]"]),
    # devices
    "device mps": (["--device", "mps"], ["'mps'", "not supported"]),
    "device xla": (["--device", "xla"], ["'xla'", "not supported"]),
    "device meta": (["--device", "meta"], ["'meta'", "not supported"]),
    "device typo": (["--device", "cdua"], ["'cdua'"]),
    # data files
    "stray label": (["--dataset-file", "{stray_label}"], ["labels reach 99", "only 11 of the classes",
                                                           "--num-classes 100"]),
    "negative label": (["--dataset-file", "{negative_label}"], ["-1"]),
    "bool labels": (["--dataset-file", "{bool_labels}"], ["labels must be integers", "torch.bool"]),
    "float labels": (["--dataset-file", "{float_labels}"], ["labels must be integers", "float32"]),
    "one class": (["--dataset-file", "{one_class}"], ["every label is 0", "two classes"]),
    "images in 0-255": (["--dataset-file", "{eight_bit}"], ["[0, 1]", "divide 8-bit images by 255"]),
    "inf images": (["--dataset-file", "{inf_images}"], ["NaN or inf"]),
    "images not square": (["--dataset-file", "{not_square}"], ["8x6", "square"]),
    "empty dataset": (["--dataset-file", "{empty}"], ["empty"]),
    "junk dataset file": (["--dataset-file", "{junk}"], ["not a readable safetensors file"]),
    "limit zero": (["--limit", "0"], ["--limit", "positive"]),
    # outputs, checked before any work
    "out is a folder": (["--out", "{folder}"], ["is a folder", "file name"]),
    "out under a file": (["--out", "{a_file}/model.safetensors"], ["is a file", "no folder can be made"]),
    "out unwritable": (["--out", "/proc/advfeatures-test/model.safetensors"], ["cannot write"]),
}


def fill(argv, files: dict[str, Path]) -> list[str]:
    return [str(a).format(**{k: str(v) for k, v in files.items()}) for a in argv]


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_train_bad_input(capsys, files, case):
    extra, words = TRAIN_CASES[case]
    argv = fill(TRAIN + extra, files)  # a later --dataset-file / --out / --epochs overrides the base one
    code, _, err = run_cli(capsys, argv)
    assert_bad_input(code, err, fill(words, files))
    assert not files["out"].parent.exists(), "train wrote (or made a folder for) a model it refused to train"


def test_train_with_num_classes_accepts_classes_without_examples(capsys, files):
    argv = fill(TRAIN + ["--dataset-file", "{stray_label}", "--num-classes", "100", "--epochs", "0"], files)
    code, _, err = run_cli(capsys, argv)
    assert code == 0, err
    assert af.load_model(files["out"]).head.out_features == 100


def test_train_width_is_used_not_dropped(capsys, files):
    code, _, err = run_cli(capsys, fill(TRAIN + ["--epochs", "0", "--width", "2"], files))
    assert code == 0, err
    assert af.load_model(files["out"]).config["width"] == 2


# ---------------------------------------------------------------------------------------------------------
# evaluate

EVALUATE = ["evaluate", "{model}", "--dataset-file", "{data}", "--device", "cpu", "--steps", "2"]

EVALUATE_CASES = {
    "eps nan": (["--eps", "nan"], ["--eps", "NaN"]),
    "eps nan among others": (["--eps", "0.5", "nan"], ["--eps", "NaN"]),
    "eps inf": (["--eps", "inf"], ["--eps", "finite"]),
    "eps negative": (["--eps", "-0.5"], ["--eps", ">= 0"]),
    "norm l3 at eps 0": (["--norm", "l3", "--eps", "0"], ["'l3'"]),
    "targets negative": (["--targets", "-1"], ["--targets"]),
    "device meta": (["--device", "meta"], ["'meta'", "not supported"]),
    "negative label": (["--dataset-file", "{negative_label}"], [">= 0", "-1"]),
    "label past the model's classes": (["--dataset-file", "{label_ten}"], ["0..9", "10"]),
    "bool labels": (["--dataset-file", "{bool_labels}"], ["labels must be integers"]),
    "images in 0-255": (["--dataset-file", "{eight_bit}"], ["divide 8-bit images by 255"]),
    "images of another shape": (["--dataset-file", "{not_square}"], ["(1, 8, 6)", "(1, 8, 8)"]),
    "model is a folder": (["--dataset-file", "{data}"], []),  # replaced below: model path
    "model is junk": (["--dataset-file", "{data}"], ["not a readable safetensors file"]),
}


@pytest.mark.parametrize("case", list(EVALUATE_CASES))
def test_evaluate_bad_input(capsys, files, case):
    extra, words = EVALUATE_CASES[case]
    argv = fill(EVALUATE + extra, files)
    if case == "model is a folder":
        argv[1], words = str(files["folder"]), ["no such checkpoint"]
    if case == "model is junk":
        argv[1] = str(files["junk"])
    code, out, err = run_cli(capsys, argv)
    assert_bad_input(code, err, fill(words, files))
    assert out == ""


@pytest.mark.parametrize("kind", list(HOSTILE_MODELS))
def test_evaluate_hostile_or_broken_checkpoint(capsys, files, kind):
    path = hostile_model(kind, files["tmp"])
    code, _, err = run_cli(capsys, fill(["evaluate", path, "--dataset-file", "{data}", "--device", "cpu"], files))
    line = assert_bad_input(code, err, [path, *HOSTILE_MODELS[kind]])
    assert len(line) < 600, line  # one readable line, even for many mismatches


def test_evaluate_prints_the_targets_that_run(capsys, files):
    """--targets 100 on a 10-class model runs APGD-T toward the 9 other classes, and says 9."""
    code, out, err = run_cli(capsys, fill(EVALUATE + ["--eps", "0.1", "--targets", "100", "--steps", "1"], files))
    assert code == 0, err
    assert "APGD-T x9," in out and "x100" not in out, out


# ---------------------------------------------------------------------------------------------------------
# theory and import-model


@pytest.mark.parametrize("argv,words", [
    (["theory", "--out", "{a_file}"], ["is a file", "give a folder"]),
    (["theory", "--out", "{a_file}/sub"], ["is a file", "no folder can be made"]),
    (["theory", "--out", "/proc/advfeatures-test"], ["cannot write"]),
    (["theory", "--out", "{run}", "--seed", "-1"], ["--seed", "at least 0"]),
], ids=["out is a file", "out under a file", "out unwritable", "seed negative"])
def test_theory_bad_input(capsys, files, argv, words):
    code, _, err = run_cli(capsys, fill(argv, files))
    assert_bad_input(code, err, fill(words, files))
    assert not files["run"].exists()


def test_theory_on_a_folder_in_use(capsys, files):
    with RunLock(files["run"]):
        code, _, err = run_cli(capsys, ["theory", "--out", files["run"]])
        assert_bad_input(code, err, ["in use by another run", f"pid {os.getpid()}"])
        assert sorted(p.name for p in files["run"].iterdir()) == [LOCK_NAME]


@pytest.mark.parametrize("argv,words", [
    (["import-model", "{model}", "--out", "{folder}"], ["is a folder"]),
    (["import-model", "{model}", "--out", "{a_file}/x.safetensors"], ["is a file", "no folder can be made"]),
    (["import-model", "{model}", "--out", "/proc/advfeatures-test/x.safetensors"], ["cannot write"]),
    (["import-model", "{model}", "--out", "{model}"], ["the source file itself"]),
    (["import-model", "{tmp}/missing.pt", "--out", "{out}"], ["no such file"]),
    (["import-model", "{junk}", "--out", "{out}"], ["not a readable torch checkpoint"]),
], ids=["out is a folder", "out under a file", "out unwritable", "out is the source", "source missing",
        "source is junk"])
def test_import_model_bad_input(capsys, files, argv, words):
    before = files["model"].read_bytes()
    code, _, err = run_cli(capsys, fill(argv, files))
    assert_bad_input(code, err, fill(words, files))
    assert not files["out"].exists() and files["model"].read_bytes() == before


# ---------------------------------------------------------------------------------------------------------
# reproduce: refused before anything is written

REPRODUCE = ["reproduce", "--preset", "synthetic", "--quick", "--no-theory", "--no-followups", "--no-progress",
             "--out", "{run}"]

REPRODUCE_CASES = {
    "preset empty": (["--preset", ""], ["no preset given"]),
    "preset comma": (["--preset", ","], ["no preset given"]),
    "preset twice": (["--preset", "synthetic,synthetic"], ["synthetic", "more than once"]),
    "device mps": (["--device", "mps"], ["'mps'", "not supported"]),
    "device xla": (["--device", "xla"], ["'xla'", "not supported"]),
    "device meta": (["--device", "meta"], ["'meta'", "not supported"]),
    "compile backend unknown": (["--compile", "nosuchbackend"], ["'nosuchbackend'", "inductor"]),
    "seeds zero": (["--seeds", "0"], ["--seeds"]),
    "width zero": (["--width", "0"], ["--width"]),
    "epochs negative": (["--epochs", "-1"], ["--epochs"]),
    "eval targets negative": (["--eval-targets", "-1"], ["--eval-targets"]),
    "out is a file": (["--out", "{a_file}"], ["is a file", "give a folder"]),
    "out under a file": (["--out", "{a_file}/run"], ["is a file", "no folder can be made"]),
    "out unwritable": (["--out", "/proc/advfeatures-test"], ["cannot write"]),
    "standard model with NaN weights": (["--standard-model", "{nan_model}"], ["NaN or inf weights"]),
}


@pytest.mark.parametrize("case", list(REPRODUCE_CASES))
def test_reproduce_bad_input(capsys, files, case):
    files["nan_model"] = hostile_model("nan_weights", files["tmp"])
    extra, words = REPRODUCE_CASES[case]
    code, out, err = run_cli(capsys, fill(REPRODUCE + extra, files))
    assert_bad_input(code, err, fill(words, files))
    assert not files["run"].exists(), "a run that could not start wrote to --out"
    assert files["a_file"].read_text() == "mine"


@pytest.mark.parametrize("preset", ["", ","])
def test_reproduce_without_presets_leaves_an_existing_report_alone(capsys, files, preset):
    """Issue 25, item 4: `--preset ''` used to exit 0 and overwrite report.html / results.md with empty ones."""
    run = files["run"]
    run.mkdir()
    (run / "run.json").write_text('{"advfeatures": "0.1.0", "presets": {}}\n')
    (run / "report.html").write_text("<p>the real report</p>")
    (run / "results.md").write_text("# the real results")
    code, _, err = run_cli(capsys, ["reproduce", "--preset", preset, "--out", run])
    assert_bad_input(code, err, ["no preset given"])
    assert (run / "report.html").read_text() == "<p>the real report</p>"
    assert (run / "results.md").read_text() == "# the real results"


def test_reproduce_on_a_folder_in_use_is_refused_naming_the_holder(capsys, files):
    with RunLock(files["run"], command="the other run"):
        code, _, err = run_cli(capsys, fill(REPRODUCE, files))
        assert_bad_input(code, err, ["in use by another run", f"pid {os.getpid()}", "the other run"])
        assert sorted(p.name for p in files["run"].iterdir()) == [LOCK_NAME]  # run.json untouched: not written


@pytest.mark.parametrize("content", ["[1, 2]", '"run"', "{not json"])
def test_reproduce_on_a_corrupt_run_json(capsys, files, content):
    run = files["run"]
    run.mkdir()
    (run / "run.json").write_text(content)
    code, _, err = run_cli(capsys, fill(REPRODUCE, files))
    assert_bad_input(code, err, [run / "run.json", "delete it"])
    assert (run / "run.json").read_text() == content


# ---------------------------------------------------------------------------------------------------------
# the library: the same layer behind the public functions


@pytest.fixture
def model():
    torch.manual_seed(0)
    return af.build_model("small_cnn", in_channels=1, num_classes=10, image_size=8, width=4).eval()


X = torch.rand(12, 1, 8, 8)
Y = torch.arange(12) % 10


def nan_images():
    x = X.clone()
    x[3, 0, 2, 2] = float("nan")
    return x


LIBRARY_CASES = {
    # robust_accuracy: issue 25 items 2 and 3
    "robust eps nan": (lambda m: af.robust_accuracy(m, X, Y, eps=math.nan, steps=2), ["eps", "NaN"]),
    "robust eps inf": (lambda m: af.robust_accuracy(m, X, Y, eps=math.inf, steps=2), ["eps", "finite"]),
    "robust eps string": (lambda m: af.robust_accuracy(m, X, Y, eps="0.5", steps=2), ["eps", "number"]),
    "robust step size nan": (lambda m: af.robust_accuracy(m, X, Y, eps=0.5, step_size=math.nan, steps=2),
                             ["step_size", "NaN"]),
    "robust step size zero": (lambda m: af.robust_accuracy(m, X, Y, eps=0.5, step_size=0.0, steps=2),
                              ["step_size", "> 0"]),
    "robust images 0-255": (lambda m: af.robust_accuracy(m, X * 255, Y, eps=0.5, steps=2), ["divide 8-bit"]),
    "robust images NaN": (lambda m: af.robust_accuracy(m, nan_images(), Y, eps=0.5, steps=2), ["NaN"]),
    "robust one label for many images at eps 0": (lambda m: af.robust_accuracy(m, X, Y[:1], eps=0),
                                                   ["12 images but 1 labels"]),
    "robust scalar label": (lambda m: af.robust_accuracy(m, X, torch.tensor(3), eps=0), ["integer vector"]),
    "robust model on another device": (lambda m: af.robust_accuracy(m.to("meta"), X, Y, eps=0.5),
                                       ["model is on meta", "data is on cpu"]),
    "robust labels on another device": (lambda m: af.robust_accuracy(m, X, Y.to("meta"), eps=0.5),
                                        ["different devices"]),
    "robust empty batch": (lambda m: af.robust_accuracy(m, X[:0], Y[:0], eps=0.5), ["no images"]),
    "robust norm l3 at eps 0": (lambda m: af.robust_accuracy(m, X, Y, norm="l3", eps=0), ["'l3'"]),
    "robust label past the classes": (lambda m: af.robust_accuracy(m, X, Y + 1, eps=0.5, steps=2), ["0..9"]),
    "robust negative label": (lambda m: af.robust_accuracy(m, X, Y - 1, eps=0.5, steps=2), [">= 0"]),
    "robust grey images without channel": (lambda m: af.robust_accuracy(m, X[:, 0], Y, eps=0.5),
                                           ["(N, C, H, W)", "unsqueeze(1)"]),
    "robust images of another size": (lambda m: af.robust_accuracy(m, torch.rand(12, 3, 8, 8), Y, eps=0.5),
                                      ["(3, 8, 8)", "(1, 8, 8)"]),
    "robust targets negative": (lambda m: af.robust_accuracy(m, X, Y, eps=0.5, targets=-1), ["targets"]),
    "robust batch size zero": (lambda m: af.robust_accuracy(m, X, Y, eps=0.5, batch_size=0), ["batch_size"]),
    # the other public evaluation functions
    "clean bool labels": (lambda m: af.clean_accuracy(m, X, Y > 4), ["bool labels are not classes"]),
    "clean uint8 images": (lambda m: af.clean_accuracy(m, (X * 255).to(torch.uint8), Y), ["divide by 255"]),
    "worst case eps nan": (lambda m: worst_case_examples(m, X, Y, eps=math.nan), ["NaN"]),
    "curve eps nan": (lambda m: af.robust_accuracy_curve(m, X, Y, "l2", [0.5, math.nan], steps=1), ["NaN"]),
    "curve eps as a string": (lambda m: af.robust_accuracy_curve(m, X, Y, "l2", "0.5"), ["list of numbers"]),
    "transfer mask not bool": (lambda m: af.transfer_rate(m, X, Y, torch.ones(12)), ["bool mask"]),
    "pgd eps nan": (lambda m: pgd_attack(m, X, Y, eps=math.nan), ["eps", "NaN"]),
    "pgd step size nan": (lambda m: pgd_attack(m, X, Y, eps=0.5, step_size=math.nan), ["step_size"]),
    "pgd restarts zero": (lambda m: pgd_attack(m, X, Y, eps=0.5, restarts=0), ["restarts"]),
    "pgd labels too short": (lambda m: pgd_attack(m, X, Y[:3], eps=0.5), ["12 images but 3 labels"]),
    "inversion step size nan": (lambda m: invert_representation(m, X, X, steps=2, step_size=math.nan),
                                ["step_size"]),
    "inversion starts in 0-255": (lambda m: invert_representation(m, X, X * 255, steps=2, step_size=0.1),
                                  ["divide 8-bit"]),
    "inversion shapes differ": (lambda m: invert_representation(m, X, X[:4], steps=2, step_size=0.1),
                                ["same shape"]),
    # configurations and models
    "train config lr nan": (lambda m: af.TrainConfig(lr=math.nan), ["lr", "NaN"]),
    "train config momentum negative": (lambda m: af.TrainConfig(momentum=-0.9), ["momentum"]),
    "train config label smoothing one": (lambda m: af.TrainConfig(label_smoothing=1.0), ["label_smoothing"]),
    "train config padding float": (lambda m: af.TrainConfig(crop_padding=2.5), ["crop_padding", "integer"]),
    "adversarial config eps nan": (lambda m: af.AdversarialConfig(eps=math.nan), ["eps", "NaN"]),
    "adversarial config eps zero": (lambda m: af.AdversarialConfig(eps=0.0), ["eps", "> 0"]),
    "adversarial config in a dict": (lambda m: af.TrainConfig(adversarial={"eps": math.nan}), ["NaN"]),
    "build width zero": (lambda m: af.build_model("small_cnn", in_channels=1, num_classes=10, image_size=8,
                                                  width=0), ["width", "at least 1"]),
    "build width bool": (lambda m: af.build_model("small_cnn", in_channels=1, num_classes=10, image_size=8,
                                                  width=True), ["width", "integer"]),
    "build std zero": (lambda m: af.build_model("small_cnn", in_channels=1, num_classes=10, image_size=8,
                                                std=[0.0]), ["std"]),
    "build mean nan": (lambda m: af.build_model("small_cnn", in_channels=1, num_classes=10, image_size=8,
                                                mean=[math.nan]), ["mean", "NaN"]),
}


@pytest.mark.parametrize("case", list(LIBRARY_CASES))
def test_library_bad_input(model, case):
    call, words = LIBRARY_CASES[case]
    with pytest.raises(BadInputError) as exc:
        call(model)
    message = str(exc.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_dataset_refuses_bool_labels_instead_of_converting_them():
    from advfeatures.data import TensorImageDataset

    with pytest.raises(BadInputError, match="bool labels"):
        TensorImageDataset(X, Y > 4)


def test_imagefolder_error_names_each_folder_once(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(BadInputError) as exc:
        af.load_dataset("imagefolder", "train", missing)
    assert "train/ and test/ or val/" in str(exc.value) and "train/ and train/" not in str(exc.value)


def test_good_inputs_still_pass(model):
    """The checks refuse only what is wrong: float16 images, int32 labels and eps 0 work as before."""
    assert af.clean_accuracy(model, X, Y.int()) == af.clean_accuracy(model, X, Y)
    assert af.robust_accuracy(model, X, Y, eps=0) == af.clean_accuracy(model, X, Y)
    assert 0.0 <= af.robust_accuracy(model, X, Y, eps=0.5, steps=2, targets=1) <= af.clean_accuracy(model, X, Y)


# ---------------------------------------------------------------------------------------------------------
# output to a reader that has gone


def test_a_closed_stdout_does_not_kill_the_command(files):
    """Issue 25, item 5: `... | head` closed the pipe and the run died with BrokenPipeError (exit 1). Now output
    to a closed pipe is dropped and the command finishes: exit 0, nothing on stderr, its work done."""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "advfeatures", "evaluate", str(files["model"]), "--dataset-file",
           str(files["data"]), "--device", "cpu", "--steps", "1", "--targets", "1", "--eps", "0.1", "0.2", "0.3"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # the reader is gone before the first line is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert "BrokenPipe" not in err and "Traceback" not in err and "Exception ignored" not in err, err


def test_pipe_safe_stream_drops_output_after_the_reader_leaves(capsys, files, monkeypatch):
    """In-process: a stdout whose writes raise BrokenPipeError (a closed pipe) is dropped and the command finishes
    (here `train`, whose model is still written)."""

    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

        def isatty(self):
            return False

        def fileno(self):
            raise OSError("no descriptor")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    code = main(fill(TRAIN + ["--epochs", "0"], files))
    assert code == 0
    assert af.load_model(files["out"]).config["arch"] == "small_cnn"


def test_a_gpu_index_past_the_machine_is_refused(monkeypatch):
    """cuda:7 on a one-GPU machine (simulated: this test must run without a GPU too) names the GPUs there are."""
    from advfeatures.validation import check_device_name

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert check_device_name("cuda:0") == torch.device("cuda:0")
    with pytest.raises(BadInputError, match=r"1 GPU\(s\), cuda:0..cuda:0"):
        check_device_name("cuda:7")
