"""Where tensors live and how fast kernels run: device choice, bf16 autocast, channels_last."""

from __future__ import annotations

import contextlib

import torch

from .errors import BadInputError


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """'auto' picks CUDA when present, else CPU; an unavailable explicit choice is a usage error."""
    if isinstance(name, torch.device):
        return name
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise BadInputError(f"unknown device {name!r}; use 'auto', 'cpu' or 'cuda[:N]'") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BadInputError(f"device {name!r} requested but CUDA is not available here; use --device cpu")
    return device


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when enabled; a no-op elsewhere (CPU bf16 is slower for these small nets)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def compile_model(model: torch.nn.Module, backend: str | bool = "inductor") -> torch.nn.Module:
    """torch.compile in place: calls (`model(x)`) and `model.representation` (used by inversion) run compiled.

    The module keeps its class and state_dict, so saving, loading and attribute access are unchanged.
    `backend` True means "inductor" (the fast one); "aot_eager" checks the plumbing without code generation.
    """
    backend = "inductor" if backend is True else backend
    model.compile(backend=backend)
    if hasattr(model, "representation") and not hasattr(model.representation, "_torchdynamo_orig_callable"):
        model.representation = torch.compile(model.representation, backend=backend)
    return model
