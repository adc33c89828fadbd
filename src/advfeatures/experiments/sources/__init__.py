"""The source models D and D_adv, and given ones: `reproduce --standard-model A --robust-model B` uses existing
checkpoints as D and D_adv. This module is the library part (checking, installing and recording a given file);
the stages are in stages.py, the report's sentence in section.py.

Training the source models is most of a CIFAR-10 run's cost, and the paper's authors released theirs (convert it
with `advfeatures import-model`). A given model replaces the training of its stage only: it is evaluated like a
trained one (clean, robust, curve, attack check) and every downstream stage builds on it as usual (D_R / D_NR
and Table 9 from the robust source, D_rand / D_det and the transfer study from the standard source).

* Validation happens before any long work or any write to --out (`inspect_given_model`): the file must exist,
  be an advfeatures checkpoint (safetensors only: `load_model`), and take the preset's images and classes.
* The run keeps its own byte-for-byte copy in `models/D.safetensors` / `models/D_adv.safetensors` (`install`),
  so every later stage, resume and `load_model` see exactly the given weights; the cached stage is trusted only
  while that copy still has the given file's SHA-256 (`check_installed`).
* A given file's hash is a setting of its stage ("sources.D" / "sources.D_adv"), so switching between trained
  and given sources, or to another file, in one run folder re-runs that source and everything built from it, and
  never mixes one source's results with another's; run.json's fingerprint records it (`fingerprint_suffix`).
* With several seeds every seed uses the same given model; only the attack's randomness varies.

Example (Python):

    from advfeatures.experiments.sources import inspect_given_model
    source = inspect_given_model("D_adv", "robust.safetensors", image_shape=(3, 32, 32), num_classes=10)
    print(source.record())  # {"origin": "given", "path": ..., "sha256": ..., "arch": ..., ...}
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ...errors import BadInputError, CorruptFileError
from ...io import atomic_path, load_tensors
from ...models import load_model

SOURCES = ("D", "D_adv")  # the stages a given model can replace
FLAGS = {"D": "--standard-model", "D_adv": "--robust-model"}
ROLES = {"D": "standard", "D_adv": "robust"}
IMPORT_HINT = "convert another library's checkpoint with `advfeatures import-model SRC --out OUT.safetensors`"


@dataclass(frozen=True)
class GivenModel:
    name: str  # "D" or "D_adv": the stage it replaces
    path: Path  # absolute
    sha256: str  # of the file's bytes
    arch: str
    config: dict
    imported: dict | None = None  # `import-model`'s record of the file it was converted from, if it was

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]

    def record(self) -> dict:
        """What results.json and the report say about this source."""
        record = {"origin": "given", "flag": FLAGS[self.name], "path": str(self.path), "sha256": self.sha256,
                  "sha256_short": self.short_hash, "arch": self.arch, "config": self.config, "trained_here": False}
        if self.imported is not None:
            record["imported"] = self.imported
        return record


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def inspect_given_model(name: str, path: str | Path, image_shape: tuple[int, int, int], num_classes: int,
                        preset: str = "the preset") -> GivenModel:
    """Check that `path` is an advfeatures checkpoint for images of `image_shape` and `num_classes` classes.

    Raises BadInputError (one line: the flag, the file, what is wrong and the fix) otherwise.
    """
    flag, path = FLAGS[name], Path(path).expanduser().absolute()
    if not path.is_file():
        raise BadInputError(f"{flag} {path}: no such file; give an advfeatures .safetensors checkpoint "
                            f"(train one with `advfeatures train`, or {IMPORT_HINT})")
    try:
        model = load_model(path)
    except BadInputError as err:
        reason = " ".join(str(err).split())  # one line whatever the underlying library wrote
        raise BadInputError(f"{flag}: {reason}; {IMPORT_HINT}") from err
    config = dict(model.config)
    want = _describe(tuple(image_shape), num_classes)
    size = config.get("image_size")
    takes = (config.get("in_channels"), size, size) if size is not None else None
    if (takes is not None and takes != tuple(image_shape)) or config.get("num_classes", num_classes) != num_classes:
        got = _describe(takes, config.get("num_classes"))
        raise BadInputError(f"{flag} {path}: the model takes {got} but {preset}'s data are {want}; give a model "
                            f"made for {preset}'s data (or choose the --preset it was made for)")
    try:  # the architecture may not record everything above: one forward pass settles it
        with torch.no_grad():
            logits = model(torch.zeros(2, *image_shape))
        ok = tuple(logits.shape) == (2, num_classes)
    except RuntimeError:
        ok = False
    if not ok:
        raise BadInputError(f"{flag} {path}: the model does not map {preset}'s data ({want}) to {num_classes} "
                            f"logits; give a model made for {preset}'s data (or choose the --preset it was made for)")
    return GivenModel(name, path, file_sha256(path), config.pop("arch"), config, _import_record(path))


def _import_record(path: Path) -> dict | None:
    """The provenance `advfeatures import-model` wrote into the checkpoint (library, original file and hash)."""
    text = load_tensors(path)[1].get("imported")
    try:
        record = json.loads(text) if text else None
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def _describe(shape, num_classes) -> str:
    shape = "x".join(str(s) for s in shape) if shape else "unrecorded-size"
    return f"{shape} images with {num_classes} classes"


def fingerprint_suffix(given: dict[str, GivenModel]) -> str:
    """What the given sources add to a run's fingerprint: the content of each file (not its path)."""
    return "".join(f"-given-{name}={given[name].short_hash}" for name in SOURCES if name in given)


def install(source: GivenModel, dest: Path) -> None:
    """Copy the given checkpoint byte for byte to `dest` (atomically), and check the copy."""
    with atomic_path(dest) as tmp:
        shutil.copyfile(source.path, tmp)
        if file_sha256(tmp) != source.sha256:
            raise BadInputError(f"{FLAGS[source.name]} {source.path} changed while it was being read; "
                                "leave it alone during the run and run again")


def check_installed(source: GivenModel, dest: Path) -> None:
    """A cached given stage is trusted only while the run's copy is still exactly the given file."""
    if not dest.is_file() or file_sha256(dest) != source.sha256:
        raise CorruptFileError(f"{dest} is not the given {FLAGS[source.name]} {source.path} "
                               f"(sha256 {source.short_hash})")


def sources_record(given: dict[str, GivenModel], seeds: int) -> dict:
    """results.json's "sources": where D and D_adv came from."""
    out = {}
    for name in SOURCES:
        if name in given:
            out[name] = {**given[name].record(), "same_for_every_seed": True, "seeds": seeds}
        else:
            out[name] = {"origin": "trained", "trained_here": True}
    return out


__all__ = ["FLAGS", "SOURCES", "GivenModel", "check_installed", "file_sha256",
           "fingerprint_suffix", "inspect_given_model", "install", "sources_record"]
