"""How many inversion steps D_R / D_NR need from uniform noise (issue 27's D_R_noise / D_NR_noise).

    python benchmarks/studies/noise_inversion_steps.py RUN [--preset synthetic] [--images 256]
        [--checkpoints 100 200 300 500 1000] [--data-root DIR] [--amp] [--no-record]

RUN is a finished `advfeatures reproduce` folder: its D (standard) and D_adv (robust) models of seed 0 are the
representations. For the first `--images` training images, inversion starts from uniform noise (as the pipeline's
D_R_noise / D_NR_noise) and from other training images (as D_R / D_NR, the preset's own steps), and the relative
representation error ||g(z) - g(x)|| / ||g(x)|| is read at each checkpoint. The steps are normalised gradient steps
of fixed size, so running to 200 steps and then 100 more is the same as running 300: each checkpoint continues from
the previous one. The paper uses 10x the image-started steps from noise; fewer suffice where the error has stopped
falling and sits at the image-started run's level. `--amp`: bf16 autocast, as the pipeline constructs on a CPU
with AVX512-BF16 / AMX or a GPU (default float32).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from advfeatures import load_model
from advfeatures.attacks import invert_representation
from advfeatures.construct import choose_start_indices
from advfeatures.pipeline import Overrides, RunOptions, apply_overrides, load_preset_data
from advfeatures.presets import get_preset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import add_record_option, markdown_table, record, timed_once  # noqa: E402


def relative_error(model, z: torch.Tensor, x: torch.Tensor) -> float:
    with torch.no_grad():
        gz, gx = model.representation(z).float(), model.representation(x).float()
    return float(((gz - gx).norm(dim=1) / gx.norm(dim=1)).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a finished reproduce folder")
    ap.add_argument("--preset", default="synthetic")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--checkpoints", type=int, nargs="+", default=[100, 200, 300, 500, 1000])
    ap.add_argument("--data-root", help="the dataset's folder, for the CIFAR-10 presets")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast in the inversions (as the pipeline's)")
    add_record_option(ap)
    args = ap.parse_args()
    torch.manual_seed(0)
    preset = apply_overrides(get_preset(args.preset), Overrides())
    data = load_preset_data(preset, RunOptions(out=args.run, presets=(args.preset,), progress=False,
                                               data_root=args.data_root))
    x = data["train"].images[: args.images]
    inv = preset.inversion
    rows, numbers = [], {}
    for role, name in (("D_R (robust D_adv)", "D_adv"), ("D_NR (standard D)", "D")):
        model = load_model(args.run / args.preset / "models" / f"{name}.safetensors").eval()
        others = data["train"].images[choose_start_indices(data["train"].images.shape[0], 0)[: args.images]]
        from_image, seconds = timed_once(lambda m=model, o=others: invert_representation(
            m, x, o, steps=inv.steps, step_size=inv.step_size, batch_size=inv.batch_size, amp=args.amp))
        image_error = relative_error(model, from_image, x)
        z, done, errors = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)), 0, {}
        for steps in sorted(args.checkpoints):
            z = invert_representation(model, x, z, steps=steps - done, step_size=inv.step_size,
                                      batch_size=inv.batch_size, amp=args.amp)
            done = steps
            errors[steps] = relative_error(model, z, x)
        numbers[name] = {"from_image": {"steps": inv.steps, "error": image_error, "seconds": seconds},
                         "from_noise": errors}
        rows.append([role, f"{image_error:.3f} ({inv.steps} steps)",
                     *(f"{errors[s]:.3f}" for s in sorted(args.checkpoints))])
    header = ["representation", "from an image"] + [f"noise, {s} steps" for s in sorted(args.checkpoints)]
    text = (f"Relative representation error, mean over the first {args.images} training images of {args.preset} "
            f"(models of {args.run}, seed 0; step size {inv.step_size}; {'bf16' if args.amp else 'float32'}):\n\n"
            + markdown_table(header, rows))
    print(text)
    record(__file__, text, numbers, title=f"Inversion from noise: error by steps ({args.preset})",
           enabled=not args.no_record)


if __name__ == "__main__":
    main()
