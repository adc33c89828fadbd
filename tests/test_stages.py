"""Stages as declarations (runfolder.Stage): resume, settings changes, rebuilt upstream stages and the settings
guard, on toy stages that train nothing (milliseconds), then the real declarations' graph.

The end-to-end behaviour of the real stages (which re-run after a changed setting or a rebuilt dataset) is in
test_pipeline.py.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from advfeatures.experiments.context import PresetRun, UndeclaredRead
from advfeatures.pipeline import STAGES, Overrides, RunOptions, apply_overrides, load_preset_data, run_seed
from advfeatures.presets import get_preset
from advfeatures.results import computed_under
from advfeatures.runfolder import Stage


@pytest.fixture(scope="module")
def preset_and_data():
    preset = apply_overrides(get_preset("synthetic"), Overrides(quick=True))
    return preset, load_preset_data(preset, RunOptions(progress=False))


def toy_stages(calls: list[str]) -> tuple[Stage, ...]:
    """a reads relabel.steps; b reads inversion.steps; c is built on a; d on b and c; e reads the data only."""

    def body(name, value):
        def run_it(run, upstream):
            calls.append(name)
            return {"value": value(run, upstream)}

        return run_it

    return (
        Stage("a", body("a", lambda run, up: run.preset.relabel.steps), reads=("relabel.steps",), into=("toy", "a")),
        Stage("b", body("b", lambda run, up: run.preset.inversion.steps), reads=("inversion.steps",)),
        Stage("c", body("c", lambda run, up: up["a"]["value"] + 1), needs=("a",), into=("toy", "c")),
        Stage("d", body("d", lambda run, up: up["c"]["value"] + up["b"]["value"]), needs=("b", "c"),
              into=("toy", "d")),
        Stage("e", body("e", lambda run, up: int(run.train_y.sum())), reads=("data",)),
    )


def run_toy(preset, data, out, stages) -> tuple[dict, list[str]]:
    log = []
    run = PresetRun(preset, 0, out, data, RunOptions(out=out, progress=False), log.append)
    return run_seed(run, stages), log


def test_resume_loads_every_stage_and_a_changed_setting_reruns_its_readers_and_dependants(preset_and_data, tmp_path):
    preset, data = preset_and_data
    calls = []
    stages = toy_stages(calls)
    first, _ = run_toy(preset, data, tmp_path, stages)
    assert calls == ["a", "b", "c", "d", "e"]
    assert first["toy"] == {"a": {"value": 5}, "c": {"value": 6}, "d": {"value": 11}}
    record = json.loads((tmp_path / "stages" / "a.json").read_text())
    assert record["reads"] == {"seed": 0, "relabel.steps": 5} and record["upstream"] == {}

    calls.clear()
    again, log = run_toy(preset, data, tmp_path, stages)
    assert calls == [] and all(line.endswith("cached") for line in log)  # resume: every stage loaded
    assert again["toy"] == first["toy"]

    changed = dataclasses.replace(preset, relabel=dataclasses.replace(preset.relabel, steps=3))
    calls.clear()
    third, log = run_toy(changed, data, tmp_path, stages)
    assert calls == ["a", "c", "d"]  # a reads it, c and d are built on a; b and e are not
    assert third["toy"] == {"a": {"value": 3}, "c": {"value": 4}, "d": {"value": 9}}
    reasons = {line.split()[0]: line for line in log if "runs again" in line}
    assert "settings changed (relabel.steps)" in reasons["a"]
    assert "built on a new a" in reasons["c"] and "built on a new c" in reasons["d"]

    other = dataclasses.replace(changed, followups=dataclasses.replace(changed.followups, ensemble=5))
    calls.clear()
    run_toy(other, data, tmp_path, stages)
    assert calls == []  # a setting no stage reads re-runs nothing


def test_a_stage_rebuilt_upstream_reruns_what_was_built_from_it(preset_and_data, tmp_path):
    """Rebuilding a stage with unchanged settings (its record gone, a corrupt file) gives it a new build, and what
    was built from it runs again: resume never relies on the rebuild being identical."""
    preset, data = preset_and_data
    calls = []
    stages = toy_stages(calls)
    run_toy(preset, data, tmp_path, stages)
    (tmp_path / "stages" / "b.json").unlink()
    calls.clear()
    run_toy(preset, data, tmp_path, stages)
    assert calls == ["b", "d"]
    (tmp_path / "stages" / "a.json").write_text("{not json")
    calls.clear()
    _, log = run_toy(preset, data, tmp_path, stages)
    assert calls == ["a", "c", "d"]
    assert any(line.split()[0] == "a" and "cached record unusable" in line for line in log)
    (tmp_path / "stages" / "e.json").write_text("[]")  # valid JSON, not a record
    calls.clear()
    _, log = run_toy(preset, data, tmp_path, stages)
    assert calls == ["e"] and any(line.split()[0] == "e" and "not an object" in line for line in log)


def test_a_record_from_before_keys_is_rerun(preset_and_data, tmp_path):
    """A run folder made by an advfeatures without stage keys: its records run again (they cannot be checked)."""
    preset, data = preset_and_data
    calls = []
    stages = toy_stages(calls)
    run_toy(preset, data, tmp_path, stages)
    record = tmp_path / "stages" / "e.json"
    record.write_text(json.dumps({"result": {"value": 1}, "seconds": 0.1}))
    calls.clear()
    _, log = run_toy(preset, data, tmp_path, stages)
    assert calls == ["e"] and any("no key" in line for line in log)


def test_a_raised_revision_reruns_a_stage_and_its_dependants(preset_and_data, tmp_path):
    """A fix that changes what a body computes raises the stage's revision: its old records (same settings, same
    upstream builds) are computed again, and what was built on them too; the others are loaded."""
    preset, data = preset_and_data
    calls = []
    run_toy(preset, data, tmp_path, toy_stages(calls))
    calls.clear()
    fixed = tuple(dataclasses.replace(s, revision=1) if s.name == "a" else s for s in toy_stages(calls))
    _, log = run_toy(preset, data, tmp_path, fixed)
    assert calls == ["a", "c", "d"]
    assert any("settings changed (stage_revision)" in line for line in log)
    calls.clear()
    run_toy(preset, data, tmp_path, fixed)
    assert calls == []


def test_an_undeclared_read_fails_and_writes_no_record(preset_and_data, tmp_path):
    preset, data = preset_and_data
    sneaky = (
        Stage("relabel_only", lambda run, up: {"eps": run.preset.inversion.steps}, reads=("relabel",)),
        Stage("no_data", lambda run, up: {"n": int(run.test_x.shape[0])}, reads=("threat",)),
        Stage("part_of_evaluation", lambda run, up: {"t": run.preset.evaluation.targets}, reads=("evaluation.steps",)),
        Stage("not_that_set", lambda run, up: {"e": run.preset.constructed_train["D_det"].epochs},
              reads=("constructed_train.D_rand",)),
        Stage("precision", lambda run, up: {"amp": run.amp}, reads=("data",)),
    )
    for stage in sneaky:
        with pytest.raises(UndeclaredRead, match=stage.name):
            run_toy(preset, data, tmp_path, (stage,))
        assert not (tmp_path / "stages" / f"{stage.name}.json").exists()
    fine = Stage("fine", lambda run, up: {"s": run.preset.evaluation.steps, "name": run.preset.name},
                 reads=("evaluation.steps",))
    assert run_toy(preset, data, tmp_path, (fine,))[1][-1].split()[0] == "fine"
    with pytest.raises(RuntimeError, match="unknown setting"):
        run_toy(preset, data, tmp_path, (Stage("typo", lambda run, up: {}, reads=("evalution",)),))


def test_a_stage_finished_elsewhere_is_loaded_quietly_and_never_computed_twice(preset_and_data, tmp_path):
    """What a worker process does with the stages a task builds on (pipeline._stage_task): load their records
    without a log line; a record that is missing or stale is an error, not a reason to compute the stage again."""
    preset, data = preset_and_data
    calls = []
    stages = toy_stages(calls)
    run_toy(preset, data, tmp_path, stages)
    log: list[str] = []
    run = PresetRun(preset, 0, tmp_path, data, RunOptions(out=tmp_path, progress=False), log.append)
    assert run.cache.run_stage(stages[0], run, finished=True) == {"value": 5}
    assert log == [] and calls == ["a", "b", "c", "d", "e"]
    (tmp_path / "stages" / "b.json").unlink()
    with pytest.raises(RuntimeError, match="stage b ended in another worker but its record is unusable"):
        run.cache.run_stage(stages[1], run, finished=True)
    assert calls == ["a", "b", "c", "d", "e"]


def test_the_real_declarations_form_a_graph_in_order():
    """Every stage's upstream stages come before it, each name is provided once per variant, and every declared
    setting exists."""
    preset = apply_overrides(get_preset("synthetic"), Overrides(quick=True))
    provided: dict[str, list[str]] = {}
    for stage in STAGES:
        for need in stage.needs:
            assert need in provided, (stage.name, need)
        provided.setdefault(stage.output, []).append(stage.name)
    # two variants at most (trained / given, built / released), never two active at once (their `when`s differ)
    assert all(len(names) <= 2 for names in provided.values()), provided
    assert {"D", "D_adv", "construct_D_det", "D_det", "attack_check", "transfer", "robust_source",
            "followup_goh"} <= set(provided)
    known = set(dataclasses.asdict(preset)) | {"data", "precision", "transfer_set", "autoattack", "sources",
                                               "released"}
    for stage in STAGES:
        paths = stage.reads if isinstance(stage.reads, tuple) else ()
        assert all(p.split(".")[0] in known for p in paths), stage.name


def test_a_changed_memory_format_reruns_the_stages_that_compute(preset_and_data, tmp_path):
    """channels_last changes a seed's numbers on a CPU (as bf16 does; both are in the "precision" setting), so a run
    folder resumed under another memory format computes again every stage that reads "precision", and only those."""
    preset, data = preset_and_data
    calls = []
    computing = (Stage("computes", lambda run, up: calls.append("computes") or {"v": 1}, reads=("data", "precision")),
                 Stage("plain", lambda run, up: calls.append("plain") or {"v": 2}, reads=("data",)))

    def run_with(**options):
        run = PresetRun(preset, 0, tmp_path, data, RunOptions(out=tmp_path, progress=False, **options), lambda s: None)
        return run_seed(run, computing)

    run_with(channels_last=False)
    run_with(channels_last=False)
    assert calls == ["computes", "plain"]
    run_with(channels_last=True)
    assert calls == ["computes", "plain", "computes"]
    record = json.loads((tmp_path / "stages" / "computes.json").read_text())
    assert record["reads"]["precision"].endswith("/channels_last")


def test_records_say_where_they_were_computed_and_a_resumed_run_lists_every_configuration(preset_and_data, tmp_path):
    """Each record names the commit, device, torch and thread count it was computed with; a stage computed
    elsewhere (another commit, another thread count: a resumed run) shows up as a second configuration."""
    preset, data = preset_and_data
    stages = toy_stages([])
    first, _ = run_toy(preset, data, tmp_path, stages)
    computed = json.loads((tmp_path / "stages" / "a.json").read_text())["computed"]
    assert set(computed) == {"commit", "device", "torch", "threads"} and computed["threads"] >= 1
    assert computed_under([first]) == [{**computed, "stages": ["a", "b", "c", "d", "e"]}]

    record = json.loads((tmp_path / "stages" / "b.json").read_text())
    record["computed"] = {**computed, "commit": "another", "threads": computed["threads"] + 1}
    (tmp_path / "stages" / "b.json").write_text(json.dumps(record))
    again, _ = run_toy(preset, data, tmp_path, stages)  # every stage cached
    assert computed_under([again]) == [{**computed, "stages": ["a", "c", "d", "e"]},
                                       {**record["computed"], "stages": ["b"]}]
