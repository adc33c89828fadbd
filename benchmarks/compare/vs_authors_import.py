"""Proof against the real thing: the authors' own checkpoints, imported by ours, compute what their code computes.

    python benchmarks/compare/vs_authors_import.py [--batch 16] [--wrn-batch 8] [--venv benchmarks/.venv-authors]
        [--no-record]

In the authors' environment (created on the first run like benchmarks/compare/vs_authors.py's, and shared with it: a
`--system-site-packages` virtual environment linked to this interpreter's packages, so it works from a virtual
environment too, with robustness==1.2.1.post2 and dill, plus robustbench==1.1.1 installed without its
dependencies and then those of them that the package registry has; its AutoAttack dependency is git-only),
benchmarks/compare/_import_worker.py:

1. builds the authors' CIFAR ResNet-50 through their `make_and_restore_model`, takes a few of their adversarial
   training steps with their optimizer and schedule, perturbs every BatchNorm, and saves the checkpoint as their
   training loop does (`torch.save(..., pickle_module=dill)`, keys model / optimizer / schedule / epoch / ...);
   their `make_and_restore_model(resume_path=...)` reads it back as the reference;
2. saves RobustBench's `Engstrom2019RobustnessNet` (same weights, mu / sigma buffers) and a WRN-28-10 `Standard`
   as state dicts where RobustBench's `load_model` finds them, and reads them back with it as the references;
3. imports every file with `advfeatures.interop.import_checkpoint` (weights_only, no dill) and reloads it with
   `load_model`; compares logits and the representation on the same random images, in float32 (what both run)
   and with both models cast to float64 (rounding taken out: what is left there is a mapping error). The bar:
   max abs difference <= 1e-4 everywhere.

The training steps exist to fill the optimizer and schedule state a real checkpoint carries. They run at lr 0.01:
at their CIFAR default of 0.1, two steps on random images blow the untrained head up to logits ~1e3-1e4, where
one float32 spacing is already ~1e-4 and two correct implementations that sum in a different order differ by
4.9e-4 (measured; the same checkpoint agrees to 1.8e-12 in float64). At lr 0.01 the logits are ~40-250, the
scale of a trained model's. `--lr 0.1` reproduces the other case.

Prints a table, with the versions, and records it (benchmarks/records/vs_authors_import.md, the worker's numbers in
vs_authors_import.jsonl; `--no-record` to print only). Exit status 0 when
every difference is within the bar, 1 when one is not or the worker fails, 2 when the environment cannot be set
up. About 3 minutes on 2 CPU cores after the environment exists (ResNet-50 and WRN-28-10 forwards on the CPU);
the first run also downloads the libraries.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from vs_authors import DEFAULT_VENV, SetupError, _tail, ensure_venv, installed_versions, pip

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import add_record_option, record, timed_once  # noqa: E402

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_import_worker.py"
PINS = {"robustness": "1.2.1.post2"}
ROBUSTBENCH = "robustbench==1.1.1"
# robustbench 1.1.1's declared dependencies that the package registry has (its `autoattack` is a git URL)
ROBUSTBENCH_DEPS = ["timm==1.0.9", "gdown==5.1.0", "geotorch", "torchdiffeq", "pyyaml", "Jinja2", "requests", "pandas"]
# robustbench/loaders.py imports pkg_resources, which setuptools 81 removed
SETUPTOOLS = "setuptools<81"
TOLERANCE = 1e-4


def ensure_environment(venv: Path) -> Path:
    python = ensure_venv(venv, PINS)
    for requirement, module in (("dill", "dill"), (SETUPTOOLS, "pkg_resources")):
        if not _importable(python, module):
            result = pip(python, requirement)
            if result.returncode != 0:
                raise SetupError(f"pip could not install {requirement} into {venv}:\n{_tail(result.stdout)}")
    if installed_versions(python, {"robustbench": ""}) is None:
        print(f"installing {ROBUSTBENCH} (--no-deps) and its registry dependencies into {venv} ...", file=sys.stderr)
        result = pip(python, "--no-deps", ROBUSTBENCH)
        if result.returncode != 0:
            print(f"could not install {ROBUSTBENCH}; the RobustBench rows will be skipped:\n"
                  f"{_tail(result.stdout, 5)}", file=sys.stderr)
            return python
        result = pip(python, *ROBUSTBENCH_DEPS)
        if result.returncode != 0:
            print(f"some of robustbench's dependencies did not install (the worker falls back to its architecture "
                  f"files):\n{_tail(result.stdout, 5)}", file=sys.stderr)
    return python


def _importable(python: Path, module: str) -> bool:
    return subprocess.run([str(python), "-c", f"import {module}"], capture_output=True).returncode == 0


def run_worker(python: Path, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="vs_authors_import.") as work:
        cmd = [str(python), str(WORKER), "--workdir", work, "--batch", str(args.batch),
               "--wrn-batch", str(args.wrn_batch), "--lr", str(args.lr)]
        result = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # the worker's stderr goes to ours
    if result.returncode != 0:
        raise RuntimeError(f"the worker failed (exit {result.returncode}); see its messages above")
    return json.loads(result.stdout.strip().splitlines()[-1])


def report(result: dict) -> tuple[str, float]:
    v = result["versions"]
    lines = [
        f"Versions: robustness {v['robustness']}, dill {v['dill']}, robustbench {v['robustbench']}, torch "
        f"{v['torch']}, advfeatures {v['advfeatures']}; {result['torch_threads']} torch threads, cpu. "
        f"RobustBench side: {result['robustbench_source']}.",
        "",
        "| checkpoint | reference (their code) | inputs | n | logits max abs diff (max abs logit) | "
        "representation max abs diff (max abs value) | same argmax |",
        "|---|---|---|---|---|---|---|",
    ]
    worst = 0.0
    for row in result["rows"]:
        for c in row["checks"]:
            worst = max(worst, c["logits_max_abs_diff"], c["representation_max_abs_diff"])
            lines.append(f"| {row['name']} | {row['reference']} | {c['inputs']} | {c['n']} | "
                         f"{c['logits_max_abs_diff']:.2e} ({c['logits_max_abs']:.2f}) | "
                         f"{c['representation_max_abs_diff']:.2e} ({c['representation_max_abs']:.2f}) | "
                         f"{c['argmax_agree']:.0%} |")
    lines += ["", "What ours read (`advfeatures import-model` prints the same line):", ""]
    lines += [f"- {row['summary']}" for row in result["rows"]]
    first = result["rows"][0]
    lines += ["", f"The robustness checkpoint: {first['file_mb']:.1f} MiB, top-level keys "
              f"{', '.join(first['top_level_keys'])}; {first['state_keys']} tensors in its state dict "
              f"(module.model.*, module.attacker.model.*, normalizer buffers), {first['optimizer_buffers']} "
              f"momentum buffers after {result['train_steps']} of their adversarial training steps at lr "
              f"{result.get('lr', 0.1):g}. "
              f"Worst difference: {worst:.2e} (bar: {TOLERANCE:g})."]
    return "\n".join(lines), worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16, help="images compared for the ResNet-50s (default: 16)")
    ap.add_argument("--wrn-batch", type=int, default=8, help="images compared for the WRN-28-10 (default: 8)")
    ap.add_argument("--lr", type=float, default=0.01,
                    help="learning rate of the authors' training steps that fill the checkpoint (default: 0.01; "
                         "their CIFAR default 0.1 on random images blows the head up to logits ~1e3, see the "
                         "docstring)")
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="the authors' environment (created if missing)")
    add_record_option(ap)
    args = ap.parse_args()
    if min(args.batch, args.wrn_batch) < 1:
        ap.error("--batch and --wrn-batch must be at least 1")
    try:
        python = ensure_environment(args.venv.resolve())
    except SetupError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    try:
        result, wall = timed_once(lambda: run_worker(python, args))
    except (RuntimeError, json.JSONDecodeError, IndexError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    if result["versions"]["torch"] != torch.__version__:
        print(f"error: the authors' environment runs torch {result['versions']['torch']}, this python "
              f"{torch.__version__}; recreate {args.venv} so both sides share one torch", file=sys.stderr)
        sys.exit(2)
    text, worst = report(result)
    text += f"\n\nWall time of the measuring process: {wall:.0f} s."
    print(text)
    record(__file__, text, result, title="Importing the authors' checkpoints: ours vs robustness on cpu",
           enabled=not args.no_record)
    sys.exit(0 if worst <= TOLERANCE else 1)


if __name__ == "__main__":
    main()
