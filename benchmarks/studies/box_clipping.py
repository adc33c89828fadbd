"""How much of each fixed PGD step does the [0, 1] box clip away? (issue: digits pixels sit at 0 or 1)

Runs fixed-step L2 PGD (CE, from a random start) against a saved model and, at every step, compares the step taken
before projection with what is left after projecting into the box alone, and into ball and box:

    python benchmarks/studies/box_clipping.py runs/default/digits/models/D_adv.safetensors --dataset digits --eps 1.0

Prints the share of pixels at 0 or 1 and a table of the mean fraction of the step length kept, per step size, and
records them (benchmarks/records/box_clipping.md, the numbers in box_clipping.jsonl; `--no-record` to print only).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from advfeatures import load_model
from advfeatures.attacks import ClassificationObjective, project, random_in_ball, step_direction
from advfeatures.data import as_tensors, load_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import add_record_option, markdown_table, record  # noqa: E402


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
    add_record_option(ap)
    args = ap.parse_args()
    model = load_model(args.model).eval()
    test = as_tensors(load_dataset(args.dataset, "test"))
    x, y = test.images, test.labels
    at_bound = float(((x == 0) | (x == 1)).float().mean())
    rows = [kept_fraction(model, x, y, args.eps, s, args.steps) for s in (0.025 * args.eps, 0.1 * args.eps,
                                                                         0.25 * args.eps)]
    text = (f"`{args.model}` on the {args.dataset} test set ({len(y)} images), fixed-step L2 CE PGD from a random "
            f"start, eps {args.eps:g}, {args.steps} steps. Pixels at 0 or 1: {100 * at_bound:.1f}%.\n\n"
            + markdown_table(["step", "step length kept after the box", "after the ball and the box"],
                             [[f"{r['step']:g}", f"{100 * r['kept_after_box']:.1f}%",
                               f"{100 * r['kept_after_ball_and_box']:.1f}%"] for r in rows]))
    print(text)
    record(__file__, text, {"model": args.model, "dataset": args.dataset, "eps": args.eps, "steps": args.steps,
                            "pixels_at_0_or_1": at_bound, "rows": rows},
           title=f"How much of each PGD step the [0, 1] box clips: {args.dataset}", enabled=not args.no_record)


if __name__ == "__main__":
    main()
