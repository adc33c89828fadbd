"""Where the offline default's time goes, and what each speed lever buys on this machine.

    python benchmarks/speed/speed_levers.py [--run RUN [RUN ...]] [--no-levers] [--profile] [--no-record]

Three parts:
- `--run RUN` (a finished `advfeatures reproduce` folder): its stage seconds split into float32 evaluation (our APGD
  cascade: a model stage's time minus its training; the attack_check stage: AutoAttack), training, construction
  and the rest. The evaluation share is a floor under any speed-up that keeps the evaluation as strong
  (never fewer steps, restarts or targets) and in float32.
- the levers, per offline preset shape (small CNN on synthetic's 1x16x16, digits' 1x8x8), for the two kinds of
  step that fill a run: an attack step (forward + gradient to the input, weights frozen, at the evaluation's batch)
  and a training step (forward, backward, SGD, at the preset's batch). Variants: float32 NCHW (what runs today),
  channels_last, bf16 autocast (where this CPU has native bf16), torch.compile (inductor, compile time beside it),
  K = 4 models trained at once by torch.func (stack_module_state + vmap; time per model), and float32 on one
  thread (what two single-threaded processes sharing the cores would each get); then the attack step's time over
  512 images by batch size.
- `--profile`: torch.profiler's top operators for both steps at synthetic's shape.

Times are medians of 15 steps after 3 warm-up steps. Prints the tables and records them
(benchmarks/records/speed_levers.md; `--no-record` to print only).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from advfeatures.device import autocast, bf16_is_fast
from advfeatures.models import build_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import add_record_option, record, timed, timed_once  # noqa: E402

CPU = torch.device("cpu")
SHAPES = {"synthetic": (16, 500, 128), "digits": (8, 360, 128)}  # image side, evaluation batch, training batch


def _median_ms(step, reps: int = 15) -> float:
    """Median milliseconds of `step` after 3 warm-up calls (allocations, oneDNN primitive creation)."""
    return 1e3 * timed(step, CPU, warmup=3, repeats=reps)


def _model(size: int, channels_last: bool = False, frozen: bool = False):
    torch.manual_seed(0)
    model = build_model("small_cnn", in_channels=1, num_classes=10, image_size=size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    for p in model.parameters():
        p.requires_grad_(not frozen)
    return model


def _steps(model, x, y, bf16: bool = False):
    """(attack step, training step) closures on one model."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def attack():
        model.eval()
        xa = x.clone().requires_grad_(True)
        with autocast(CPU, bf16):
            logits = model(xa)
        return torch.autograd.grad(F.cross_entropy(logits.float(), y), xa)[0]

    def train():
        model.train()
        opt.zero_grad(set_to_none=True)
        with autocast(CPU, bf16):
            logits = model(x)
        F.cross_entropy(logits.float(), y).backward()
        opt.step()

    return attack, train


def measure_levers(name: str, size: int, eval_batch: int, train_batch: int) -> list[dict]:
    torch.manual_seed(0)
    xe, ye = torch.rand(eval_batch, 1, size, size), torch.randint(0, 10, (eval_batch,))
    xt, yt = torch.rand(train_batch, 1, size, size), torch.randint(0, 10, (train_batch,))
    rows = []

    def row(variant: str, attack_ms: float | None, train_ms: float | None, note: str = "") -> None:
        rows.append({"preset": name, "variant": variant, "attack": attack_ms, "train": train_ms, "note": note})
        a = f"{attack_ms:7.2f}" if attack_ms is not None else "      -"
        t = f"{train_ms:7.2f}" if train_ms is not None else "      -"
        print(f"{name:>9} {variant:<34} attack {a} ms  train {t} ms  {note}", flush=True)

    def pair(variant: str, channels_last=False, bf16=False, compiled=False) -> None:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        frozen = _model(size, channels_last, frozen=True)
        live = _model(size, channels_last)
        note = ""
        if compiled:
            frozen, live = torch.compile(frozen), torch.compile(live)  # compiled lazily, by the first calls
            _, seconds = timed_once(lambda: (_steps(frozen, xe, ye)[0](), _steps(live, xt, yt)[1]()))
            note = f"compile {seconds:.0f} s"
        attack = _steps(frozen, xe.contiguous(memory_format=fmt), ye, bf16)[0]
        train = _steps(live, xt.contiguous(memory_format=fmt), yt, bf16)[1]
        row(variant, _median_ms(attack), _median_ms(train), note)

    pair("float32 NCHW (today)")
    pair("float32 channels_last", channels_last=True)
    if bf16_is_fast(CPU):
        pair("bf16 autocast (not for evaluation)", bf16=True)
    pair("float32 torch.compile", compiled=True)
    row("float32 vmap K=4, per model", None, _stacked_train_ms(size, train_batch, k=4) / 4)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what each of two single-threaded processes sharing the cores would get
    try:
        pair("float32 NCHW, 1 thread")
    finally:
        torch.set_num_threads(threads)
    pair("float32 NCHW (today), again last")  # the first row again: how far this machine drifted meanwhile
    return rows


def batch_sweep(size: int, images: int = 512, batches=(16, 64, 128, 256, 512)) -> list[str]:
    """Attack-step time for `images` images cut into batches of each size: flat when the work is compute-bound."""
    model = _model(size, frozen=True)
    x, y = torch.rand(images, 1, size, size), torch.randint(0, 10, (images,))
    cells = []
    for batch in batches:
        steps = [_steps(model, x[i:i + batch], y[i:i + batch])[0] for i in range(0, images, batch)]
        cells.append(f"batch {batch}: {_median_ms(lambda steps=steps: [s() for s in steps], reps=7):.0f} ms")
    return cells


def _stacked_train_ms(size: int, batch: int, k: int) -> float:
    """One SGD step of k models at once (torch.func), each on its own batch."""
    from torch.func import functional_call, grad, stack_module_state, vmap

    models = [_model(size) for _ in range(k)]
    params, buffers = stack_module_state(models)
    skeleton = copy.deepcopy(models[0]).to("meta")
    xs, ys = torch.rand(k, batch, 1, size, size), torch.randint(0, 10, (k, batch))

    def loss(p, b, x, y):
        return F.cross_entropy(functional_call(skeleton, (p, b), (x,)), y)

    grads = vmap(grad(loss))
    momentum = {n: torch.zeros_like(v) for n, v in params.items()}

    def step():
        g = grads(params, buffers, xs, ys)
        with torch.no_grad():
            for n, v in params.items():
                momentum[n].mul_(0.9).add_(g[n] + 5e-4 * v)
                v.sub_(0.01 * momentum[n])

    return _median_ms(step)


def profile_ops(size: int, eval_batch: int, train_batch: int, top: int = 8) -> str:
    from torch.profiler import ProfilerActivity, profile

    out = []
    for kind in ("attack", "train"):
        model = _model(size, frozen=kind == "attack")
        batch = eval_batch if kind == "attack" else train_batch
        attack, train = _steps(model, torch.rand(batch, 1, size, size), torch.randint(0, 10, (batch,)))
        step = train if kind == "train" else attack
        for _ in range(3):
            step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(10):
                step()
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events)
        out += [f"{kind} step ({size}px, batch {batch}), share of self CPU time:"]
        out += [f"  {e.key:<40} {100 * e.self_cpu_time_total / total:5.1f}%" for e in events[:top]]
    return "\n".join(out)


def decompose(run: Path) -> list[dict]:
    """Per preset: seconds of float32 evaluation (ours, AutoAttack), training, construction, the rest."""
    rows = []
    for preset_dir in sorted(p for p in run.iterdir() if (p / "stages").is_dir() and p.name != "theory"):
        parts = {"evaluation (ours)": 0.0, "attack check (AutoAttack)": 0.0, "training": 0.0, "construction": 0.0,
                 "other stages": 0.0}
        for path in (preset_dir / "stages").glob("*.json"):
            data = json.loads(path.read_text())
            seconds, result = data.get("seconds", 0.0), data.get("result") or {}
            if "train_seconds" in result:  # a model stage: training, then the evaluation
                parts["training"] += result["train_seconds"]
                parts["evaluation (ours)"] += seconds - result["train_seconds"]
            elif path.stem.startswith("given_"):
                parts["evaluation (ours)"] += seconds
            elif path.stem.startswith("attack_check"):
                parts["attack check (AutoAttack)" if "autoattack" in path.stem else "evaluation (ours)"] += seconds
            elif path.stem.startswith("construct_"):
                parts["construction"] += seconds
            else:
                parts["other stages"] += seconds
        rows.append({"preset": preset_dir.name, **parts, "total": sum(parts.values())})
    return rows


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, nargs="+", default=[],
                    help="finished reproduce folders to decompose (e.g. before and after a change)")
    ap.add_argument("--no-levers", action="store_true", help="only decompose --run; measure no levers")
    ap.add_argument("--profile", action="store_true", help="torch.profiler's top operators")
    add_record_option(ap)
    args = ap.parse_args()
    text, data = [], {}
    data["decomposition"] = {}
    for run in args.run:
        rows = data["decomposition"][str(run)] = decompose(run)
        keys = [k for k in rows[0] if k != "preset"]
        text += [f"Stage seconds of `{run}` (seed 0), by kind of work:", "",
                 "| preset | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        text += ["| " + r["preset"] + " | " + " | ".join(f"{r[k]:.0f}" for k in keys) + " |" for r in rows]
        text.append("")
    if args.no_levers:
        print("\n".join(text))
        record(__file__, "\n".join(text), data, title="Where the offline default's time goes",
               enabled=not args.no_record)
        return
    levers = []
    for name, (size, eval_batch, train_batch) in SHAPES.items():
        levers += measure_levers(name, size, eval_batch, train_batch)
    text += ["Small CNN, median ms per step (attack: forward + input gradient at the evaluation batch; train: one SGD "
             "step at the preset batch):", "", "| preset | variant | attack step ms | training step ms | note |",
             "|---|---|---|---|---|"]
    text += [f"| {r['preset']} | {r['variant']} | {_ms(r['attack'])} | {_ms(r['train'])} | {r['note']} |"
             for r in levers]
    text += ["", f"Attack steps over 512 images at synthetic's {SHAPES['synthetic'][0]}x{SHAPES['synthetic'][0]}, "
             "by batch size: " + "; ".join(batch_sweep(SHAPES["synthetic"][0])) + "."]
    if args.profile:
        size, eval_batch, train_batch = SHAPES["synthetic"]
        text += ["", "```", profile_ops(size, eval_batch, train_batch), "```"]
    data["levers"] = levers
    print("\n".join(text))
    record(__file__, "\n".join(text), data, title="Speed levers for the offline default", enabled=not args.no_record)


if __name__ == "__main__":
    main()
