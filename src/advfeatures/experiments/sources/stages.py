"""D and D_adv, the standard and the robust source model: trained here, or a given checkpoint installed and
evaluated (--standard-model / --robust-model; the library part is this package's __init__).

Each source has two declarations that provide the same name ("D", "D_adv") to the stages built on it: the trained
one reads the training settings, the given one the file's hash. A given stage's build is named by the file's
content and its evaluation, so re-installing the same file (a deleted or replaced copy) re-runs nothing built on it.
"""

from __future__ import annotations

import hashlib
import json

from ...models import load_model
from ...runfolder import Stage
from ..context import EVALUATE
from . import check_installed, install

CONFIGS = {"D": "train", "D_adv": "adversarial_train"}  # the preset's training settings of each source


def _train(name: str):
    def body(run, upstream: dict) -> dict:
        return run.train_and_evaluate(name, run.train_x, run.train_y, getattr(run.preset, CONFIGS[name]))

    return body


def _install(name: str):
    def body(run, upstream: dict) -> dict:
        given, path = run.given(name), run.model_path(name)
        run.forget(name)
        if run.group.is_main:
            install(given, path)  # the run's own byte-for-byte copy: what every later stage loads
            (run.dir / "stages" / f"{name}.json").unlink(missing_ok=True)  # never a trained record for it
        run.group.barrier()
        return {**run.evaluate(run.load(name)), "given": given.record()}

    return body


def _content(name: str):
    def identity(run, result: dict) -> str:
        blob = json.dumps({"sha256": run.given(name).sha256, "result": result}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    return identity


def declare(name: str) -> tuple[Stage, Stage]:
    trained = Stage(
        name, _train(name), reads=("data", "model", CONFIGS[name], "precision", *EVALUATE),
        into=("accuracy", name), when=lambda run: run.given(name) is None,
        validate=lambda run, result: load_model(run.model_path(name)),
    )
    given = Stage(
        f"given_{name}", _install(name), reads=("data", f"sources.{name}", *EVALUATE), provides=name,
        into=("accuracy", name), when=lambda run: run.given(name) is not None,
        validate=lambda run, result: check_installed(run.given(name), run.model_path(name)), identity=_content(name),
    )
    return trained, given


STAGES = (*declare("D"), *declare("D_adv"))
