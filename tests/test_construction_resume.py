"""A construction killed part way resumes from its finished chunks (construct.PartialChunks), and gives exactly what
an uninterrupted one gives; chunks of other settings, of another shape or unreadable are computed again; in a run
folder the chunks are bound to the stage's key and removed when the stage ends."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re

import pytest
import torch

from advfeatures import construct
from advfeatures.construct import CHUNK, PartialChunks, build_inverted_dataset, build_relabelled_dataset
from advfeatures.experiments.context import PresetRun
from advfeatures.models import build_model
from advfeatures.pipeline import Overrides, RunOptions, apply_overrides, load_preset_data, run_seed
from advfeatures.presets import get_preset
from advfeatures.runfolder import Stage


class Killed(Exception):
    """Stands for a kill arriving after some chunks were written."""


class KilledAfter(PartialChunks):
    def __init__(self, folder, key, saves: int):
        super().__init__(folder, key)
        self.saves = saves

    def save(self, chunk, images):
        if self.saves == 0:
            raise Killed
        super().save(chunk, images)
        self.saves -= 1


def tiny_model():
    torch.manual_seed(0)
    return build_model("small_cnn", in_channels=1, num_classes=10, image_size=8, width=4).eval()


BUILDS = {
    "inversion from images": lambda m, x, y, **kw: build_inverted_dataset(m, x, y, steps=3, step_size=0.1, **kw),
    "inversion from noise": lambda m, x, y, **kw: build_inverted_dataset(m, x, y, steps=3, step_size=0.1,
                                                                         start="noise", **kw),
    "relabelling": lambda m, x, y, **kw: build_relabelled_dataset(m, x, y, mode="rand", num_classes=10, eps=1.0,
                                                                  steps=3, step_size=0.2, **kw),
}


@pytest.mark.parametrize("build", BUILDS.values(), ids=BUILDS.keys())
def test_a_killed_construction_resumes_from_its_chunks_and_equals_an_uninterrupted_one(build, tmp_path):
    model = tiny_model()
    n = 2 * CHUNK + 100  # three chunks, the last partial
    torch.manual_seed(1)
    x, y = torch.rand(n, 1, 8, 8), torch.randint(0, 10, (n,))
    whole = build(model, x, y, progress=False).images

    with pytest.raises(Killed):
        build(model, x, y, progress=False, partial=KilledAfter(tmp_path, "key", saves=2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunk_00000.safetensors", "chunk_00001.safetensors"]
    resumed = PartialChunks(tmp_path, "key")
    got = build(model, x, y, progress=False, partial=resumed).images
    assert resumed.reused == 2  # only the third chunk was computed again
    assert torch.equal(got, whole)

    again = PartialChunks(tmp_path, "key")  # now every chunk is there: nothing is computed
    assert torch.equal(build(model, x, y, progress=False, partial=again).images, whole) and again.reused == 3


def test_chunks_of_other_settings_another_shape_or_unreadable_are_computed_again(tmp_path):
    model = tiny_model()
    n = CHUNK + 10
    torch.manual_seed(2)
    x, y = torch.rand(n, 1, 8, 8), torch.randint(0, 10, (n,))
    build = BUILDS["inversion from noise"]
    whole = build(model, x, y, progress=False, partial=PartialChunks(tmp_path, "settings A")).images

    other = PartialChunks(tmp_path, "settings B")
    assert other.load(0, (CHUNK, 1, 8, 8)) is None  # another key: never mixed in
    assert PartialChunks(tmp_path, "settings A").load(0, (CHUNK, 1, 4, 4)) is None  # another shape
    (tmp_path / "chunk_00001.safetensors").write_bytes(b"truncated")
    assert PartialChunks(tmp_path, "settings A").load(1, (10, 1, 8, 8)) is None  # unreadable

    poisoned = torch.full((CHUNK, 1, 8, 8), 0.5)
    PartialChunks(tmp_path, "settings B").save(0, poisoned)  # a chunk of other settings where chunk 0 belongs
    fresh = PartialChunks(tmp_path, "settings A")
    assert torch.equal(build(model, x, y, progress=False, partial=fresh).images, whole) and fresh.reused == 0


class Probe(torch.nn.Module):
    """A source model for inversion on the synthetic preset's images: a fixed random linear representation."""

    def __init__(self, shape):
        super().__init__()
        torch.manual_seed(4)
        self.features = torch.nn.Linear(int(torch.tensor(shape).prod()), 16)
        self.head = torch.nn.Linear(16, 10)

    def representation(self, x):
        return self.features(x.flatten(1))

    def forward(self, x):
        return self.head(self.representation(x))


@contextlib.contextmanager
def killed_after_saves(monkeypatch, saves: int):
    """Inside the block, PartialChunks.save raises Killed once `saves` chunks have been saved (a run killed
    mid-construction); afterwards it saves again."""
    real_save, saved = PartialChunks.save, []

    def save_then_kill(self, chunk, images):
        if len(saved) == saves:
            raise Killed
        real_save(self, chunk, images)
        saved.append(chunk)

    monkeypatch.setattr(PartialChunks, "save", save_then_kill)
    try:
        yield
    finally:
        monkeypatch.setattr(PartialChunks, "save", real_save)


def test_a_stage_killed_mid_construction_resumes_and_leaves_no_chunks(tmp_path, monkeypatch):
    """In a run folder: a construction stage killed after two of four chunks resumes from them (and says so), ends
    with the numbers of an uninterrupted run, and its partial/ folder is gone once the stage has ended."""
    monkeypatch.setattr(construct, "CHUNK", 64)  # the quick preset's 256 images in four chunks
    preset = apply_overrides(get_preset("synthetic"), Overrides(quick=True))
    preset = dataclasses.replace(preset, inversion=dataclasses.replace(preset.inversion, batch_size=64))
    data = load_preset_data(preset, RunOptions(progress=False))
    source = Probe(data["train"].images.shape[1:])

    def body(run, upstream):
        ds = run.invert(source, "toy")
        return {"sum": float(ds.images.double().sum())}

    stages = (Stage("construct_toy", body, reads=("data", "inversion", "precision")),)

    def run_in(folder):
        log = []
        run = PresetRun(preset, 0, folder, data, RunOptions(out=folder, progress=False), log.append)
        return run_seed(run, stages), log

    run_in(tmp_path / "whole")
    folder = tmp_path / "killed"
    with pytest.raises(Killed), killed_after_saves(monkeypatch, 2):
        run_in(folder)
    assert len(list((folder / "partial" / "construct_toy" / "0").iterdir())) == 2
    assert not (folder / "stages" / "construct_toy.json").exists()

    _, log = run_in(folder)
    assert any("resumed: 2 finished chunk(s)" in line for line in log)
    assert not (folder / "partial").exists()

    def result(f):
        return json.loads((f / "stages" / "construct_toy.json").read_text())["result"]

    assert result(folder) == result(tmp_path / "whole")


def test_a_stage_building_two_sets_keeps_their_chunks_apart(tmp_path, monkeypatch):
    """Table 9's stage builds D_rand and then D_det against one model: D_det must be what a stage building it alone
    gets, not D_rand's finished chunks (which it was, from 0bc6f6f until this test), also when the stage resumes."""
    monkeypatch.setattr(construct, "CHUNK", 64)
    preset = apply_overrides(get_preset("synthetic"), Overrides(quick=True))
    preset = dataclasses.replace(preset, relabel=dataclasses.replace(preset.relabel, batch_size=64))
    data = load_preset_data(preset, RunOptions(progress=False))
    source = Probe(data["train"].images.shape[1:])
    reads = ("data", "relabel", "threat.norm", "precision")

    def sums(*modes):
        def body(run, upstream):
            return {m: float(run.relabel(source, m).images.double().sum()) for m in modes}
        return body

    def run_in(folder, stage):
        log = []
        run = PresetRun(preset, 0, folder, data, RunOptions(out=folder, progress=False), log.append)
        run_seed(run, (stage,))
        return json.loads((folder / "stages" / f"{stage.name}.json").read_text())["result"], log

    alone = {m: run_in(tmp_path / m, Stage("one", sums(m), reads=reads))[0][m] for m in ("rand", "det")}
    assert alone["rand"] != alone["det"]
    both, _ = run_in(tmp_path / "both", Stage("two", sums("rand", "det"), reads=reads))
    assert both == alone

    folder = tmp_path / "killed"
    with pytest.raises(Killed), killed_after_saves(monkeypatch, 5):  # D_rand's 4 chunks and one of D_det's
        run_in(folder, Stage("two", sums("rand", "det"), reads=reads))
    resumed, log = run_in(folder, Stage("two", sums("rand", "det"), reads=reads))
    assert resumed == alone
    assert [int(m) for line in log for m in re.findall(r"resumed: (\d+) finished chunk", line)] == [4, 1]
