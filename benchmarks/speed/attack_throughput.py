"""Throughput of our PGD engine and representation inversion (images x steps per second) on CPU or GPU.

    python benchmarks/speed/attack_throughput.py [--arch resnet18] [--batch 256] [--steps 20] [--device auto] [--amp]
        [--channels-last] [--compile] [--no-record]

Each loop runs once untimed (warm-up, compilation), then once timed. Prints a table and records it
(benchmarks/records/attack_throughput.md). On CPU it uses small widths by default (the CIFAR ResNet-18 at full
width takes seconds per 128-image step on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from advfeatures.attacks import invert_representation, pgd_attack
from advfeatures.device import resolve_device
from advfeatures.models import build_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import add_record_option, record, timed  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--width", type=int, help="default: 64 on GPU, 16 on CPU")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    add_record_option(ap)
    args = ap.parse_args()
    device = resolve_device(args.device)
    width = args.width or (64 if device.type == "cuda" else 16)
    model = build_model(args.arch, in_channels=3, num_classes=10, image_size=32, width=width).to(device).eval()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if args.compile:
        model = torch.compile(model)
    x = torch.rand(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    pgd = timed(lambda: pgd_attack(model, x, y, eps=0.5, steps=args.steps, batch_size=args.batch, amp=args.amp), device)
    inv = timed(lambda: invert_representation(model, x, x.roll(1, 0), steps=args.steps, step_size=0.1,
                                              batch_size=args.batch, amp=args.amp), device)
    rows = [("PGD (L2)", pgd), ("representation inversion", inv)]
    text = (f"{args.arch} width {width}, batch {args.batch}, {args.steps} steps, amp={args.amp}, "
            f"channels_last={args.channels_last}, compile={args.compile}\n\n"
            "| loop | seconds | image-steps/s |\n|---|---|---|\n")
    text += "\n".join(f"| {n} | {s:.2f} | {args.batch * args.steps / s:,.0f} |" for n, s in rows)
    print(text)
    data = {"arch": args.arch, "width": width, "batch": args.batch, "steps": args.steps, "device": device.type,
            "amp": args.amp, "channels_last": args.channels_last, "compile": args.compile,
            "rows": [{"loop": n, "seconds": s, "image_steps_per_s": args.batch * args.steps / s} for n, s in rows]}
    record(__file__, text, data, title=f"Attack throughput on {device.type}", enabled=not args.no_record)


if __name__ == "__main__":
    main()
