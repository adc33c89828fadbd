"""The two file layouts, read without running anything: MadryLab robustness checkpoints and RobustBench files.

robustness (the paper authors' library; `robustness/train.py`, `model_utils.py`, `attacker.py`):
  `torch.save({"model": state_dict, "optimizer": ..., "schedule": ..., "epoch": ..., ...}, pickle_module=dill)`,
  older files `state_dict` in place of `model`. The state dict is that of a DataParallel-wrapped AttackerModel:
  `module.model.*` (the classifier), the same tensors again under `module.attacker.model.*`, and the input
  normalisation as buffers `module.normalizer.new_mean` / `new_std` (and `module.attacker.normalize.*`), shape
  (3, 1, 1). Their InputNormalize clamps inputs to [0, 1] before normalising.
RobustBench (`robustbench/utils.py` load_model, `model_zoo/cifar10.py`):
  a state dict, possibly under `state_dict`, possibly with `module.` (and `model.`) prefixes, which it strips.
  Normalisation, where a model has one, is a pair of buffers `mu` / `sigma` (1, 3, 1, 1) inside the model;
  RobustBench tolerates files without them (Engstrom2019Robustness is on its list of such models) and then uses
  the class's built-in values: CIFAR-10's mean and std for its ResNet-50, none for the WRN-28-10 `Standard`.

Everything here works on what `torch.load(weights_only=True)` returned: dicts and tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

LIBRARIES = ("robustness", "robustbench")
ROBUSTNESS_NORMALISATION = ("normalizer.new_mean", "normalizer.new_std")
ROBUSTNESS_ATTACKER_NORMALISATION = ("attacker.normalize.new_mean", "attacker.normalize.new_std")


@dataclass
class Unwrapped:
    """A classifier's weights in its library's own spelling, with the normalisation the library applies."""

    library: str
    weights: dict[str, torch.Tensor]
    mean: list[float] | None = None  # None: the file has none; the architecture's default applies
    std: list[float] | None = None
    clamp_input: bool = False
    epoch: int | None = None
    notes: list[str] = field(default_factory=list)


def find_state_dict(obj: object) -> tuple[dict[str, torch.Tensor], int | None]:
    """The state dict inside a loaded checkpoint (at the top, or under `model` / `state_dict`) and its epoch."""
    if not isinstance(obj, dict):
        raise ValueError(f"it holds a {type(obj).__name__}, not a checkpoint (a dict of weights)")
    state, epoch = obj, obj.get("epoch")
    for key in ("model", "state_dict"):
        if isinstance(obj.get(key), dict):
            state = obj[key]
            break
    bad = [k for k, v in state.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if not state or bad:
        top = ", ".join(map(repr, list(obj)[:6]))
        raise ValueError(f"no state dict in it (top-level keys: {top}); expected a dict of tensors, at the top "
                         "or under 'model' (robustness) or 'state_dict'")
    return dict(state), epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove `prefix` when every key has it (DataParallel's `module.`); otherwise leave the keys alone."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def detect_library(state: dict[str, torch.Tensor]) -> str:
    """robustness when the keys are an AttackerModel's (model. / attacker. / normalizer.), else robustbench."""
    state = strip_prefix(state, "module.")
    if any(k.startswith(("normalizer.", "attacker.")) for k in state):
        return "robustness"
    return "robustbench"


def _three(tensor: torch.Tensor, name: str) -> list[float]:
    values = tensor.detach().float().flatten()
    if values.numel() != 3:
        raise ValueError(f"{name} holds {values.numel()} values, expected 3 (one per colour channel)")
    return values.tolist()


def unwrap_robustness(state: dict[str, torch.Tensor], epoch: int | None) -> Unwrapped:
    """The classifier inside a robustness AttackerModel state dict, its normalisation, and consistency checks."""
    state = strip_prefix(state, "module.")
    if detect_library(state) != "robustness":
        raise ValueError("its keys are not a robustness AttackerModel's (no module.normalizer.* or "
                         "module.attacker.*); it looks like a RobustBench or plain state dict - use --from robustbench")
    model = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    attacker = {k[len("attacker.model."):]: v for k, v in state.items() if k.startswith("attacker.model.")}
    known = set(ROBUSTNESS_NORMALISATION + ROBUSTNESS_ATTACKER_NORMALISATION)
    other = sorted(k for k in state if not k.startswith(("model.", "attacker.model.")) and k not in known)
    if other:
        raise ValueError(f"unexpected keys for a robustness AttackerModel: {', '.join(other[:4])}"
                         f"{', ...' if len(other) > 4 else ''}")
    if not model:
        raise ValueError("no classifier weights (module.model.*) in it")
    missing = [f"module.{k}" for k in ROBUSTNESS_NORMALISATION if k not in state]
    if missing:
        raise ValueError(f"missing {' and '.join(missing)} (the input normalisation)")
    if attacker and (attacker.keys() != model.keys() or any(not torch.equal(attacker[k], model[k]) for k in model)):
        raise ValueError("its module.attacker.model.* copy differs from module.model.*; the file is inconsistent")
    mean, std = (_three(state[k], f"module.{k}") for k in ROBUSTNESS_NORMALISATION)
    for key, value in zip(ROBUSTNESS_ATTACKER_NORMALISATION, (mean, std), strict=True):
        if key in state and _three(state[key], f"module.{key}") != value:
            raise ValueError(f"module.{key} differs from module.normalizer's; the file is inconsistent")
    return Unwrapped("robustness", model, mean, std, clamp_input=True, epoch=epoch)


def unwrap_robustbench(state: dict[str, torch.Tensor], epoch: int | None) -> Unwrapped:
    """The model's weights after RobustBench's own prefix stripping; `mu` / `sigma` become the normalisation."""
    state = strip_prefix(strip_prefix(state, "module."), "model.")
    if detect_library(state) != "robustbench":
        raise ValueError("its keys are the robustness library's (module.model.*, module.normalizer.*); "
                         "use --from robustness")
    weights = {k: v for k, v in state.items() if k not in ("mu", "sigma")}
    have = [k for k in ("mu", "sigma") if k in state]
    if len(have) == 1:
        raise ValueError(f"it has `{have[0]}` but not its partner; RobustBench normalisation needs both mu and sigma")
    if have:
        return Unwrapped("robustbench", weights, _three(state["mu"], "mu"), _three(state["sigma"], "sigma"),
                         epoch=epoch)
    return Unwrapped("robustbench", weights, epoch=epoch)


def unwrap(obj: object, library: str | None) -> Unwrapped:
    """Find the state dict in a loaded checkpoint and read it as `library`'s layout (detected when None)."""
    state, epoch = find_state_dict(obj)
    library = library or detect_library(state)
    if library not in LIBRARIES:
        raise ValueError(f"unknown library {library!r}; choose one of {', '.join(LIBRARIES)}")
    return (unwrap_robustness if library == "robustness" else unwrap_robustbench)(state, epoch)
