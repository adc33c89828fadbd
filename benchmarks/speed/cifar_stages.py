"""A CIFAR-10 preset's whole `reproduce` run, counted stage by stage: the work each stage does, and the wall time it
projects to, from rates measured on this machine or from an assumed share of a GPU's bf16 peak.

    python benchmarks/speed/cifar_stages.py --preset cifar10_fast                     # measure here, project
    python benchmarks/speed/cifar_stages.py --preset cifar10_fast --assume-share 0.1 0.2 0.35 --gpu H200
    python benchmarks/speed/cifar_stages.py --preset cifar10 --arch resnet18 --assume-share 0.05

Work is counted in forward passes of one 32x32 image through each network, from the preset itself (epochs x
50,000 images; inversion and relabelling steps x 50,000; the evaluation cascade on 10,000 test images; the
AutoAttack check; Figure 3's architectures; Table 9; the follow-ups), with FLOPs per pass counted by
torch's FlopCounterMode: a training step is forward + backward with weight gradients, an attack or inversion step
forward + input gradient only. The evaluation's cost depends on how many test points stay robust (a broken point
leaves the cascade early): it is counted with the robust fractions the issue's targets expect, so it is an
estimate, labelled as one.

Measured mode (default) times the library's own loops (`train_model`, `invert_representation`, `pgd_attack`) at
the preset's batch sizes on random CIFAR-shaped data (speed does not depend on the pixels), after a warm-up, and
projects each stage at the rate of its kind of loop. `--assume-share` skips timing and projects from FLOPs at the
given shares of `--gpu`'s dense bf16 peak: the only projection possible without the GPU. Both print a table and
record it (benchmarks/records/cifar_stages.md; `--no-record` to print only).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from advfeatures.attacks import invert_representation, pgd_attack
from advfeatures.device import compile_model, resolve_device
from advfeatures.models import build_model
from advfeatures.presets import get_preset
from advfeatures.training import ModelSpec, TrainConfig, train_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import add_record_option, record, timed  # noqa: E402

N_TRAIN, N_TEST = 50_000, 10_000  # all of CIFAR-10; a preset's limit_train / limit_test replace them
# dense bf16 tensor-core peak (FLOP/s) by device-name fragment, from the vendors' data sheets
BF16_PEAK = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12, "L4": 121e12}
# robust fraction at the threat model expected for each evaluated model (the targets), for the cascade's cost
EXPECTED_ROBUST = {"D": 0.05, "D_adv": 0.70, "D_R": 0.45, "D_NR": 0.03, "D_rand": 0.0, "D_det": 0.0,
                   "D_det_unleaked": 0.0}
# cifar10_cpu: the fractions its 2-seed tier measured (benchmarks/RESULTS.md, "cifar10_cpu"), not targets
MEASURED_ROBUST = {"cifar10_cpu": {"D": 0.265, "D_adv": 0.513, "D_R": 0.334, "D_NR": 0.039, "D_rand": 0.0,
                                   "D_det": 0.0, "D_det_unleaked": 0.0}}
BROKEN_STEPS = 10  # attack steps a non-robust point costs before the cascade drops it (APGD starts at step 2 eps)
AUTOATTACK_STEPS_PER_ROBUST_POINT = 4500  # APGD-CE 100 + APGD-T 9x100 + FAB-T ~9x100x2 + Square 5000 forwards / 3


@dataclass
class Work:
    stage: str
    loop: str  # "train", "adversarial train", "attack"
    spec: ModelSpec
    passes: float  # images (training) or image-steps (attack)


def count_work(preset, full: bool = False) -> list[Work]:
    """Every stage's work for one seed of `preset` on its share of CIFAR-10 (all of it unless the preset limits it)."""
    p, src = preset, preset.model
    n_train, n_test = p.limit_train or N_TRAIN, p.limit_test or N_TEST
    robust = MEASURED_ROBUST.get(p.name, EXPECTED_ROBUST)
    ev, inv, rel = p.evaluation, p.inversion, p.relabel
    epochs = {name: c.epochs for name, c in p.constructed_train.items()}
    adv = p.adversarial_train.adversarial
    work = [
        Work("D", "train", src, p.train.epochs * n_train),
        Work(f"D_adv (PGD-{adv.steps})", "adversarial train", src, p.adversarial_train.epochs * n_train),
        Work("construct D_R + D_NR", "attack", src, 2 * n_train * inv.steps),
        Work("construct D_rand + D_det", "attack", src, 2 * n_train * rel.steps),
        Work("train on D_R, D_NR, D_rand, D_det", "train", src,
             sum(epochs[k] for k in ("D_R", "D_NR", "D_rand", "D_det")) * n_train),
        # its size depends on the data (75-95% of D_det here so far): counted in full
        Work("train on D_det_unleaked (counted in full)", "train", src, epochs["D_det_unleaked"] * n_train),
    ]
    runs, curve_runs = ev.restarts + ev.targets, ev.restarts + ev.curve_targets
    for name, r in robust.items():
        steps = n_test * (r * runs * ev.steps + (1 - r) * BROKEN_STEPS)
        # the curve's larger radii on curve_limit images, only where no smaller radius broke the point
        larger = [e for e in ev.curve_eps if e > p.threat.eps]
        n = min(ev.curve_limit or n_test, n_test)
        steps += sum(n * (r / 2 ** (i + 1)) * curve_runs * ev.steps for i in range(len(larger)))
        work.append(Work(f"evaluate {name} (estimate)", "attack", src, steps))
    n_check = min(ev.check_limit or n_test, n_test)
    work.append(Work("AutoAttack check, 4 models (estimate)", "attack", src,
                     sum(n_check * robust[m] * AUTOATTACK_STEPS_PER_ROBUST_POINT
                         for m in ("D", "D_adv", "D_R", "D_NR"))))
    archs = p.transfer_models_full if full else p.transfer_models
    for spec in archs:
        if spec != src:
            work.append(Work(f"transfer: {spec.arch} on D and D_det", "train", spec,
                             (p.train.epochs + epochs["D_det"]) * n_train))
    work.append(Work("transfer: source's PGD examples (2 attacks on the test set)", "attack", src,
                     n_test * (ev.steps + rel.steps)))
    work += [
        Work("Table 9: D_rand + D_det against the robust model", "attack", src, 2 * n_train * rel.steps),
        Work("Table 9: train on both", "train", src, (epochs["D_rand"] + epochs["D_det"]) * n_train),
    ]
    f = p.followups
    work += [
        Work(f"follow-ups: {f.ensemble + 1} more D models (Nakkiran's ensemble)", "train", src,
             (f.ensemble + 1) * p.train.epochs * n_train),
        Work(f"follow-ups: D_det_bugs (relabelling through {f.ensemble + 1} models)", "attack", src,
             (f.ensemble + 1) * n_train * rel.steps),
        Work("follow-ups: train on D_det_bugs", "train", src, epochs["D_det"] * n_train),
        Work("follow-ups: Wallace's teacher and student (student counted on half of D)", "train", src,
             (f.teacher_epochs + 0.5 * epochs["D_det"]) * n_train),
    ]
    return work


def pass_flops(spec: ModelSpec) -> tuple[float, float, float]:
    """FLOPs of one 32x32 image: (forward, training step, attack step = forward + input gradient only)."""
    model = build_model(spec.arch, in_channels=3, num_classes=10, image_size=32, **spec.options)
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        model(x)
    forward = counter.get_total_flops() / 2
    totals = []
    for weights in (True, False):
        with FlopCounterMode(display=False) as counter:
            model(x).sum().backward(inputs=[x, *model.parameters()] if weights else [x])
        totals.append(counter.get_total_flops() / 2)
        model.zero_grad(set_to_none=True)
    return forward, totals[0], totals[1]


def step_flops(item: Work, flops: dict, preset) -> float:
    _, train, attack = flops[item.spec.arch, tuple(sorted(item.spec.options.items()))]
    if item.loop == "train":
        return train
    if item.loop == "adversarial train":
        return preset.adversarial_train.adversarial.steps * attack + train
    return attack


def measure_rates(preset, device, args) -> dict[str, float]:
    """Images (training) or image-steps (attacks) per second of the source network, at the preset's batch sizes."""
    spec, amp, cl = preset.model, preset.amp, preset.channels_last

    def fresh():
        model = build_model(spec.arch, in_channels=3, num_classes=10, image_size=32, **spec.options).to(device)
        return model.to(memory_format=torch.channels_last) if cl else model

    def train_rate(config: TrainConfig) -> float:
        batch = args.train_batch or config.batch_size
        config = dataclasses.replace(config, epochs=1, batch_size=batch, amp=amp, channels_last=cl,
                                     compile=args.compile)
        n = batch * args.batches
        x, y = torch.rand(n, 3, 32, 32, device=device), torch.randint(0, 10, (n,), device=device)
        model = fresh()
        return n / timed(lambda: train_model(model, x, y, config, progress=False), device)

    batch = args.attack_batch or preset.inversion.batch_size
    model = fresh().eval()
    if args.compile:
        compile_model(model)
    xa, ya = torch.rand(batch, 3, 32, 32, device=device), torch.randint(0, 10, (batch,), device=device)
    s = args.steps
    inversion = batch * s / timed(lambda: invert_representation(
        model, xa, xa.roll(1, 0), steps=s, step_size=0.1, batch_size=batch, amp=amp), device)
    relabel = batch * s / timed(lambda: pgd_attack(
        model, xa, ya, eps=0.5, steps=s, step_size=0.1, targeted=True, batch_size=batch, amp=amp), device)
    evaluation = batch * s / timed(lambda: pgd_attack(  # float32 APGD without early exit: the cascade's step
        model, xa, ya, eps=0.25, steps=s, step_rule="apgd", batch_size=batch), device)
    return {"train": train_rate(preset.train), "adversarial train": train_rate(preset.adversarial_train),
            "attack": min(inversion, relabel), "evaluation": evaluation}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cifar10_fast", choices=["cifar10_fast", "cifar10", "cifar10_cpu"])
    ap.add_argument("--arch", help="replace the preset's network everywhere (e.g. resnet18 for cifar10)")
    ap.add_argument("--full", action="store_true", help="Figure 3 with every architecture (--full)")
    ap.add_argument("--assume-share", type=float, nargs="+",
                    help="project from FLOPs at these shares of --gpu's dense bf16 peak instead of timing")
    ap.add_argument("--gpu", default="H200", choices=sorted(BF16_PEAK), help="peak for --assume-share")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--batches", type=int, default=10, help="timed training batches per loop")
    ap.add_argument("--train-batch", type=int, help="training batch (default: the preset's)")
    ap.add_argument("--attack-batch", type=int, help="attack/inversion batch (default: the preset's)")
    ap.add_argument("--steps", type=int, default=10, help="timed attack/inversion steps per measurement")
    ap.add_argument("--targets", type=int, help="APGD-T targets of the evaluation (default: the preset's)")
    ap.add_argument("--relabel-steps", type=int,
                    help="relabelling (and transfer attack) steps (default: the preset's); the step size is kept")
    add_record_option(ap)
    args = ap.parse_args()
    preset = get_preset(args.preset)
    if args.targets is not None:
        preset = dataclasses.replace(preset, evaluation=dataclasses.replace(preset.evaluation, targets=args.targets))
    if args.relabel_steps is not None:
        preset = dataclasses.replace(preset, relabel=dataclasses.replace(preset.relabel, steps=args.relabel_steps))
    if args.arch:
        preset = dataclasses.replace(preset, model=ModelSpec(args.arch), transfer_models=[
            ModelSpec(args.arch) if m == preset.model else m for m in preset.transfer_models])
    work = count_work(preset, args.full)
    flops = {}
    for item in work:
        key = item.spec.arch, tuple(sorted(item.spec.options.items()))
        if key not in flops:
            flops[key] = pass_flops(item.spec)
    total_flops = sum(w.passes * step_flops(w, flops, preset) for w in work)
    src = flops[preset.model.arch, tuple(sorted(preset.model.options.items()))]
    head = (f"preset {args.preset} ({preset.model.arch} {preset.model.options or ''}; one seed; "
            f"{'all' if args.full else 'default'} Figure 3 architectures). Source network per 32x32 image: "
            f"{src[0] / 1e9:.3f} GFLOP forward, {src[1] / 1e9:.3f} training step, {src[2] / 1e9:.3f} attack step. "
            f"Whole run: {total_flops / 1e15:,.1f} PFLOP.")
    data = {"preset": args.preset, "arch": preset.model.arch, "full": args.full, "total_flops": total_flops,
            "source_flops": {"forward": src[0], "train_step": src[1], "attack_step": src[2]}, "stages": []}
    if args.assume_share:
        peak = BF16_PEAK[args.gpu]
        shares = args.assume_share
        lines = [head, "", "Projected, not measured: FLOPs at assumed shares of the " + args.gpu
                 + f" dense bf16 peak ({peak / 1e12:.0f} TFLOP/s).", "",
                 "| stage | loop | work (passes) | PFLOP | " + " | ".join(f"s at {s:.0%}" for s in shares) + " |",
                 "|---|---|---|---|" + "---|" * len(shares)]
        for w in work:
            f = w.passes * step_flops(w, flops, preset)
            data["stages"].append({"stage": w.stage, "loop": w.loop, "passes": w.passes, "flops": f})
            lines.append(f"| {w.stage} | {w.loop} | {w.passes:,.0f} | {f / 1e15:.2f} | "
                         + " | ".join(f"{f / (s * peak):.0f}" for s in shares) + " |")
        lines.append(f"| **total** | | | **{total_flops / 1e15:.1f}** | "
                     + " | ".join(f"**{total_flops / (s * peak) / 60:.1f} min**" for s in shares) + " |")
        title = f"Projected GPU time of the {args.preset} preset ({args.gpu}, assumed shares of peak)"
        data.update(gpu=args.gpu, bf16_peak=peak, shares=shares,
                    total_seconds={str(s): total_flops / (s * peak) for s in shares})
    else:
        device = resolve_device(args.device)
        rates = measure_rates(preset, device, args)
        lines = [head, "", "| stage | loop | work (passes) | rate used | seconds |", "|---|---|---|---|---|"]
        total = 0.0
        for w in work:
            key = "evaluation" if w.stage.startswith("evaluate") or "AutoAttack" in w.stage else w.loop
            rate = rates[key] * (src[1 if w.loop != "attack" else 2] / step_flops(w, flops, preset)
                                 if w.spec != preset.model else 1.0)  # other architectures: scaled by FLOPs
            total += w.passes / rate
            data["stages"].append({"stage": w.stage, "loop": w.loop, "rate_used": key, "passes": w.passes,
                                   "rate": rate, "seconds": w.passes / rate})
            lines.append(f"| {w.stage} | {key} | {w.passes:,.0f} | {rate:,.0f}/s | {w.passes / rate:,.0f} |")
        lines.append(f"| **total** | | | | **{total:,.0f} s ({total / 60:.1f} min)** |")
        lines += ["", "Rates: " + ", ".join(f"{k} {v:,.0f}/s" for k, v in rates.items())
                  + f" ({device.type}, amp={preset.amp}, channels_last={preset.channels_last}, compile={args.compile})"]
        title = f"Measured rates and projected time of the {args.preset} preset ({device.type})"
        data.update(device=device.type, rates=rates, total_seconds=total, amp=preset.amp,
                    channels_last=preset.channels_last, compile=args.compile)
    text = "\n".join(lines)
    print(text)
    record(__file__, text, data, title=title, enabled=not args.no_record)


if __name__ == "__main__":
    main()
