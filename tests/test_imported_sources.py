"""From the authors' file format to a report: `import-model` two robustness checkpoints, then `reproduce
--standard-model A --robust-model B --autoattack` on CIFAR-10 files, and AutoAttack's numbers stand beside ours.

The checkpoints are thin random-weight ResNet-18s in the authors' layout (tests/reference_models.py) and the data
a small CIFAR-10 folder in torchvision's format (tests/fake_formats.py): what is checked is that imported models
go through the whole pipeline and its independent attack check, not their accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fake_formats import make_cifar10_root
from reference_models import resnet, robustness_checkpoint

from advfeatures.autoattack import autoattack_available
from advfeatures.cli import main
from advfeatures.experiments.sources import file_sha256

pytestmark = pytest.mark.skipif(not autoattack_available(), reason="needs the autoattack extra")


@pytest.fixture(scope="module")
def imported_run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("imported")
    data = make_cifar10_root(root / "data", train_per_batch=4, n_test=10)
    files = {}
    for name, seed in (("standard", 1), ("robust", 2)):
        src = root / f"{name}_checkpoint.pt.best"
        torch.save(robustness_checkpoint(resnet(bottleneck=False, width=4, seed=seed)), src)
        out = root / f"{name}.safetensors"
        assert main(["import-model", str(src), "--out", str(out)]) == 0
        files[name] = (src, out)
    run = root / "run"
    code = main(["reproduce", "--preset", "cifar10_cpu", "--data-root", str(data), "--quick", "--limit", "20",
                 "--autoattack", "--no-theory", "--no-progress", "--standard-model", str(files["standard"][1]),
                 "--robust-model", str(files["robust"][1]), "--out", str(run)])
    assert code == 0
    return {"files": files, "run": run,
            "results": json.loads((run / "cifar10_cpu" / "results.json").read_text())}


def test_autoattack_checks_the_imported_sources(imported_run):
    check = imported_run["results"]["attack_check"]
    assert check["method"] == "autoattack" and check["images"] == imported_run["results"]["settings"]["limit_test"]
    for name in ("D", "D_adv"):
        entry = check["models"][name]
        assert 0 <= entry["check"] <= entry["default"] + 1 and entry["gap"] == pytest.approx(
            entry["default"] - entry["check"])
    for report in ("results.md", "report.html"):
        text = (imported_run["run"] / report).read_text()
        assert "AutoAttack" in text, report


def test_sources_name_the_authors_files(imported_run):
    sources = imported_run["results"]["sources"]
    for name, role in (("D", "standard"), ("D_adv", "robust")):
        src, out = imported_run["files"][role]
        record = sources[name]
        assert record["origin"] == "given" and record["sha256"] == file_sha256(out) and record["arch"] == "resnet18"
        assert record["imported"]["library"] == "robustness" and record["imported"]["file"] == src.name
        assert record["imported"]["sha256"] == file_sha256(src) and record["imported"]["epoch"] == 150
    text = (imported_run["run"] / "results.md").read_text()
    for role in ("standard", "robust"):
        src = imported_run["files"][role][0]
        assert f"imported from the robustness checkpoint {src.name} (sha256 {file_sha256(src)[:12]}" in text


def test_downstream_stages_built_from_the_imported_models(imported_run):
    r, run = imported_run["results"], Path(imported_run["run"]) / "cifar10_cpu"
    for name in ("D_R", "D_NR", "D_rand", "D_det"):
        assert (run / "datasets" / f"{name}.safetensors").is_file() and name in r["accuracy"]
    assert set(r["robust_source"]) == {"D_rand", "D_det"}
