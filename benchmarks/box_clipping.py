"""How much of each fixed PGD step does the [0, 1] box clip away? (issue: digits pixels sit at 0 or 1)

Runs fixed-step L2 PGD (CE, from a random start) against a saved model and, at every step, compares the step taken
before projection with what is left after projecting into the box alone, and into ball and box:

    python benchmarks/box_clipping.py runs/default/digits/models/D_adv.safetensors --dataset digits --eps 1.0

Prints one JSON line: share of pixels at 0 or 1, and the mean fraction of the step length kept, per step size.
"""

from __future__ import annotations

import argparse
import json

import torch

from advfeatures import load_model
from advfeatures.attacks import ClassificationObjective, project, random_in_ball, step_direction
from advfeatures.data import as_tensors, load_dataset


def kept_fraction(model, x, y, eps: float, step: float, steps: int) -> dict:
    objective = ClassificationObjective(model, y)
    generator = torch.Generator().manual_seed(0)
    z = (x + random_in_ball(x, "l2", eps, generator)).clamp(0, 1)
    box_only, ball_and_box = [], []
    for _ in range(steps):
        z.requires_grad_(True)
        loss, _ = objective(z, torch.arange(len(y)))
        grad = torch.autograd.grad(loss.sum(), z)[0]
        z = z.detach()
        moved = z + step * step_direction(grad, "l2")
        in_box = moved.clamp(0, 1)
        final = (x + project(moved - x, "l2", eps)).clamp(0, 1)
        box_only.append(((in_box - z).flatten(1).norm(dim=1) / step).mean())
        ball_and_box.append(((final - z).flatten(1).norm(dim=1) / step).mean())
        z = final
    return {"step": step, "kept_after_box": float(torch.stack(box_only).mean()),
            "kept_after_ball_and_box": float(torch.stack(ball_and_box).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--eps", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=100)
    args = ap.parse_args()
    model = load_model(args.model).eval()
    test = as_tensors(load_dataset(args.dataset, "test"))
    x, y = test.images, test.labels
    at_bound = float(((x == 0) | (x == 1)).float().mean())
    rows = [kept_fraction(model, x, y, args.eps, s, args.steps) for s in (0.025 * args.eps, 0.1 * args.eps,
                                                                         0.25 * args.eps)]
    print(json.dumps({"model": args.model, "pixels_at_0_or_1": at_bound, "rows": rows}))


if __name__ == "__main__":
    main()
