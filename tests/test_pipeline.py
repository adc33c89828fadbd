"""`reproduce` end to end on a reduced configuration: files, keys, value ranges, resume, bad run folders."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from advfeatures import load_dataset_file, load_model
from advfeatures.cli import main
from advfeatures.evaluation import transfer_rate
from advfeatures.pipeline import Overrides, RunOptions, reproduce
from advfeatures.results import aggregate

QUICK = ["--preset", "synthetic", "--quick", "--no-progress", "--jobs", "1"]  # one process: "  NAME" log lines
SETS = ("D", "D_adv", "D_R", "D_NR", "D_rand", "D_det")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["reproduce", *QUICK, "--out", str(out)]) == 0
    return out


def test_results_files_keys_and_ranges(quick_run):
    results = json.loads((quick_run / "synthetic" / "results.json").read_text())
    assert results["preset"] == "synthetic" and results["seeds"] == [0]
    assert results["threat_model"] == {"norm": "l2", "eps": 1.0}
    for name in SETS:
        entry = results["accuracy"][name]
        assert 0 <= entry["clean"] <= 1 and 0 <= entry["robust"] <= 1
        assert set(entry["curve"]) >= {"0", "1"}
        model = load_model(quick_run / "synthetic" / "models" / f"{name}.safetensors")
        assert model(torch.rand(2, 1, 16, 16)).shape == (2, 10)
    for name in ("D_R", "D_NR", "D_rand", "D_det"):
        data = load_dataset_file(quick_run / "synthetic" / "datasets" / f"{name}.safetensors")
        assert data["images"].shape[1:] == (1, 16, 16) and data["labels"].dtype == torch.int64
        assert data["images"].min() >= 0 and data["images"].max() <= 1
    c = results["construction"]
    assert 0 <= c["D_det"]["attack_success"] <= 1 and c["D_det"]["mean_perturbation_norm"] <= 1.0 + 1e-4
    assert set(results["audit"]) >= {"D", "D_R", "D_NR", "D_rand", "D_det"}
    archs = {k: v for k, v in results["transfer"].items() if k != "source"}
    assert len(archs) == 4 and all(0 <= v["accuracy"] <= 1 and 0 <= v["transfer_rate"] <= 1 for v in archs.values())
    assert "D_det" in results["robust_source"]
    check = results["attack_check"]
    assert check["method"] == "own" and check["images"] == 32  # --quick: our own check on 32 of its 128 test images
    assert set(check["models"]) == {"D", "D_adv", "D_R", "D_NR"}
    for m in check["models"].values():
        assert 0 <= m["check"] <= 1 and m["gap"] == pytest.approx(m["default"] - m["check"])
        assert 0 <= m["default"] <= 1
    assert results["seconds"]["total"] > 0 and "D" in results["seconds"]["stages"]
    assert "theory" in results and results["theory"]["figures"]
    for f in ("report.html", "results.md", "figures/synthetic_accuracy.png", "figures/synthetic_samples.png"):
        assert (quick_run / f).is_file(), f
    html = (quick_run / "report.html").read_text()
    assert "data:image/png;base64" in html and "D_det" in html
    md = (quick_run / "results.md").read_text()
    theory = md[md.index("## Section 4 theory"):]
    assert theory.count("\n### Theorem") == 4 and "{'" not in theory  # one table per theorem, no dict dump
    assert "Theorem 2: robust learning blends the covariance" in html


def test_followups_are_recorded_reported_and_consistent(quick_run):
    """The Distill follow-ups (experiments/followups/) run by default, under "followups", with the report section."""
    r = json.loads((quick_run / "synthetic" / "results.json").read_text())
    f = r["followups"]
    assert set(f) == {"nakkiran", "goh", "wallace"}
    n = f["nakkiran"]
    # plain D_det's row is the paper's own D_det model on the same test set: the same number as its accuracy entry
    assert n["D_det"]["accuracy_on_Y"] == pytest.approx(r["accuracy"]["D_det"]["clean"])
    assert n["D_det"]["attack_success"] == pytest.approx(r["construction"]["D_det"]["attack_success"])
    bugs = n["D_det_bugs"]
    assert bugs["construction"]["keep_models"] == n["ensemble"] == 2
    assert len(bugs["construction"]["keep_models_read_original_per_model"]) == 2
    for key in ("attack_success", "transfer_rate", "accuracy_on_Y", "accuracy_on_Y_plus_1"):
        assert 0 <= bugs[key] <= 1 and 0 <= n["D_det"][key] <= 1
    assert set(bugs["audit"]) >= {"robust_agrees_label", "nonrobust_agrees_label", "robust_agrees_original"}
    data = load_dataset_file(quick_run / "synthetic" / "datasets" / "D_det_bugs.safetensors")
    assert data["images"].shape == (256, 1, 16, 16)
    sq = n["squares"]
    assert sq["linear_rule_robust"] <= sq["linear_rule_clean"] and 0 <= sq["network_robust"] <= sq["network_clean"]
    assert sq["epochs"] == 2  # --quick's 2 epochs reach every training, the squares network's too
    g = f["goh"]
    assert g["D_rand_accuracy"] == pytest.approx(r["accuracy"]["D_rand"]["clean"])
    lin = g["robust_linear"]
    assert 0 <= lin["certified_accuracy"] <= min(lin["certified"], lin["clean_accuracy"])
    assert all(0 <= g[f"leakage_{k}"]["test_accuracy"] <= 1 for k in ("D", "D_rand", "D_det"))
    w = f["wallace"]
    assert w["kept_images"] == pytest.approx(round((1 - w["teacher_train_accuracy"]) * w["train_images"]))
    for stage in ("followup_ensemble", "construct_D_det_bugs", "followup_nakkiran", "followup_squares",
                  "followup_goh", "followup_wallace"):
        assert stage in r["seconds"]["stages"], stage
    text = (quick_run / "results.md").read_text()
    for title in ("Follow-up: Nakkiran", "adversarial squares", "Follow-up: Goh", "Follow-up: Wallace",
                  "The follow-ups' claims, checked on this data"):
        assert title in text, title
    assert "63.3 / 43.7 (the paper's D_rand / D_det)" in text  # from the preset's paper numbers


def test_no_followups_skips_them_and_a_log_file_gets_lines_not_bars(tmp_path):
    """Output to pipes (a log file, CI): no progress-bar redraws, one line per stage, flushed as it ends."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "advfeatures", "reproduce", "--preset", "synthetic", "--quick", "--no-theory",
           "--no-followups", "--out", str(out)]  # no --no-progress: the bars go because stderr is not a terminal
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "\r" not in proc.stdout + proc.stderr and "it/s" not in proc.stderr
    # one process logs "  NAME ...", worker processes "[synthetic seed 0] NAME ..." (one worker per core by default)
    stage_lines = [line for line in proc.stdout.splitlines() if line.startswith(("  ", "[synthetic seed 0] "))]
    assert len(stage_lines) >= 13 and len(proc.stdout) < 5000, proc.stdout
    r = json.loads((out / "synthetic" / "results.json").read_text())
    assert "followups" not in r and not any(s.startswith("followup") for s in r["seconds"]["stages"])
    assert "Follow-up" not in (out / "results.md").read_text()


def stage_lines(log: str) -> dict[str, str]:
    """{stage: its last log line} (a stage that runs again logs why, then its result)."""
    return {line.split()[0]: line for line in log.splitlines() if line.startswith("  ")}


def rerun_copy(quick_run, tmp_path, capsys, monkeypatch, change=None, prepare=None) -> tuple[dict, dict, Path]:
    """Re-run a copy of the quick run, after `change(preset)` to the synthetic preset and/or `prepare(folder)`."""
    from advfeatures.presets import synthetic

    out = tmp_path / "copy"
    shutil.copytree(quick_run, out)
    if prepare:
        prepare(out / "synthetic")
    if change:
        original = synthetic.preset
        monkeypatch.setattr(synthetic, "preset", lambda: change(original()))
    capsys.readouterr()
    assert main(["reproduce", *QUICK, "--out", str(out)]) == 0
    log = capsys.readouterr().out
    return stage_lines(log), json.loads((out / "synthetic" / "results.json").read_text()), out


def reran(lines: dict[str, str]) -> set[str]:
    return {name for name, line in lines.items() if not line.endswith("cached")}


def test_changed_settings_rerun_exactly_their_readers_and_what_is_built_from_them(quick_run, tmp_path, capsys,
                                                                                 monkeypatch):
    """A run folder is resumed with other settings: each stage whose declared settings or upstream stages changed
    runs again, every other stage is loaded. Here the inversion's steps (read by D_R's and D_NR's constructions)
    and the follow-ups' ensemble size (read by the ensemble, D_det_bugs and Nakkiran's stage)."""
    before = json.loads((quick_run / "synthetic" / "results.json").read_text())

    def change(p):
        p = dataclasses.replace(p, inversion=dataclasses.replace(p.inversion, steps=3))
        return dataclasses.replace(p, followups=dataclasses.replace(p.followups, ensemble=1))

    lines, after, out = rerun_copy(quick_run, tmp_path, capsys, monkeypatch, change=change)
    assert reran(lines) == {"construct_D_R", "construct_D_NR", "D_R", "D_NR", "audit", "attack_check_own_32",
                            "followup_ensemble", "construct_D_det_bugs", "followup_nakkiran"}, lines
    assert "cached" in lines["theory"] and "cached" in lines["D"] and "cached" in lines["followup_goh"]
    assert after["settings"]["inversion"]["steps"] == 3 and after["followups"]["nakkiran"]["ensemble"] == 1
    assert after["followups"]["nakkiran"]["D_det_bugs"]["construction"]["keep_models"] == 1
    for name in ("D", "D_adv", "D_rand", "D_det", "D_det_unleaked"):  # loaded, so exactly the same numbers
        assert after["accuracy"][name] == before["accuracy"][name], name
    assert after["transfer"] == before["transfer"] and after["followups"]["goh"] == before["followups"]["goh"]
    assert json.loads((out / "run.json").read_text())["presets"]["synthetic"] != json.loads(
        (quick_run / "run.json").read_text())["presets"]["synthetic"]
    record = json.loads((out / "synthetic" / "stages" / "construct_D_R.json").read_text())
    assert record["reads"]["inversion"]["steps"] == 3 and set(record["upstream"]) == {"D_adv"}


def test_a_rebuilt_dataset_reruns_what_was_built_from_it(quick_run, tmp_path, capsys, monkeypatch):
    """D_NR's file deleted: its construction runs again with the same settings, and everything built from it runs
    again too (resume does not rely on the rebuilt set being identical); nothing else does."""
    lines, after, _ = rerun_copy(quick_run, tmp_path, capsys, monkeypatch,
                                 prepare=lambda d: (d / "datasets" / "D_NR.safetensors").unlink())
    assert reran(lines) == {"construct_D_NR", "D_NR", "audit", "attack_check_own_32"}, lines
    data = load_dataset_file(tmp_path / "copy" / "synthetic" / "datasets" / "D_NR.safetensors")
    assert data["images"].shape[0] == 256 and set(after["construction"]["D_NR"]) >= {"model_predicts_label"}


def test_status_lines_while_a_long_stage_runs():
    from advfeatures.runfolder import status_lines

    lines = []
    with status_lines(lines.append, "D_adv", 0.05):
        time.sleep(0.32)
    assert 4 <= len(lines) <= 7 and all(line.startswith("  D_adv") and "running for" in line for line in lines)
    before = len(lines)
    with status_lines(lines.append, "D", None):  # progress bars on: no status lines
        time.sleep(0.1)
    assert len(lines) == before


def test_rerun_resumes_everything_from_cache(quick_run, capsys):
    before = json.loads((quick_run / "synthetic" / "results.json").read_text())
    assert main(["reproduce", *QUICK, "--out", str(quick_run)]) == 0
    log = capsys.readouterr().out
    stage_lines = [line for line in log.splitlines() if line.startswith("  ")]
    assert stage_lines and all("cached" in line for line in stage_lines), stage_lines
    after = json.loads((quick_run / "synthetic" / "results.json").read_text())
    assert after["accuracy"] == before["accuracy"]


def test_corrupt_cached_model_is_rebuilt_not_used(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["reproduce", *QUICK, "--no-theory", "--out", str(out)]) == 0
    model = out / "synthetic" / "models" / "D_R.safetensors"
    model.write_bytes(model.read_bytes()[:200])  # truncated
    capsys.readouterr()
    assert main(["reproduce", *QUICK, "--no-theory", "--out", str(out)]) == 0
    log = capsys.readouterr().out
    assert "rebuilding" in log
    load_model(model)  # valid again


def test_kill_then_resume(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "advfeatures", "reproduce", *QUICK, "--no-theory", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    record = out / "synthetic" / "stages" / "D_adv.json"
    while not record.exists() and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # it was killed mid-run, not finished
    assert record.exists() and not (out / "synthetic" / "results.json").exists()
    # whatever the kill interrupted, every file a later run would trust is complete (temporaries are never read)
    from advfeatures.io import load_tensors, read_json

    for f in out.rglob("*"):
        if f.name.startswith("."):
            continue
        if f.suffix == ".safetensors":
            load_tensors(f)
        elif f.suffix == ".json":
            read_json(f)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "D_adv" in done.stdout and "cached" in done.stdout
    assert (out / "synthetic" / "results.json").is_file()


def test_bad_run_folders_and_presets(tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["reproduce", *QUICK, "--out", str(foreign)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "mine" and len(list(foreign.iterdir())) == 1
    assert main(["reproduce", "--preset", "mnist-cifar", "--out", str(tmp_path / "x")]) == 2
    assert "unknown preset" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_seeds_aggregate_mean_std_and_per_seed():
    per_seed = [
        {"accuracy": {"D": {"clean": c, "robust": r, "curve": {"0": c}}}, "construction": {"D_R": {"x": c}}}
        for c, r in ((0.9, 0.1), (0.7, 0.3))
    ]
    agg = aggregate(per_seed)["accuracy"]["D"]
    assert agg["clean"] == pytest.approx(0.8) and agg["clean_std"] == pytest.approx(0.1)
    assert agg["robust_per_seed"] == pytest.approx([0.1, 0.3])


def test_transfer_rate_known_answer():
    class Fixed(torch.nn.Module):
        def __init__(self, preds):
            super().__init__()
            self.preds = preds

        def forward(self, x):
            return torch.nn.functional.one_hot(self.preds[: x.shape[0]], 3).float()

    labels = torch.tensor([0, 1, 2, 0])
    fooled = torch.tensor([True, True, False, True])  # the source fooled examples 0, 1, 3
    target = Fixed(torch.tensor([1, 1, 2]))  # on those three (labels 0, 1, 0): fooled, not, fooled
    assert transfer_rate(target, torch.zeros(4, 1, 2, 2), labels, fooled) == pytest.approx(2 / 3)


def test_diagnostics_known_answers():
    from advfeatures.construct import ConstructedDataset, inversion_diagnostics, relabelled_diagnostics
    from advfeatures.evaluation import predict
    from advfeatures.models import build_model

    torch.manual_seed(0)
    model = build_model("mlp", in_channels=1, num_classes=3, image_size=4, hidden=8).eval()
    x = torch.rand(30, 1, 4, 4)
    pred = predict(model, x)
    # a "constructed" set identical to the originals: zero representation error and zero distance
    same = ConstructedDataset(x.clone(), pred.clone(), pred.clone())
    inv = inversion_diagnostics(model, x, same)
    assert inv["relative_representation_error_mean"] < 1e-6 and inv["distance_to_original_mean"] == 0
    assert inv["model_predicts_label"] == 1.0
    # labels = the model's own predictions, "original" classes shifted: success 100%, reads original 0%
    shifted = ConstructedDataset(x.clone(), pred.clone(), (pred + 1) % 3)
    rel = relabelled_diagnostics(model, model, x, shifted)
    assert rel["attack_success"] == 1.0 and rel["mean_perturbation_norm"] == 0
    assert rel["robust_model_reads_original"] == 0.0 and rel["robust_model_reads_target"] == 1.0


def test_library_entry_point(tmp_path):
    results = reproduce(RunOptions(out=tmp_path / "lib", presets=("synthetic",), theory=False, progress=False,
                                   overrides=Overrides(quick=True)), log=lambda s: None)
    assert set(results) == {"synthetic"} and results["synthetic"]["accuracy"]["D"]["clean"] >= 0


def test_kernel_flags_run_the_same_pipeline(quick_run, tmp_path):
    """--no-channels-last (synthetic's preset is channels_last) and --compile (aot_eager: the torch.compile plumbing
    without code generation) change how kernels run, not what is computed: the same accuracies as the plain quick
    run, to a test image or two (another floating-point order), and results.json says which memory format ran."""
    out = tmp_path / "flags"
    args = ["reproduce", *QUICK, "--no-theory", "--no-channels-last", "--compile", "aot_eager", "--out", str(out)]
    assert main(args) == 0
    plain_results = json.loads((quick_run / "synthetic" / "results.json").read_text())
    flagged_results = json.loads((out / "synthetic" / "results.json").read_text())
    assert plain_results["memory_format"] == "channels_last" and flagged_results["memory_format"] == "contiguous"
    plain, flagged = plain_results["accuracy"], flagged_results["accuracy"]
    n_test = flagged_results["settings"]["limit_test"]
    for name in SETS:
        assert abs(plain[name]["clean"] - flagged[name]["clean"]) <= 2 / n_test, name
    model = load_model(out / "synthetic" / "models" / "D.safetensors")  # saved in the ordinary format
    assert model(torch.rand(2, 1, 16, 16)).shape == (2, 10)


def test_report_is_built_once_and_cites_what_a_user_can_open(quick_run):
    """results.md and report.html are two renderings of one list of blocks (the same tables in the same order);
    they cite the paper by its arXiv address and the repository's own files, never a file the repository lacks."""
    import html as html_module
    import re

    md, page = (quick_run / "results.md").read_text(), (quick_run / "report.html").read_text()
    md_titles = re.findall(r"^### (.+)$", md, re.M)
    html_titles = [html_module.unescape(t) for t in re.findall(r"<h3>(.*?)</h3>", page)]
    assert md_titles == html_titles and len(md_titles) >= 12
    assert md.count("![") == page.count("<img ") >= 5
    assert "PAPER.md" not in md + page
    assert "https://arxiv.org/abs/1905.02175" in md
    assert "<a href='https://arxiv.org/abs/1905.02175'>" in page
    repo = Path(__file__).resolve().parents[1]
    for cited in ("README.md", "benchmarks/RESULTS.md"):
        assert cited in page and (repo / cited).is_file(), cited


def test_the_report_reads_results_not_stages(quick_run, tmp_path):
    """Importing the report loads no stage, no PresetRun and no pipeline, and the report can be rebuilt from a run
    folder's results.json files alone."""
    code = ("import sys, advfeatures.report; print(sorted(m for m in sys.modules if m.startswith('advfeatures') and "
            "(m.endswith('.stages') or m.endswith('.context') or m.endswith('.pipeline'))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
    from advfeatures.report import write_report

    out = tmp_path / "again"
    shutil.copytree(quick_run, out)
    (out / "results.md").unlink()
    results = {"synthetic": json.loads((out / "synthetic" / "results.json").read_text())}
    write_report(out, results, results["synthetic"]["theory"])
    assert (out / "results.md").read_text() == (quick_run / "results.md").read_text()


CONTROLS = ("D_rand_shortcut", "D_det_shortcut", "D_rand_no_true", "D_R_noise", "D_NR_noise")


def test_controls_run_only_their_own_stages_and_are_reported(quick_run, tmp_path, capsys):
    """Without --controls the report says they were skipped; adding --controls to a finished run builds and trains
    exactly the control stages (everything else comes from the cache) and reports them with computed verdicts."""
    assert "Controls: skipped" in (quick_run / "results.md").read_text()
    out = tmp_path / "copy"
    shutil.copytree(quick_run, out)
    capsys.readouterr()
    assert main(["reproduce", *QUICK, "--controls", "--out", str(out)]) == 0
    ran = reran(stage_lines(capsys.readouterr().out))
    expected = {"controls_weak_model", "controls_audit", *CONTROLS, *(f"construct_{n}" for n in CONTROLS)}
    assert ran == expected, ran ^ expected
    r = json.loads((out / "synthetic" / "results.json").read_text())
    for name in CONTROLS:
        entry = r["accuracy"][name]
        assert 0 <= entry["clean"] <= 1 and 0 <= entry["robust"] <= 1 and entry["test_images"] > 0
    shortcut = r["construction"]["D_rand_shortcut"]
    share = r["construction"]["D_rand"]["target_equals_true"]
    assert 0 < share < 0.5 and r["construction"]["D_rand_no_true"]["target_equals_true"] == 0
    assert shortcut["clean_fraction"] == pytest.approx(share)  # Keller's rule: clean exactly where t == y
    assert r["construction"]["D_R_noise"]["steps"] == 10 * r["settings"]["inversion"]["steps"]
    md = (out / "results.md").read_text()
    assert "Controls: skipped" not in md and "D_det_shortcut" in md and "unknown" not in md
    assert "what the control sets carry" in md  # the planted-feature audit of the controls (synthetic)


def test_a_rewritten_report_draws_a_finished_preset_once(quick_run, tmp_path, monkeypatch):
    """The report is rewritten as each preset finishes; a preset already drawn is reused (its blocks and figures),
    and the text is the same as a report drawn from scratch."""
    from advfeatures import report

    out = tmp_path / "run"
    shutil.copytree(quick_run, out)
    results = {"synthetic": json.loads((out / "synthetic" / "results.json").read_text())}
    drawn, real = [], report.preset_blocks
    monkeypatch.setattr(report, "preset_blocks", lambda o, name, r: drawn.append(name) or real(o, name, r))
    made: dict = {}
    report.write_report(out, results, None, pending=["digits"], made=made)
    assert "Partial report: digits still running" in (out / "results.md").read_text()
    report.write_report(out, results, None, made=made)
    assert drawn == ["synthetic"]
    reused = (out / "results.md").read_text()
    report.write_report(out, results, None)
    assert drawn == ["synthetic", "synthetic"] and (out / "results.md").read_text() == reused
