"""Where tensors live and how fast kernels run: device choice, bf16 autocast, channels_last."""

from __future__ import annotations

import contextlib
import functools

import torch

from .validation import check_compile_backend, check_device_name


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """'auto' picks CUDA when present, else CPU; an unavailable or unsupported explicit choice is a usage error."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return check_device_name(name)  # cpu or an existing cuda[:N]; mps, xla, meta, typos: BadInputError


def bf16_is_fast(device: torch.device) -> bool:
    """Whether `device` computes in bf16 natively: CUDA GPUs with bf16, CPUs with AVX512-BF16 or AMX.

    Elsewhere bf16 is emulated and runs slower than float32 (measured on CPUs without those instructions), so
    autocast stays off there.
    """
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device.type == "cpu" and _cpu_has_bf16()


@functools.lru_cache(maxsize=1)
def _cpu_has_bf16() -> bool:
    capabilities = getattr(torch.cpu, "get_capabilities", None)  # recent torch
    if capabilities is not None:
        found = capabilities()
        return bool(found.get("avx512_bf16") or found.get("amx_bf16"))
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)  # older torch 2.x
    return bool(check and check())


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast when enabled and the device runs bf16 natively (`bf16_is_fast`); a no-op otherwise."""
    if enabled and bf16_is_fast(device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def exact_float32(device: torch.device):
    """Plain float32 arithmetic on CUDA for the block: TF32 off in convolutions (cuDNN allows it by default) and in
    matmuls. The evaluation runs under it, so a robust accuracy never depends on reduced-precision products; TF32
    stays whatever the user set elsewhere. A no-op on other devices."""
    if torch.device(device).type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def compile_model(model: torch.nn.Module, backend: str | bool = "inductor") -> torch.nn.Module:
    """torch.compile in place: calls (`model(x)`) and `model.representation` (used by inversion) run compiled.

    The module keeps its class and state_dict, so saving, loading and attribute access are unchanged.
    `backend` True means "inductor" (the fast one); "aot_eager" checks the plumbing without code generation.
    """
    backend = "inductor" if check_compile_backend(backend) is True else backend
    model.compile(backend=backend)
    if hasattr(model, "representation") and not hasattr(model.representation, "_torchdynamo_orig_callable"):
        model.representation = torch.compile(model.representation, backend=backend)
    return model
