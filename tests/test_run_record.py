"""What a run records beside its numbers: where it ran, per-image results that pair the attack check with our
evaluation, and a report written as soon as the first preset finishes."""

from __future__ import annotations

import json

import pytest
import torch

from advfeatures.io import pack_mask, unpack_mask
from advfeatures.pipeline import Overrides, RunOptions, reproduce
from advfeatures.report import run_summary
from advfeatures.results import computed_under, machine_record


@pytest.mark.parametrize("n", [1, 7, 8, 9, 100, 1001])
def test_masks_round_trip(n):
    mask = torch.rand(n, generator=torch.Generator().manual_seed(n)) < 0.4
    assert torch.equal(unpack_mask(pack_mask(mask), n), mask)
    assert torch.equal(unpack_mask(pack_mask(mask), n // 2), mask[: n // 2])


def test_a_short_or_foreign_mask_is_refused():
    from advfeatures.errors import CorruptFileError

    with pytest.raises(CorruptFileError):
        unpack_mask(pack_mask(torch.ones(8, dtype=torch.bool)), 9)
    with pytest.raises(CorruptFileError):
        unpack_mask("not hex", 4)


def test_machine_record_names_device_cores_torch_and_commit(monkeypatch):
    m = machine_record(torch.device("cpu"))
    assert m["device_type"] == "cpu" and m["device"] == m["cpu"] and m["cpu_cores"] >= 1
    assert m["torch"] == torch.__version__ and m["commit"]
    monkeypatch.setattr("advfeatures.results.subprocess.run", _no_git)
    monkeypatch.setenv("ADVFEATURES_COMMIT", "abc123")
    assert machine_record(torch.device("cpu"))["commit"] == "abc123"  # a copy without git (the device machine)


def _no_git(*args, **kwargs):
    raise FileNotFoundError("git")


def test_report_after_the_first_preset_and_the_check_paired_with_our_results(tmp_path):
    out = tmp_path / "run"
    seen = []

    def log(line: str) -> None:  # when digits starts, synthetic's report must already be there, saying so
        if line.startswith("[digits]"):
            seen.append((out / "results.md").read_text())

    options = RunOptions(out=out, presets=("synthetic", "digits"), progress=False, theory=False, followups=False,
                         overrides=Overrides(quick=True, limit=64, epochs=1, steps=2))
    reproduce(options, log=log)
    assert seen and "## synthetic" in seen[0] and "digits still running" in seen[0]
    final = (out / "results.md").read_text()
    assert "## digits" in final and "still running" not in final
    for preset in ("synthetic", "digits"):
        results = json.loads((out / preset / "results.json").read_text())
        assert results["machine"]["torch"] == torch.__version__
        assert "robust_examples" not in json.dumps(results)  # per-image bits stay in the stage records
        check = results["attack_check"]
        n = int(check["images"])  # averaged over seeds in results.json: a float
        for name, entry in check["models"].items():
            record = json.loads((out / preset / "stages" / f"{name}.json").read_text())["result"]
            ours = unpack_mask(record["robust_examples"], n).float().mean()
            assert entry["default"] == pytest.approx(float(ours))  # our evaluation's own results on those images
            whole = unpack_mask(record["robust_examples"], 32)  # --limit 64: 32 test images
            assert float(whole.float().mean()) == pytest.approx(results["accuracy"][name]["robust"])


def test_the_report_says_stage_time_is_summed_when_workers_ran_side_by_side():
    r = {"threat_model": {"norm": "l2", "eps": 0.25}, "seeds": [0], "seconds": {"total": 5556.0},
         "machine": {"device": "cpu", "cpu_cores": 2, "torch": "2", "commit": "abc", "worker_processes": 2}}
    assert "stage time 5556s, summed over stages run side by side on 2 worker processes" in run_summary(r)
    r["machine"]["worker_processes"] = 1
    assert run_summary(r).startswith("Threat model: L2 eps 0.25; seeds: 1; stage time 5556s. Ran on cpu")
    del r["machine"]  # results.json written before "machine" existed
    assert run_summary(r) == "Threat model: L2 eps 0.25; seeds: 1; stage time 5556s."


def test_stages_computed_under_other_code_or_threads_are_listed_and_the_report_warns():
    here = {"commit": "aaaa", "device": "cpu X", "torch": "2.14", "threads": 1}
    there = {**here, "threads": 2}
    per_seed = [{"computed": {"D": here, "D_adv": here}}, {"computed": {"D": here, "D_adv": there}}]
    groups = computed_under(per_seed)
    assert groups == [{**here, "stages": ["seed 0: D", "seed 0: D_adv", "seed 1: D"]},
                      {**there, "stages": ["seed 1: D_adv"]}]
    assert computed_under([{"computed": {"D": None}}]) == [{"commit": "unknown", "stages": ["D"]}]  # an old record

    r = {"threat_model": {"norm": "l2", "eps": 0.25}, "seeds": [0, 1], "seconds": {"total": 10.0},
         "computed_under": groups}
    summary = run_summary(r)
    assert "Mixed provenance: this run's stages were computed under 2 configurations" in summary
    assert "code aaaa, cpu X, torch 2.14, 2 thread(s): 1 stage(s) (seed 1: D_adv)" in summary
    r["computed_under"] = groups[:1]
    assert "Mixed" not in run_summary(r)
