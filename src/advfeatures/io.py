"""Safe file writing and tensor-file helpers: atomic renames and safetensors only, never pickles."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from .errors import CorruptFileError


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; on success rename it over `path`, on failure delete it.

    A reader never sees a half-written file: either the old file (or none) or the complete new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are for sharing
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> dict:
    """A JSON object from a file we wrote; anything else (bad JSON, a list, a string) is a CorruptFileError."""
    try:
        obj = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptFileError(f"{path}: not valid JSON ({err}); delete it and run again") from err
    if not isinstance(obj, dict):
        raise CorruptFileError(f"{path}: holds a JSON {type(obj).__name__}, not an object; delete it and run again")
    return obj


def is_temporary_name(name: str) -> bool:
    """Whether a file name is one `atomic_path` makes (`.<name>.<random>.tmp`) or the --out write probe."""
    if name == ".write-test" or name.startswith(".write-test."):
        return True
    return name.startswith(".") and name.endswith(".tmp") and name.count(".") >= 3


def remove_orphaned_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that interrupted atomic writes left anywhere under `folder`; returns them.

    A write killed between `mkstemp` and the rename (kill -9, a full disk, power loss) leaves `.<name>.*.tmp`
    beside its target forever; nothing reads them, they only take space and confuse. Call this only while no
    other process writes into `folder` (under its RunLock): a live writer's temporary file looks the same.
    """
    removed = []
    for parent, _, files in os.walk(folder):
        for name in files:
            if is_temporary_name(name):
                path = Path(parent) / name
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue
                removed.append(path)
    return removed


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write a safetensors file atomically; metadata values must be strings."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_tensors(path: str | os.PathLike, required: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """Read a safetensors file; returns (tensors, metadata). Corrupt or incomplete files raise CorruptFileError."""
    path = Path(path)
    if not path.is_file():
        raise CorruptFileError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CorruptFileError(
            f"{path}: not a readable safetensors file ({err}); it may be truncated - delete it and recreate it"
        ) from err
    missing = [k for k in required if k not in tensors]
    if missing:
        raise CorruptFileError(f"{path}: missing tensors {missing}; delete it and recreate it")
    return tensors, metadata


def pack_mask(mask: torch.Tensor) -> str:
    """A boolean vector as a hex string (8 entries per byte): per-example results that fit in a JSON record."""
    bits = mask.detach().to("cpu", torch.bool).flatten()
    padded = torch.cat([bits, bits.new_zeros((-len(bits)) % 8)]).view(-1, 8).to(torch.uint8)
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
    return bytes((padded * weights).sum(1).to(torch.uint8).tolist()).hex()


def unpack_mask(text: str, n: int) -> torch.Tensor:
    """The first `n` entries of a `pack_mask` string, as a bool tensor; a string too short is a CorruptFileError."""
    try:
        data = torch.tensor(list(bytes.fromhex(text)), dtype=torch.uint8)
    except (ValueError, TypeError) as err:
        raise CorruptFileError(f"not a packed per-example result ({err})") from err
    if len(data) * 8 < n:
        raise CorruptFileError(f"a packed per-example result holds {len(data) * 8} entries, {n} needed")
    shifts = torch.tensor([7, 6, 5, 4, 3, 2, 1, 0], dtype=torch.uint8)
    return ((data[:, None] >> shifts) & 1).flatten()[:n].bool()
