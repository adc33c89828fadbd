"""Other libraries' checkpoints into ours, safely: MadryLab robustness (the paper authors') and RobustBench.

    from advfeatures.interop import import_checkpoint
    imported = import_checkpoint("cifar_l2_0_5.pt", "robust.safetensors")   # robustness, resnet50, cifar10
    model = advfeatures.load_model("robust.safetensors")                    # [0, 1] images -> logits

The file is read with `torch.load(weights_only=True)` only, never with a `pickle_module` (which would turn
that off): a pickle that needs any code beyond tensors and plain containers is refused and nothing in it
runs. The weights must then match one of our architectures key for key (see architectures.py), with the
library's normalisation carried into ours; the result is written with `save_model`, atomically, so
`load_model` and every command take it. Anything wrong raises BadInputError before anything is written.
"""

from __future__ import annotations

import hashlib
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.files import _refusal_reason
from ..errors import BadInputError, CorruptFileError
from ..models import ImageClassifier, build_model, save_model
from ..models.cifar import CIFAR_MEAN, CIFAR_STD
from .architectures import SUPPORTED, Architecture, detect_architecture, match_weights
from .formats import LIBRARIES, Unwrapped, unwrap

# What the model is for: input size and classes. Restricted ImageNet: the robustness library's 9 superclasses.
DATASETS = {
    "cifar10": {"image_size": 32, "num_classes": 10},
    "restricted_imagenet": {"image_size": 224, "num_classes": 9},
}
# RobustBench's built-in normalisation for files without mu / sigma (Engstrom2019RobustnessNet's buffers; its
# WideResNet, `Standard`, normalises nothing).
ROBUSTBENCH_DEFAULTS = {"resnet18": (CIFAR_MEAN, CIFAR_STD), "resnet50": (CIFAR_MEAN, CIFAR_STD),
                        "wide_resnet": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))}
FIX_CODE = ("if you trust the file and where it came from, load it with the library that wrote it and save just "
            "the weights (torch.save(checkpoint['model'], 'weights.pt')), then import that")
FIX_FILE = "give a checkpoint written by robustness (checkpoint.pt.best, cifar_l2_0_5.pt) or RobustBench (<model>.pt)"


@dataclass
class ImportedModel:
    """An imported model and where it came from."""

    model: ImageClassifier
    source: Path
    library: str
    architecture: str  # their layout, in words
    dataset: str
    epoch: int | None = None
    notes: list[str] = field(default_factory=list)

    def provenance(self) -> dict:
        """What is recorded in the written checkpoint's metadata (key `imported`)."""
        return {"library": self.library, "file": self.source.name, "sha256": sha256(self.source),
                "architecture": self.architecture, "dataset": self.dataset, "epoch": self.epoch, "notes": self.notes}

    def summary(self) -> str:
        c = self.model.config
        options = ", ".join(f"{k} {c[k]}" for k in ("width", "depth", "stem") if k in c)
        mean = ", ".join(f"{v:.4g}" for v in self.model.mean.flatten().tolist())
        std = ", ".join(f"{v:.4g}" for v in self.model.std.flatten().tolist())
        epoch = f" (epoch {self.epoch})" if self.epoch is not None else ""
        size = f"{c['image_size']}x{c['image_size']}"
        text = (f"{self.library} checkpoint {self.source}{epoch}: {c['arch']} ({options}), {c['num_classes']} "
                f"classes, {self.dataset} {size}, normalisation mean ({mean}) std ({std})"
                + (", inputs clamped to [0, 1]" if self.model.clamp_input else ""))
        return text + "".join(f"; {note}" for note in self.notes)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_untrusted(path: Path) -> object:
    """`torch.load(path, map_location="cpu", weights_only=True)`, its refusals and failures as one-line errors."""
    if not path.is_file():
        raise BadInputError(f"{path}: no such file; {FIX_FILE}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols it did not write itself
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CorruptFileError(
            f"{path}: refused - not a plain checkpoint of tensors and dicts ({_refusal_reason(err)}); nothing in "
            f"it was run. A damaged download fails the same way (download it again); otherwise {FIX_CODE}"
        ) from err
    except Exception as err:  # cut short (EOFError, RuntimeError on a zip), junk (KeyError, ...)
        reason = (str(err).splitlines() or [""])[0][:160]
        raise CorruptFileError(
            f"{path}: not a readable torch checkpoint ({type(err).__name__}: {reason}); it may be truncated or not "
            f"a checkpoint at all - {FIX_FILE}"
        ) from err


def _dataset(name: str | None, architecture: Architecture, num_classes: int, path: Path) -> str:
    if name is None:
        name = "restricted_imagenet" if architecture.options.get("stem") == "imagenet" else "cifar10"
    if name not in DATASETS:
        raise BadInputError(f"--dataset {name}: choose one of {', '.join(DATASETS)}")
    wanted = DATASETS[name]["num_classes"]
    if num_classes != wanted:
        raise BadInputError(f"{path}: its classifier has {num_classes} outputs but {name} has {wanted} classes; "
                            f"pass the right --dataset ({', '.join(DATASETS)})")
    return name


def read_checkpoint(
    path: str | Path, library: str | None = None, arch: str | None = None, dataset: str | None = None
) -> ImportedModel:
    """Read another library's checkpoint as one of our models (eval mode); writes nothing.

    `library` ("robustness" or "robustbench"), `arch` (resnet18, resnet50, wide_resnet) and `dataset` (cifar10,
    restricted_imagenet) are detected from the keys when None. Raises BadInputError naming the file, the
    reason and the fix.
    """
    path = Path(path)
    if library is not None and library not in LIBRARIES:
        raise BadInputError(f"--from {library}: choose one of {', '.join(LIBRARIES)}")
    obj = load_untrusted(path)
    try:
        unwrapped: Unwrapped = unwrap(obj, library)
        architecture = detect_architecture(unwrapped.weights, arch)
    except ValueError as err:
        raise BadInputError(f"{path}: {err}") from err
    head = architecture.their_key("head.weight")
    num_classes = int(unwrapped.weights[head].shape[0]) if head in unwrapped.weights else 10
    stem = unwrapped.weights.get("conv1.weight")  # the first conv, in every supported layout
    in_channels = int(stem.shape[1]) if stem is not None and stem.dim() == 4 else 3
    dataset = _dataset(dataset, architecture, num_classes, path)
    notes = list(unwrapped.notes)
    mean, std = unwrapped.mean, unwrapped.std
    if mean is None:
        if dataset != "cifar10" or architecture.arch not in ROBUSTBENCH_DEFAULTS:
            raise BadInputError(f"{path}: no normalisation in it (RobustBench's mu / sigma) and no RobustBench "
                                f"default for {architecture.arch} on {dataset}; add mu and sigma to the file")
        mean, std = ROBUSTBENCH_DEFAULTS[architecture.arch]
        notes.append("the file has no mu / sigma, so RobustBench's built-in normalisation for this "
                     "architecture is used, as its load_model does")
    if in_channels != len(mean):
        raise BadInputError(f"{path}: its first conv takes {in_channels} channels but the normalisation has "
                            f"{len(mean)} values; the file is inconsistent")
    model = build_model(architecture.arch, in_channels=in_channels, num_classes=num_classes,
                        image_size=DATASETS[dataset]["image_size"], mean=list(mean), std=list(std),
                        **architecture.options, **({"clamp_input": True} if unwrapped.clamp_input else {}))
    try:
        state = match_weights(architecture, model.state_dict(), unwrapped.weights)
    except ValueError as err:
        raise BadInputError(f"{path}: {err}; check --from / --arch, or that the file is complete") from err
    state.update(mean=model.mean, std=model.std)
    model.load_state_dict(state, strict=True)
    return ImportedModel(model.eval(), path, unwrapped.library, architecture.description, dataset,
                         unwrapped.epoch, notes)


def import_checkpoint(
    path: str | Path, out: str | Path, library: str | None = None, arch: str | None = None,
    dataset: str | None = None,
) -> ImportedModel:
    """`read_checkpoint`, then write it to `out` as an ordinary advfeatures checkpoint (atomically)."""
    path, out = Path(path), Path(out)
    if out.exists() and path.exists() and out.resolve() == path.resolve():
        raise BadInputError(f"{out}: --out is the source file itself; write to another name "
                            f"(e.g. {path.stem}.safetensors)")
    if out.is_dir():
        raise BadInputError(f"{out}: --out is a folder; give a file name such as {out / (path.stem + '.safetensors')}")
    imported = read_checkpoint(path, library, arch, dataset)
    save_model(imported.model, out, imported=imported.provenance())
    return imported


__all__ = ["DATASETS", "LIBRARIES", "SUPPORTED", "ImportedModel", "import_checkpoint", "read_checkpoint"]
