"""results.json: one seed's results from its stages, the means over seeds, a preset's file, the console table.

Each stage's result goes where its declaration says (`Stage.into`, e.g. ("accuracy", "D") or ("followups",
"goh")); with several seeds every number is averaged and, for the accuracies, the std and per-seed values sit
beside the mean; "per_seed" keeps every seed's whole results.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

import torch

# averaged over seeds where present
SUMMARY = ("audit", "attack_check", "transfer", "robust_source", "followups", "controls")


def place(results: dict, path: tuple[str, ...], value: dict) -> None:
    """results[path[0]]...[path[-1]] = a copy of value (the stage's cached result stays as it was)."""
    for key in path[:-1]:
        results = results.setdefault(key, {})
    results[path[-1]] = dict(value)


def new_seed_results() -> dict:
    return {"accuracy": {}, "construction": {}}


def aggregate(per_seed: list[dict]) -> dict:
    """Means over seeds, with std and per-seed values beside them, for every accuracy entry."""
    first = per_seed[0]
    accuracy = {}
    for name, entry in first["accuracy"].items():
        if "clean" not in entry:
            accuracy[name] = entry
            continue
        agg = {}
        for key in ("clean", "robust", "autoattack"):
            if not all(key in s["accuracy"][name] for s in per_seed):
                continue
            values = torch.tensor([s["accuracy"][name][key] for s in per_seed], dtype=torch.float64)
            agg[key] = float(values.mean())
            agg[f"{key}_std"] = float(values.std(unbiased=False)) if len(per_seed) > 1 else 0.0
            agg[f"{key}_per_seed"] = values.tolist()
        agg["curve"] = {e: float(torch.tensor([s["accuracy"][name]["curve"][e] for s in per_seed]).mean())
                        for e in entry["curve"]}
        agg.update({k: entry[k] for k in ("test_images", "curve_images", "curve_targets") if k in entry})
        accuracy[name] = agg
    return {
        "accuracy": accuracy,
        "construction": _mean_dicts([s["construction"] for s in per_seed]),
        **{k: _mean_dicts([s[k] for s in per_seed]) for k in SUMMARY if k in first},
        "per_seed": [_without_examples(s) for s in per_seed],
    }


def _without_examples(seed_results: dict) -> dict:
    """A seed's results without the per-image bit strings (they stay in the stage records) and without where each
    stage was computed (summed up in "computed_under")."""
    out = {k: v for k, v in seed_results.items() if k != "computed"}
    out["accuracy"] = {name: {k: v for k, v in entry.items() if k != "robust_examples"}
                       for name, entry in seed_results["accuracy"].items()}
    return out


def _mean_dicts(items: list):
    """Elementwise mean of nested dicts of numbers (other values from the first)."""
    head = items[0]
    if isinstance(head, dict):
        return {k: _mean_dicts([i[k] for i in items if isinstance(i, dict) and k in i]) for k in head}
    if isinstance(head, (int, float)) and not isinstance(head, bool):
        values = [float(i) for i in items]
        return sum(values) / len(values)
    return head


def preset_results(preset, per_seed: list[dict], *, num_classes: int, released, sources: dict, seconds: float,
                   theory: dict | None, machine: dict | None = None) -> dict:
    """DIR/<preset>/results.json (DESIGN.md's contract): the preset, its seeds, the means, and where it ran."""
    results = {
        "preset": preset.name,
        "seeds": list(range(len(per_seed))),
        "threat_model": {"norm": preset.threat.norm, "eps": preset.threat.eps},
        "num_classes": num_classes,
        **aggregate(per_seed),
        "settings": preset.as_dict(),
        "released": str(released) if released else None,
        "sources": sources,
        "precision": per_seed[0]["precision"],
        # how convolutions laid out their tensors: on a CPU it changes a seed's numbers as the thread count does
        "memory_format": per_seed[0].get("memory_format", "contiguous"),
        "seconds": {"total": seconds, "stages": per_seed[0]["seconds"]},
        "computed_under": computed_under(per_seed),
    }
    if machine is not None:
        results["machine"] = machine
    if theory is not None:
        results["theory"] = theory
    return results


def computed_under(per_seed: list[dict]) -> list[dict]:
    """Every configuration (commit, device, torch, threads) the seeds' stages were computed under, each with its
    stages ("seed k: NAME" when there are several seeds). More than one means a resumed run mixed code, machines or
    thread counts, each of which can change a seed's numbers; a record from before stages said so counts as
    unknown."""
    groups: dict[str, list[str]] = {}
    for k, seed in enumerate(per_seed):
        for name, where in (seed.get("computed") or {}).items():
            config = json.dumps(where or {"commit": "unknown"}, sort_keys=True)
            groups.setdefault(config, []).append(name if len(per_seed) == 1 else f"seed {k}: {name}")
    return [{**json.loads(config), "stages": names} for config, names in groups.items()]


def machine_record(device: torch.device, jobs: int = 1, threads: int | None = None) -> dict:
    """Where a run ran (DESIGN.md: results.json "machine"): the device's name, the CPU and its cores, torch, the
    worker processes and threads each seed ran with, and the code's commit (git where the package sits in a
    checkout, else $ADVFEATURES_COMMIT, else "unknown")."""
    device = torch.device(device)
    return {
        "device": device_name(device),
        "device_type": device.type,
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": threads or torch.get_num_threads(),
        "worker_processes": jobs,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "commit": code_commit(),
    }


def device_name(device: torch.device | str) -> str:
    """The GPU's name, or the CPU's model for a CPU device."""
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def computed_where(device: torch.device | str) -> dict:
    """What a stage record says it was computed with, besides its thread count (runfolder: "computed")."""
    return {"commit": code_commit(), "device": device_name(device), "torch": torch.__version__}


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def code_commit() -> str:
    """The checkout's commit (with "-dirty" when tracked files differ from it), $ADVFEATURES_COMMIT, or "unknown"."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("ADVFEATURES_COMMIT", "unknown")


def format_table(results: dict) -> str:
    """The console's summary: clean and robust accuracy of every model."""
    eps = results["threat_model"]["eps"]
    lines = [f"{'training set':<16}{'clean':>8}{f'robust@{eps:g}':>14}"]
    for name, entry in results["accuracy"].items():
        if "clean" in entry:
            lines.append(f"{name:<16}{entry['clean']:>8.3f}{entry['robust']:>14.3f}")
    return "\n".join(lines)
