"""Our library against the paper authors' `robustness` (MadryLab) and `torchattacks`, side by side, one run.

    python benchmarks/compare/vs_authors.py [--device auto|cpu|cuda] [--batch N] [--inversion-steps 100] [--pgd-steps 7]
        [--eval-steps 20] [--repeats R] [--amp] [--channels-last] [--venv benchmarks/.venv-authors]
        [--no-record]

Same machine, same process, same torch, same CIFAR ResNet-18 (their `cifar_models.resnet18` is loaded with a
copy of our weights, so both compute the same function), same random batch of 3x32x32 images in [0, 1] with
10 classes:

a. one PGD-7 adversarial training step, L2 eps 0.5, step eps/5, from the clean image (paper C.3): ours is
   what `advfeatures.training.train_model` does per batch (pgd_attack in eval mode, then forward/backward/SGD
   in train mode); theirs is `AttackerModel(x, target=y, make_adv=True, constraint='2', ...)` then
   cross-entropy, backward and SGD, as `robustness.train._model_loop` does;
b. representation inversion, --inversion-steps steps of 0.1 (D_R construction, paper C.4): ours is
   `invert_representation` (no early exit); theirs is a targeted `make_adv` call with the paper's
   representation-matching `custom_loss` (`with_latent=True`), constraint '2', eps 1000;
c. an untargeted L2 PGD evaluation attack, --eval-steps steps, eps 0.5, step 2.5 * eps / steps, no random
   start, on one shared model object: ours is `pgd_attack`, theirs is `torchattacks.PGDL2`.

Each is warmed up once, then timed in --repeats rounds, ours and theirs alternating within a round (median
reported; CUDA synchronised). The table gives
seconds, images/s and the ratio their seconds / our seconds (> 1: we are faster), and a strength check per
row (training loss on the adversarial batch, final relative representation error, robust accuracy and mean
loss), so a reader can see both sides did the same work. Note that robustness's `custom_loss` path runs one
extra forward pass per step, and both robustness and our engine run one extra forward at the end to keep the
best iterate (torchattacks returns the last iterate).

Defaults: CUDA batch 256, --repeats 5; CPU batch 16, --repeats 3 (a full-width ResNet-18 forward plus input
gradient takes about 0.35 s at batch 16 on 2 idle cores, so the whole CPU run, warm-ups included, takes
roughly 4 minutes, plus about a minute to build the environment the first time); --inversion-steps 100,
--pgd-steps 7, --eval-steps 20. Run it on an otherwise idle machine: CPU timings under load are meaningless.
A quick smoke test: --batch 4 --inversion-steps 5 --eval-steps 5 --repeats 1 (about a minute).
--amp (bf16 autocast) applies to our side only, and only on CUDA (robustness's mixed precision needs NVIDIA
apex; torchattacks has none). --channels-last makes both models channels_last; ours also gets channels_last
inputs, while robustness and torchattacks get NCHW inputs and an NCHW input gradient, because their L2 steps
`.view()` the gradient, which fails on channels_last tensors (see NCHWInputGrad in the worker).

The first run creates a virtual environment (--venv, default benchmarks/.venv-authors) with
`python -m venv --system-site-packages` and links it to this interpreter's packages (a .pth file adding this
interpreter's site-packages when it is itself a virtual environment, whose packages --system-site-packages alone
does not show, and the folder advfeatures is imported from), so it reuses the installed torch, torchvision and
advfeatures, and pip-installs robustness==1.2.1.post2 and torchattacks==3.5.1 into it; the measurements run there in
benchmarks/compare/_authors_worker.py, which prints one JSON object. Prints a table, with the library versions, and
records it (benchmarks/records/vs_authors.md, the worker's numbers in vs_authors.jsonl; `--no-record` to print only).
Exit status 2 when the environment cannot be set up.
"""

from __future__ import annotations

import argparse
import json
import site
import subprocess
import sys
from pathlib import Path

import torch

import advfeatures
from advfeatures.device import resolve_device
from advfeatures.errors import BadInputError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import add_record_option, record, timed_once  # noqa: E402

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_authors_worker.py"
DEFAULT_VENV = HERE.parent / ".venv-authors"  # benchmarks/.venv-authors (git-ignored), shared with vs_authors_import
PINS = {"robustness": "1.2.1.post2", "torchattacks": "3.5.1"}
# What robustness imports when its attacker, models and datasets modules load (for the --no-deps fallback,
# used when one of its many declared dependencies cannot be installed).
IMPORT_TIME_DEPS = ["dill", "pandas", "tensorboardX", "tqdm", "scipy", "numpy"]
PARENT_PTH = "_advfeatures_parent.pth"  # in the authors' environment: this interpreter's package folders


class SetupError(RuntimeError):
    pass


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _run(cmd: list[str], what: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as err:
        raise SetupError(f"{what}: could not run {cmd[0]} ({err})") from err


def venv_python(venv: Path) -> Path:
    for candidate in (venv / "bin" / "python", venv / "Scripts" / "python.exe"):
        if candidate.exists():
            return candidate
    return venv / "bin" / "python"


def installed_versions(python: Path, pins: dict[str, str] = PINS) -> dict[str, str] | None:
    code = ("import importlib.metadata as m, json; "
            f"print(json.dumps({{n: m.version(n) for n in {sorted(pins)!r}}}))")
    result = _run([str(python), "-c", code], "checking the authors' environment")
    if result.returncode != 0:
        return None
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return None


def pip(python: Path, *args: str) -> subprocess.CompletedProcess:
    return _run([str(python), "-m", "pip", "install", "--disable-pip-version-check", *args], "pip")


def parent_package_folders() -> list[str]:
    """Where this interpreter finds packages that a `--system-site-packages` environment made from it would not
    see: its own site-packages when it is a virtual environment (the new environment sees the base interpreter's
    instead), and the folder advfeatures is imported from (an editable install's src/, or a PYTHONPATH entry)."""
    folders = site.getsitepackages() if sys.prefix != sys.base_prefix else []
    folders.append(str(Path(advfeatures.__file__).resolve().parents[1]))
    return list(dict.fromkeys(folders))


def link_parent_environment(python: Path) -> None:
    """Add this interpreter's package folders to the authors' environment with a .pth file (site.addsitedir, so
    editable installs' own .pth files there work too); rewritten on every run, so an old environment is fixed."""
    result = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                  "finding the authors' environment's site-packages")
    if result.returncode != 0:
        raise SetupError(f"could not run {python}:\n{_tail(result.stdout)}")
    purelib = Path(result.stdout.strip().splitlines()[-1])
    purelib.mkdir(parents=True, exist_ok=True)
    lines = [f"import site; site.addsitedir({folder!r})" for folder in parent_package_folders()]
    (purelib / PARENT_PTH).write_text("\n".join(lines) + "\n")


def ensure_venv(venv: Path, pins: dict[str, str] = PINS, fallback_deps: list[str] = IMPORT_TIME_DEPS) -> Path:
    """Create the authors' environment if missing, link it to this interpreter's packages and install the pinned
    libraries; returns its python."""
    python = venv_python(venv)
    if not python.exists():
        print(f"creating {venv} (python -m venv --system-site-packages) ...", file=sys.stderr)
        result = _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], "venv")
        if result.returncode != 0 or not venv_python(venv).exists():
            raise SetupError(f"could not create the virtual environment {venv}:\n{_tail(result.stdout)}")
        python = venv_python(venv)
    link_parent_environment(python)
    wanted = dict(pins)
    if installed_versions(python, pins) == wanted:
        return python
    specs = [f"{name}=={pin}" for name, pin in pins.items()]
    print(f"installing {' '.join(specs)} into {venv} ...", file=sys.stderr)
    result = pip(python, *specs)
    if result.returncode != 0:
        print(f"pip could not install them with all declared dependencies:\n{_tail(result.stdout, 10)}\n"
              "retrying with --no-deps plus what robustness imports at run time ...", file=sys.stderr)
        result = pip(python, "--no-deps", *specs, "cox")
        if result.returncode == 0:
            result = pip(python, *fallback_deps)
        if result.returncode != 0:
            raise SetupError(f"pip failed to install {' '.join(specs)} into {venv}:\n{_tail(result.stdout)}")
    found = installed_versions(python, pins)
    if found != wanted:
        raise SetupError(f"{venv}: expected {wanted} after pip install, found {found}")
    return python


def run_worker(python: Path, args, device: torch.device) -> dict:
    cmd = [str(python), str(WORKER), "--device", str(device), "--batch", str(args.batch),
           "--inversion-steps", str(args.inversion_steps), "--pgd-steps", str(args.pgd_steps),
           "--eval-steps", str(args.eval_steps), "--repeats", str(args.repeats)]
    cmd += ["--amp"] * args.amp + ["--channels-last"] * args.channels_last
    result = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # the worker's stderr goes to ours
    if result.returncode != 0:
        raise RuntimeError(f"the benchmark worker failed (exit {result.returncode}); see its messages above")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _value(v) -> str:
    if isinstance(v, list):
        return " / ".join(f"{x:.3f}" for x in v)
    return f"{v:.4f}"


def report(result: dict) -> str:
    batch = result["batch"]
    v = result["versions"]
    params = result["params"]
    lines = [
        f"CIFAR ResNet-18 (params: ours {params['ours']:,}, robustness {params['theirs']:,}; same weights), "
        f"batch {batch}, device {result['device_name']}, {result['torch_threads']} torch threads, "
        f"median of {result['repeats']} alternating run(s) after one warm-up, amp={result['amp']} (ours only), "
        f"channels_last={result['channels_last']}.",
        f"Versions: robustness {v['robustness']}, torchattacks {v['torchattacks']}, torch {v['torch']}, "
        f"advfeatures {v['advfeatures']}.",
        "",
        "| measurement | ours s | ours img/s | theirs | theirs s | theirs img/s | theirs s / ours s |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        o, t = row["ours_s"], row["theirs_s"]
        lines.append(f"| {row['name']} | {o:.3f} | {batch / o:,.1f} | {row['theirs_lib']} | {t:.3f} | "
                     f"{batch / t:,.1f} | {t / o:.2f} |")
    lines += ["", "| measurement | check | ours | theirs |", "|---|---|---|---|"]
    for row in result["rows"]:
        lines.append(f"| {row['name']} | {row['check']} | {_value(row['ours_value'])} | "
                     f"{_value(row['theirs_value'])} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, help="default: 256 on CUDA, 16 on CPU")
    ap.add_argument("--inversion-steps", type=int, default=100)
    ap.add_argument("--pgd-steps", type=int, default=7)
    ap.add_argument("--eval-steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, help="timed runs after the warm-up; default: 5 on CUDA, 3 on CPU")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast on our side (CUDA only)")
    ap.add_argument("--channels-last", action="store_true", help="channels_last models (both sides)")
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="the authors' environment (created if missing)")
    add_record_option(ap)
    args = ap.parse_args()
    try:
        device = resolve_device(args.device)
    except BadInputError as err:
        ap.error(str(err))
    cuda = device.type == "cuda"
    args.batch = args.batch or (256 if cuda else 16)
    args.repeats = args.repeats or (5 if cuda else 3)
    if min(args.batch, args.inversion_steps, args.pgd_steps, args.eval_steps, args.repeats) < 1:
        ap.error("--batch, the step counts and --repeats must be at least 1")
    try:
        python = ensure_venv(args.venv.resolve())
    except SetupError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    try:
        result, wall = timed_once(lambda: run_worker(python, args, device))
    except (RuntimeError, json.JSONDecodeError, IndexError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    if result["versions"]["torch"] != torch.__version__:
        print(f"error: the authors' environment runs torch {result['versions']['torch']}, this python "
              f"{torch.__version__}; recreate {args.venv} so both sides share one torch", file=sys.stderr)
        sys.exit(2)
    text = report(result)
    text += f"\n\nWall time of the measuring process: {wall:.0f} s."
    print(text)
    record(__file__, text, result, title=f"Ours vs the authors' robustness and torchattacks on {device.type}",
           enabled=not args.no_record)


if __name__ == "__main__":
    main()
