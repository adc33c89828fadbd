"""One validation layer for every number and tensor that changes a result, shared by the CLI and the library.

A value that cannot be right (a NaN radius, a negative width, images in 0-255, a label the model has no class
for, a model on another device than its data) raises `BadInputError` naming the value, what was wrong and the
fix: exit code 2 and one line on the command line, a clear exception in Python. Without these checks such values
do not fail; they give a number that looks fine and is wrong (a NaN eps measures clean accuracy and calls it
robust, because every comparison with NaN is false).

Checks are cheap: number checks are plain Python; a tensor's NaN/inf and range checks are one `aminmax`
reduction (NaN and inf propagate into the min/max, so one pass answers both questions) and one host sync.
Functions called inside inner loops (`pgd_attack` once per training batch) use `check_batch_structure`, which
looks only at shapes, dtypes and devices and never synchronises with the device.
"""

from __future__ import annotations

import math
import numbers
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch

from .errors import BadInputError

NORMS = ("l2", "linf")
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit integer


# ---------------------------------------------------------------- numbers


def _number(name: str, value) -> float:
    """`value` as a float, or BadInputError for bools, strings, None, tensors of several values."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.dtype != torch.bool:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise BadInputError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    return float(value)


def check_real(name: str, value, *, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False, allow_inf: bool = False) -> float:
    """A finite real number (NaN never passes; +-inf only with allow_inf) within [low, high] (open ends on request).

    Returns it as a float. The comparisons are written so that NaN fails them.
    """
    v = _number(name, value)
    if math.isnan(v):
        raise BadInputError(f"{name} is NaN; give a number")
    if math.isinf(v) and not allow_inf:
        raise BadInputError(f"{name} must be finite, got {v}")
    if low is not None and not (v > low if low_open else v >= low):
        raise BadInputError(f"{name} must be {'>' if low_open else '>='} {low:g}, got {v:g}")
    if high is not None and not (v < high if high_open else v <= high):
        raise BadInputError(f"{name} must be {'<' if high_open else '<='} {high:g}, got {v:g}")
    return v


def check_int(name: str, value, *, low: int | None = None, high: int | None = None) -> int:
    """An integer (not a bool, not a float that happens to be whole) within [low, high]."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise BadInputError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    v = int(value)
    if low is not None and v < low:
        raise BadInputError(f"{name} must be at least {low}, got {v}")
    if high is not None and v > high:
        raise BadInputError(f"{name} must be at most {high}, got {v}")
    return v


def check_norm(norm, name: str = "norm") -> str:
    if norm not in NORMS:
        raise BadInputError(f"unknown {name} {norm!r}; choose 'l2' or 'linf'")
    return norm


def check_eps(eps, name: str = "eps", *, positive: bool = False) -> float:
    """An attack radius: finite and >= 0 (> 0 with `positive`, e.g. for adversarial training)."""
    return check_real(name, eps, low=0.0, low_open=positive)


def check_step_size(step_size, name: str = "step_size") -> float | None:
    """None (the caller's default) or a finite step > 0: a zero step never moves, so the attack silently does
    nothing and robust accuracy reads as clean accuracy."""
    return None if step_size is None else check_real(name, step_size, low=0.0, low_open=True)


def check_seed(seed, name: str = "seed") -> int:
    return check_int(name, seed, low=0, high=MAX_SEED)


def check_attack(*, norm, eps, steps=None, step_size=None, restarts=None, targets=None, batch_size=None,
                 seed=None, eps_name: str = "eps", min_steps: int = 0) -> None:
    """Every number of an attack call, each only when given (None: not part of this call)."""
    check_norm(norm)
    check_eps(eps, eps_name)
    if steps is not None:
        check_int("steps", steps, low=min_steps)
    check_step_size(step_size)
    if restarts is not None:
        check_int("restarts", restarts, low=0)
    if targets is not None:
        check_int("targets", targets, low=0)
    if batch_size is not None:
        check_int("batch_size", batch_size, low=1)
    if seed is not None:
        check_seed(seed)


# ---------------------------------------------------------------- tensors


def _range_of(t: torch.Tensor) -> tuple:
    """(min, max) in one reduction and one host sync; NaN anywhere makes both NaN (torch propagates it)."""
    low, high = torch.aminmax(t.detach())
    low, high = torch.stack([low, high]).tolist()
    return low, high


def check_images(images, source: str = "images", *, allow_empty: bool = False) -> None:
    """Floats (N, C, H, W), finite, in [0, 1]; N > 0 unless allow_empty."""
    check_image_structure(images, source, allow_empty=allow_empty)
    if images.numel() == 0:
        return
    low, high = _range_of(images)
    if math.isnan(low) or math.isnan(high) or math.isinf(low) or math.isinf(high):
        raise BadInputError(f"{source}: images contain NaN or inf values; clean or regenerate the data")
    if low < 0 or high > 1:
        raise BadInputError(
            f"{source}: image values must lie in [0, 1], found [{low:.3g}, {high:.3g}]; "
            "rescale them (e.g. divide 8-bit images by 255)"
        )


def check_image_structure(images, source: str = "images", *, allow_empty: bool = False) -> None:
    """Shape and dtype of an image batch, without looking at the values (no pass over the data, no sync)."""
    if not isinstance(images, torch.Tensor):
        raise BadInputError(f"{source}: images must be a torch tensor, got {type(images).__name__}")
    if images.dim() != 4:
        raise BadInputError(
            f"{source}: images must have shape (N, C, H, W), got {tuple(images.shape)}; "
            "add a channel dimension for grey images (images.unsqueeze(1))"
        )
    if not images.is_floating_point():
        raise BadInputError(f"{source}: images must be floats in [0, 1], got dtype {images.dtype}; divide by 255")
    if images.shape[0] == 0 and not allow_empty:
        raise BadInputError(f"{source}: no images (an empty batch); pass at least one")


def check_label_structure(labels, n: int | None = None, source: str = "labels") -> None:
    """An integer vector (N,) (bool is refused: True/False are not classes), of length n when given."""
    if not isinstance(labels, torch.Tensor):
        raise BadInputError(f"{source}: labels must be a torch tensor, got {type(labels).__name__}")
    if labels.dim() != 1 or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise BadInputError(
            f"{source}: labels must be an integer vector (N,), got {labels.dtype} {tuple(labels.shape)}"
            + ("; bool labels are not classes - convert them deliberately (labels.long())"
               if labels.dtype == torch.bool else "")
        )
    if n is not None and labels.shape[0] != n:
        raise BadInputError(
            f"{source}: {n} images but {labels.shape[0]} labels; they must have the same length (one label each)"
        )


def check_labels(labels, n: int | None = None, num_classes: int | None = None, source: str = "labels") -> None:
    """Integer labels (N,), >= 0 always, and < num_classes when it is known."""
    check_label_structure(labels, n, source)
    if labels.numel() == 0:
        return
    low, high = (int(v) for v in _range_of(labels))
    if low < 0:
        raise BadInputError(f"{source}: labels must be class indices >= 0, found {low}")
    if num_classes is not None and high >= num_classes:
        raise BadInputError(
            f"{source}: labels must lie in 0..{num_classes - 1} ({num_classes} classes), found "
            f"[{low}, {high}]; wrong dataset or model?"
        )


def check_images_labels(images, labels, num_classes: int | None = None, source: str = "data", *,
                        allow_empty: bool = True) -> None:
    """The data contract of the whole library: images (N, C, H, W) finite floats in [0, 1], labels int (N,) in
    0..num_classes-1 (>= 0 when num_classes is unknown)."""
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise BadInputError(f"{source}: images and labels must be torch tensors")
    check_image_structure(images, source, allow_empty=allow_empty)
    check_label_structure(labels, images.shape[0], source)
    check_images(images, source, allow_empty=allow_empty)
    check_labels(labels, None, num_classes, source)


# ---------------------------------------------------------------- models beside their data


def model_device(model) -> torch.device | None:
    """The device of the model's first parameter (or buffer); None for a parameter-free callable."""
    if isinstance(model, torch.nn.Module):
        for t in model.parameters():
            return t.device
        for t in model.buffers():
            return t.device
    return None


def model_classes(model) -> int | None:
    """How many classes the model predicts, when it says (our models' head or config); None otherwise."""
    head = getattr(model, "head", None)
    if isinstance(head, torch.nn.Linear):
        return head.out_features
    config = getattr(model, "config", None)
    if isinstance(config, dict) and isinstance(config.get("num_classes"), int):
        return config["num_classes"]
    return None


def check_same_device(model, *tensors: torch.Tensor, source: str = "data") -> None:
    """Model and tensors on one device, or a one-line error instead of torch's deep 'Expected all tensors...'."""
    devices = {t.device for t in tensors if isinstance(t, torch.Tensor)}
    if len(devices) > 1:
        raise BadInputError(f"{source}: images and labels are on different devices "
                            f"({', '.join(sorted(str(d) for d in devices))}); move them to one (.to(device))")
    where = model_device(model)
    if where is not None and devices and where != next(iter(devices)):
        data = next(iter(devices))
        raise BadInputError(f"{source}: the model is on {where} but the data is on {data}; "
                            f"move one of them (model.to({str(data)!r}) or images.to({str(where)!r}))")


def check_model_inputs(model, images, labels=None, source: str = "data", *, check_values: bool = True) -> None:
    """What every public evaluation / attack function checks first: images (and labels) valid, non-empty, on the
    model's device, labels within the model's classes, images of the shape the model was built for.

    `check_values=False` skips the pass over the values (range, NaN, label range) for inner-loop callers.
    """
    if check_values:
        check_images(images, source)
    else:
        check_image_structure(images, source)
    if labels is not None:
        check_label_structure(labels, images.shape[0], source)
    check_same_device(model, images, *(() if labels is None else (labels,)), source=source)
    config = getattr(model, "config", None)
    if isinstance(config, dict) and all(isinstance(config.get(k), int) for k in ("in_channels", "image_size")):
        expected = (config["in_channels"], config["image_size"], config["image_size"])
        if tuple(images.shape[1:]) != expected:
            raise BadInputError(f"{source}: images are {tuple(images.shape[1:])} but the model takes {expected}; "
                                "wrong dataset or model?")
    if labels is not None and check_values:
        check_labels(labels, None, model_classes(model), source)


# ---------------------------------------------------------------- devices and backends


def check_device_name(name) -> torch.device:
    """A device this library runs on: cpu, or cuda[:N] with that GPU present. Anything else (mps, xla, meta, a
    typo) is refused here, before any work or any write, instead of failing deep inside the first model call."""
    if isinstance(name, torch.device):
        device = name
    else:
        if not isinstance(name, str):
            raise BadInputError(f"device must be a name such as 'cpu' or 'cuda', got {name!r}")
        try:
            device = torch.device(name)
        except (RuntimeError, ValueError) as err:
            raise BadInputError(f"unknown device {name!r}; use 'auto', 'cpu' or 'cuda[:N]'") from err
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise BadInputError(f"device {str(name)!r} is not supported; use 'auto', 'cpu' or 'cuda[:N]'")
    if not torch.cuda.is_available():
        raise BadInputError(f"device {str(name)!r} requested but CUDA is not available here; use --device cpu")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise BadInputError(f"device {str(name)!r}: this machine has {torch.cuda.device_count()} GPU(s), "
                            f"cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return device


def check_compile_backend(backend) -> str | bool:
    """False (no compile), True (inductor) or the name of a torch.compile backend that exists here."""
    if backend is False or backend is None:
        return False
    if backend is True:
        return True
    if not isinstance(backend, str) or not backend:
        raise BadInputError(f"compile backend must be a name such as 'inductor', got {backend!r}")
    import torch._dynamo  # imported only when compiling is asked for (it is slow to import)

    known = set(torch._dynamo.list_backends(exclude_tags=())) | {"inductor"}
    if backend not in known:
        raise BadInputError(f"unknown torch.compile backend {backend!r}; choose one of: {', '.join(sorted(known))}")
    return backend


# ---------------------------------------------------------------- a whole run


def check_presets(presets) -> tuple[str, ...]:
    """At least one preset, each named once. An empty list used to run nothing and still overwrite the folder's
    report.html and results.md with empty ones."""
    if isinstance(presets, str) or not all(isinstance(p, str) and p for p in presets):
        raise BadInputError(f"presets must be a list of names, got {presets!r}")
    presets = tuple(presets)
    if not presets:
        raise BadInputError("no preset given; name at least one with --preset (e.g. --preset digits)")
    twice = sorted({p for p in presets if presets.count(p) > 1})
    if twice:
        raise BadInputError(f"--preset names {', '.join(twice)} more than once; name each preset once")
    return presets


def check_run_options(options) -> None:
    """`reproduce`'s options (pipeline.RunOptions), before any work and any write: presets, seeds, device,
    compile backend and the quick-run overrides."""
    check_presets(options.presets)
    check_int("--seeds", options.seeds, low=1)
    if options.device not in (None, "auto"):
        check_device_name(options.device)
    check_compile_backend(options.compile)
    ov = options.overrides
    for name, low in (("limit", 1), ("epochs", 0), ("steps", 0), ("eval_restarts", 1), ("eval_targets", 0),
                      ("width", 1)):
        value = getattr(ov, name)
        if value is not None:
            check_int(f"--{name.replace('_', '-')}", value, low=low)


# ---------------------------------------------------------------- architectures and checkpoints

SIZE_OPTIONS = ("in_channels", "num_classes", "image_size", "width", "hidden", "depth")


def check_model_options(arch: str, config: dict) -> None:
    """Sizes of an architecture (channels, classes, image size, width, hidden, depth) are positive integers;
    mean / std are finite with std > 0. A width of 0 builds a model with empty layers that trains to chance
    without a word; a negative one fails deep inside torch."""
    for key in SIZE_OPTIONS:
        if key in config:
            check_int(f"model {arch!r}: {key}", config[key], low=1)
    for key in ("mean", "std"):
        values = config.get(key)
        if values is None:
            continue
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise BadInputError(f"model {arch!r}: {key} must be a list of numbers, got {values!r}")
        for v in values:
            check_real(f"model {arch!r}: {key} value", v, low=0.0 if key == "std" else None, low_open=True)


# ---------------------------------------------------------------- output paths


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _probe_folder(folder: Path, flag: str, path: Path) -> None:
    """Create and delete a file in `folder`: the only honest test of writability (os.access lies for root and on
    read-only mounts)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=folder)
        os.close(fd)
        Path(probe).unlink(missing_ok=True)  # missing: a run's clean-up under its lock took it; it was writable
    except OSError as err:
        raise BadInputError(f"{flag} {path}: cannot write in {folder} ({err.strerror}); choose another place") from err


def check_output_file(path, flag: str = "--out", *, suffix: str | None = None) -> Path:
    """Before any work: `path` can be written as a file (it is not a folder; its folder exists or can be made and
    is writable). Creates nothing that stays: missing parent folders are not made here."""
    path = Path(path)
    if path.is_dir():
        hint = f" such as {path / ('model' + (suffix or ''))}" if suffix else ""
        raise BadInputError(f"{flag} {path} is a folder; give a file name{hint}")
    if str(path).endswith(("/", "\\")):
        raise BadInputError(f"{flag} {path}: give a file name, not a folder")
    existing = _nearest_existing(path.parent if str(path.parent) else Path("."))
    if not existing.is_dir():
        raise BadInputError(f"{flag} {path}: {existing} is a file, so no folder can be made there; "
                            "choose another place")
    _probe_folder(existing, flag, path)
    return path


def check_output_folder(path, flag: str = "--out") -> Path:
    """Before any work: `path` is a folder or can be made as one, and is writable. Creates nothing that stays."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BadInputError(f"{flag} {path} is a file; give a folder")
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise BadInputError(f"{flag} {path}: {existing} is a file, so no folder can be made there; "
                            "choose another place")
    _probe_folder(existing, flag, path)
    return path


__all__ = [
    "check_attack", "check_compile_backend", "check_device_name", "check_eps", "check_image_structure",
    "check_images", "check_images_labels", "check_int", "check_label_structure", "check_labels",
    "check_model_inputs", "check_model_options", "check_norm", "check_output_file", "check_output_folder",
    "check_presets", "check_real", "check_run_options", "check_same_device", "check_seed", "check_step_size",
    "model_classes", "model_device",
]
