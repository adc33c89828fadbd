"""Machine and version description recorded beside every benchmark figure."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "RESULTS.md"


def describe() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    cpu = platform.processor() or platform.machine()
    return (f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} CPU cores ({cpu}), "
            f"torch threads {torch.get_num_threads()}; {gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def append(title: str, body: str) -> None:
    """Append a section to RESULTS.md (the record of measured figures)."""
    with RESULTS.open("a") as f:
        f.write(f"\n## {title}\n\nMachine: {describe()}\n\n{body.rstrip()}\n")
