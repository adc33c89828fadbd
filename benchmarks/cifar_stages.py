"""The CIFAR-10 preset's stages on CIFAR-shaped data: throughput per stage, share of the GPU's bf16 peak, and the
projected wall time of the whole `advfeatures reproduce --preset cifar10` pipeline on this machine.

    python benchmarks/cifar_stages.py [--arch resnet18] [--device auto] [--amp] [--channels-last] [--compile]
        [--batches 3] [--steps 10] [--attack-batch 512] [--transfer]

Real CIFAR-10 cannot be downloaded here, so the data are random 3x32x32 images (speed does not depend on the
pixels). Each stage runs the library's own code (`train_model`, `invert_representation`, `pgd_attack`, with the
APGD step rule for evaluation) for a few batches after a warm-up; the projection multiplies each stage's measured
rate by the work the preset prescribes (epochs x 50,000 images, inversion steps x 50,000 images, ...). `--arch` replaces
the preset's ResNet-50 everywhere (default resnet18, the speed goal's model); `--transfer` also times the
preset's transfer architectures (else their training is projected at the source architecture's rate).
On CPU the defaults shrink the batches (a full-width ResNet-18 step takes seconds on 2 cores); the projection
then says how long the pipeline would take on this CPU, which is the point: it needs a GPU.
Prints a table and appends it, with the machine, to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from _machine import append
from torch.utils.flop_counter import FlopCounterMode

from advfeatures.attacks import invert_representation, pgd_attack
from advfeatures.construct import CHUNK
from advfeatures.device import compile_model, resolve_device
from advfeatures.models import build_model
from advfeatures.presets import get_preset
from advfeatures.training import TrainConfig, train_model

N_TRAIN, N_TEST = 50_000, 10_000
# dense bf16 tensor-core peak (FLOP/s) by device-name fragment, from the vendors' data sheets
BF16_PEAK = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12, "L4": 121e12}


def bf16_peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in BF16_PEAK.items() if k in name), None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    fn()  # warm-up (and compilation)
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def pass_flops(model: torch.nn.Module, device: torch.device, weights: bool) -> float:
    """FLOPs of one image's forward + backward: with weight gradients (a training step) or with the input gradient
    only (an attack or inversion step)."""
    x = torch.rand(2, 3, 32, 32, device=device, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        out = model(x).sum()
        out.backward(inputs=[x, *model.parameters()] if weights else [x])
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def new_model(arch: str, device: torch.device, args) -> torch.nn.Module:
    model = build_model(arch, in_channels=3, num_classes=10, image_size=32, **({"width": args.width} if args.width
                                                                                  else {})).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--width", type=int, help="architecture width (default: the architecture's own)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--batches", type=int, help="timed training batches per stage (default: 20 on GPU, 2 on CPU)")
    ap.add_argument("--train-batch", type=int, help="training batch (default: the preset's 128 on GPU, 32 on CPU)")
    ap.add_argument("--attack-batch", type=int, help=f"attack/inversion batch (default {CHUNK} on GPU, 32 on CPU)")
    ap.add_argument("--steps", type=int, default=10, help="timed attack/inversion steps per measurement")
    ap.add_argument("--transfer", action="store_true", help="also time the transfer architectures' training")
    args = ap.parse_args()
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    batches = args.batches or (20 if gpu else 2)
    train_batch = args.train_batch or (128 if gpu else 32)
    attack_batch = args.attack_batch or (CHUNK if gpu else 32)
    preset = get_preset("cifar10")
    torch.manual_seed(0)

    def train_rate(arch: str, config: TrainConfig) -> float:
        """Training images per second with the preset's augmentation (and PGD, for adversarial training)."""
        model = new_model(arch, device, args)
        config = dataclasses.replace(config, epochs=1, batch_size=train_batch, amp=args.amp,
                                     channels_last=args.channels_last, compile=args.compile)
        n = train_batch * batches
        x, y = torch.rand(n, 3, 32, 32, device=device), torch.randint(0, 10, (n,), device=device)
        seconds = timed(lambda: train_model(model, x, y, config, progress=False), device)
        return n / seconds

    model = new_model(args.arch, device, args).eval()
    train_flops, attack_flops = pass_flops(model, device, True), pass_flops(model, device, False)
    if args.compile:
        compile_model(model)
    xa = torch.rand(attack_batch, 3, 32, 32, device=device)
    ya = torch.randint(0, 10, (attack_batch,), device=device)
    s, rel, inv, ev = args.steps, preset.relabel, preset.inversion, preset.evaluation
    attack_rates = {  # image-steps per second
        "inversion": attack_batch * s / timed(lambda: invert_representation(
            model, xa, xa.roll(1, 0), steps=s, step_size=inv.step_size, batch_size=attack_batch, amp=args.amp), device),
        "relabel": attack_batch * s / timed(lambda: pgd_attack(
            model, xa, ya, eps=rel.eps, steps=s, step_size=rel.step_size, targeted=True, batch_size=attack_batch,
            amp=args.amp), device),
        # an APGD run without early exit: the evaluation cascade's per-step cost (random labels would otherwise
        # stop most examples at once)
        "evaluation": attack_batch * s / timed(lambda: pgd_attack(
            model, xa, ya, eps=preset.threat.eps, steps=s, step_rule="apgd", batch_size=attack_batch, amp=args.amp),
            device),
    }
    rates = {
        "standard training": train_rate(args.arch, preset.train),
        "adversarial training (PGD-7)": train_rate(args.arch, preset.adversarial_train),
        **attack_rates,
    }
    transfer_archs = [m.arch for m in preset.transfer_models if m.arch != args.arch]
    transfer_rates = {a: train_rate(a, preset.train) if args.transfer else rates["standard training"]
                      for a in transfer_archs}

    def achieved(key: str, rate: float) -> float:  # FLOP/s
        if "PGD" in key:  # 7 attack passes and one training pass per image
            return rate * (7 * attack_flops + train_flops)
        return rate * (train_flops if "training" in key else attack_flops)

    # the work the preset prescribes, in training images or attack image-steps
    epochs = preset.train.epochs
    # upper bound: every APGD run on every image (the cascade runs each only on the images still robust)
    eval_steps = (N_TEST * ev.steps * (ev.restarts + ev.targets)
                  + ev.curve_limit * ev.steps * (ev.restarts + ev.curve_targets) * (len(ev.curve_eps) - 1))
    work = [  # (stage, rate key, amount)
        ("D", "standard training", epochs * N_TRAIN),
        ("D_adv", "adversarial training (PGD-7)", preset.adversarial_train.epochs * N_TRAIN),
        ("construct D_R + D_NR", "inversion", 2 * N_TRAIN * inv.steps),
        ("construct D_rand + D_det", "relabel", 2 * N_TRAIN * rel.steps),
        # D_det_unleaked's size depends on the data (~94% of D_det on digits, ~75% on synthetic): counted in full
        ("train on D_R, D_NR, D_rand, D_det, D_det_unleaked (counted in full)", "standard training",
         5 * epochs * N_TRAIN),
        ("evaluate 7 models (APGD cascade + curve; upper bound)", "evaluation", 7 * eval_steps),
        # AutoAttack's APGD-CE + APGD-T as above; FAB-T and Square counted as the same again (rough)
        ("attack check (4 models, AutoAttack; rough)", "evaluation",
         4 * 2 * (ev.check_limit or N_TEST) * ev.steps * (ev.restarts + ev.targets)),
        ("robust source: build D_rand + D_det, train on both", "relabel", 2 * N_TRAIN * rel.steps),
        ("robust source: train on its D_rand and D_det", "standard training", 2 * epochs * N_TRAIN),
    ]
    rows, total, total_flops = [], 0.0, 0.0
    for stage, key, amount in work:
        seconds = amount / rates[key]
        total += seconds
        total_flops += seconds * achieved(key, rates[key])
        rows.append((stage, key, amount, seconds))
    for arch, rate in transfer_rates.items():
        seconds = 2 * epochs * N_TRAIN / rate  # models on D and on D_det
        total += seconds
        total_flops += 2 * epochs * N_TRAIN * train_flops  # at the source architecture's cost per image
        rows.append((f"transfer: {arch} on D and D_det", f"{arch} training" if args.transfer else "standard training",
                     2 * epochs * N_TRAIN, seconds))
    peak = bf16_peak(device)


    header = (f"{args.arch}{f' width {args.width}' if args.width else ''}, {device.type}, amp={args.amp}, "
              f"channels_last={args.channels_last}, compile={args.compile}; training batch {train_batch} x {batches} "
              f"batches, attack batch {attack_batch} x {s} steps; per image forward+backward {train_flops / 1e9:.2f} "
              f"GFLOP (training), {attack_flops / 1e9:.2f} GFLOP (attack step: input gradient only)")
    lines = [header, "", "| loop | rate | achieved TFLOP/s | share of bf16 peak |", "|---|---|---|---|"]
    for key, rate in rates.items():
        unit = "images/s" if "training" in key else "image-steps/s"
        flops = achieved(key, rate)
        share = f"{100 * flops / peak:.1f}%" if peak else "n/a (no GPU)"
        lines.append(f"| {key} | {rate:,.1f} {unit} | {flops / 1e12:.3f} | {share} |")
    lines += ["", "| stage (projected for the whole preset) | rate used | work | hours |", "|---|---|---|---|"]
    for stage, key, amount, seconds in rows:
        lines.append(f"| {stage} | {key} | {amount:,.0f} | {seconds / 3600:.2f} |")
    lines += ["", f"**Projected wall time of the CIFAR-10 pipeline ({args.arch}, one seed, default transfer set) on "
              f"this machine: {total / 3600:.1f} hours.** The pipeline is {total_flops / 1e15:,.0f} PFLOP of "
              f"forward/backward work (transfer architectures counted at {args.arch}'s cost per image), so finishing "
              f"it in 60 minutes needs {total_flops / 3600 / 1e12:,.0f} TFLOP/s sustained"
              + (f" ({100 * total_flops / 3600 / peak:.0f}% of this GPU's bf16 peak)." if peak else ".")]
    text = "\n".join(lines)
    print(text)
    append(f"CIFAR-10 preset stages on CIFAR-shaped data ({device.type})", text)


if __name__ == "__main__":
    main()
