"""Image-steps per second of candidate CIFAR networks on this machine: how the cifar10_cpu preset picks its net.

    python benchmarks/speed/cpu_networks.py [--archs resnet18:16 resnet9:16 resnet9:32] [--batch 256] [--layouts]
        [--bf16] [--image 3x32] [--repeats 10] [--no-record]

Per network (arch:width) it times, on random inputs of --image CHANNELSxSIZE (default CIFAR's 3x32; synthetic's
network: `--archs small_cnn:16 --image 1x16`), the two kinds of step that fill a CPU run:
- a training step (forward, backward to the weights, SGD update), the cost of every trained model;
- an input-gradient step (forward, backward to the input only, the weights frozen), the cost of every attack,
  adversarial-training inner step and representation inversion;
each in float32 and, with --layouts, channels_last;
with --bf16, also under bf16 autocast. Rates are the batch over the median of --repeats steps after two warm-up
steps. Prints images/s and records the table (benchmarks/records/cpu_networks.md; `--no-record` to print only).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from advfeatures.device import autocast, bf16_is_fast
from advfeatures.models import build_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import add_record_option, record, timed  # noqa: E402

CPU = torch.device("cpu")


def _rate(step, batch: int, repeats: int) -> float:
    """Images per second: the batch over the median step time, after two warm-up steps (allocations, oneDNN
    primitive creation)."""
    return batch / timed(step, CPU, warmup=2, repeats=repeats)


def measure(arch: str, width: int, batch: int, channels_last: bool, bf16: bool = False, repeats: int = 10,
            image: tuple[int, int] = (3, 32)) -> dict:
    torch.manual_seed(0)
    channels, size = image
    model = build_model(arch, in_channels=channels, num_classes=10, image_size=size, width=width)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.rand(batch, channels, size, size).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def train_step():
        model.train()
        opt.zero_grad(set_to_none=True)
        with autocast(CPU, bf16):
            logits = model(x)
        torch.nn.functional.cross_entropy(logits.float(), y).backward()
        opt.step()

    def input_step():
        model.eval()
        xa = x.clone().requires_grad_(True)
        with autocast(CPU, bf16):
            logits = model(xa)
        torch.autograd.grad(torch.nn.functional.cross_entropy(logits.float(), y), xa)

    for p in model.parameters():
        p.requires_grad_(True)
    train = _rate(train_step, batch, repeats)
    for p in model.parameters():
        p.requires_grad_(False)
    attack = _rate(input_step, batch, repeats)
    params = sum(p.numel() for p in model.parameters())
    layout = ("channels_last" if channels_last else "NCHW") + (", bf16" if bf16 else "")
    return {"net": f"{arch}:{width}", "layout": layout, "params": params, "train": train, "input_grad": attack}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", nargs="+", default=["resnet18:16", "resnet9:16", "resnet9:24", "resnet9:32"])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--layouts", action="store_true", help="also time channels_last")
    ap.add_argument("--bf16", action="store_true",
                    help="also time bf16 autocast (where this CPU runs bf16 natively: AVX512-BF16 or AMX)")
    ap.add_argument("--image", default="3x32", help="CHANNELSxSIZE of the random inputs")
    ap.add_argument("--repeats", type=int, default=10, help="timed steps per measurement (median)")
    add_record_option(ap)
    args = ap.parse_args()
    try:
        image = tuple(int(v) for v in args.image.lower().split("x"))
    except ValueError:
        image = ()
    if len(image) != 2 or min(image) < 1:
        ap.error(f"--image must be CHANNELSxSIZE, e.g. 3x32 or 1x16; got {args.image!r}")
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    if args.bf16 and not bf16_is_fast(CPU):
        ap.error("this CPU has no native bf16 (AVX512-BF16 or AMX): bf16 autocast would be emulated")
    rows = []
    for spec in args.archs:
        arch, _, width = spec.partition(":")
        for cl, bf16 in [(cl, bf16) for cl in ((False, True) if args.layouts else (False,))
                         for bf16 in ((False, True) if args.bf16 else (False,))]:
            r = measure(arch, int(width or 64), args.batch, cl, bf16, args.repeats, image)
            rows.append(r)
            print(f"{r['net']:>14} {r['layout']:>13} {r['params'] / 1e6:6.2f}M params  train {r['train']:7.0f} img/s"
                  f"  input-grad {r['input_grad']:7.0f} img/s", flush=True)
    table = ["| net (arch:width) | layout | params | training img/s | input-gradient img/s |", "|---|---|---|---|---|"]
    table += [f"| {r['net']} | {r['layout']} | {r['params'] / 1e6:.2f}M | {r['train']:.0f} | {r['input_grad']:.0f} |"
              for r in rows]
    text = (f"Batch {args.batch}, random {image[0]}x{image[1]}x{image[1]} inputs, float32 unless the layout says bf16 "
            f"(autocast); median of "
            f"{args.repeats} steps.\n\n" + "\n".join(table))
    print("\n" + text)
    record(__file__, text, {"batch": args.batch, "repeats": args.repeats, "image": list(image), "rows": rows},
           title=f"CPU networks on {image[0]}x{image[1]}x{image[1]} images", enabled=not args.no_record)


if __name__ == "__main__":
    main()
