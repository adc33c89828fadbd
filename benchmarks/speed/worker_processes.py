"""Why `reproduce --jobs` runs stages in worker processes: one run on all the cores against one worker per core.

    python benchmarks/speed/worker_processes.py [--steps 150] [--no-record]

For each offline preset's network (synthetic: small CNN width 16 on 1x16x16; digits: small CNN width 32 on 1x8x8;
cifar10_cpu: ResNet-9 width 16 on 3x32x32 in channels_last, batch 128, once under bf16 autocast as its constructions run
and once in float32 as its evaluation runs), the time of an attack step (forward + gradient to the input, batch 256
unless said, float32 unless said) measured three ways: one process on one
thread, one process on every core (what one run gets without --jobs), and one worker process per core side by side
on one thread each (what --jobs gives; the workers are started by advfeatures.jobs exactly as a run starts them).
"throughput vs all-core" is how many steps per second the machine does, relative to one process on every core.
Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from advfeatures.device import autocast, to_memory_format
from advfeatures.jobs import Task, run_tasks, usable_cores
from advfeatures.models import build_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import add_record_option, markdown_table, record, timed  # noqa: E402

# name: (architecture, its options, channels, side, batch, bf16 autocast)
NETWORKS = {
    "synthetic": ("small_cnn", {"width": 16}, 1, 16, 256, False),
    "digits": ("small_cnn", {}, 1, 8, 256, False),
    "cifar10_cpu bf16": ("resnet9", {"width": 16}, 3, 32, 128, True),
    "cifar10_cpu float32": ("resnet9", {"width": 16}, 3, 32, 128, False),
}


def step_ms(preset: str, steps: int, log=None) -> float:
    """Time per attack step in ms, over `steps` steps after 10 untimed ones, on this process's threads."""
    arch, options, channels, side, batch, bf16 = NETWORKS[preset]
    model = build_model(arch, in_channels=channels, num_classes=10, image_size=side, **options).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    channels_last = arch == "resnet9"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    x = to_memory_format(torch.rand(batch, channels, side, side), channels_last).requires_grad_(True)
    y = torch.randint(0, 10, (batch,), generator=torch.Generator().manual_seed(0))

    def step():
        x.grad = None
        with autocast(x.device, bf16):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()

    def many():
        for _ in range(steps):
            step()

    for _ in range(10):
        step()
    return timed(many, warmup=0) / steps * 1000


def _worker_step_ms(worker, preset: str, steps: int, log) -> float:
    """step_ms in a worker process (jobs.run_tasks' calling convention)."""
    return step_ms(preset, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150, help="timed attack steps per measurement")
    parser.add_argument("--networks", nargs="+", choices=sorted(NETWORKS), default=list(NETWORKS),
                        help="which networks to measure (default: all)")
    add_record_option(parser)
    args = parser.parse_args()
    cores = usable_cores()
    rows, data = [], {}
    for preset in args.networks:
        torch.set_num_threads(1)
        one = step_ms(preset, args.steps)
        torch.set_num_threads(cores)
        every = step_ms(preset, args.steps)
        tasks = [Task(i, f"{preset} {i}", _worker_step_ms, (preset, args.steps)) for i in range(cores)]
        side_by_side = [ms for _, ms, _ in run_tasks(tasks, cores, 1, lambda line: None)]
        each = sum(side_by_side) / len(side_by_side)
        ratio = (cores / each) / (1 / every)
        rows.append([preset, f"{one:.1f}", f"{every:.1f}", f"{each:.1f}", f"{ratio:.2f}x"])
        data[preset] = {"one_thread_ms": one, "all_cores_ms": every, "workers_each_ms": side_by_side,
                        "throughput_vs_all_cores": ratio}
    text = markdown_table(
        ["network", "1 process, 1 thread (ms)", f"1 process, {cores} threads (ms)",
         f"{cores} workers side by side, each (ms)", "throughput vs all-core"], rows)
    print(text)
    record(__file__, text, data, title=f"attack step: one run on {cores} cores vs {cores} workers",
           enabled=not args.no_record)


if __name__ == "__main__":
    main()
