"""What the per-example early-exit flags buy (seconds) and what they change (the data and the numbers).

    python benchmarks/speed/early_exit.py [--preset synthetic] [--preset digits] [--tolerance 0.01 --tolerance 0.05]
        [--no-record]

For each preset: train D and D_adv with the preset's settings, then build each constructed set twice, with the
flag off (the default: every example runs every step) and on (`InversionConfig.tolerance`: an inversion stops
once its relative representation error is below the tolerance; `RelabelConfig.early_stop`: a targeted example
stops once it hits its target), train the preset's model on each and evaluate it at the threat model with the
preset's attack. Prints a table and records it (benchmarks/records/early_exit.md; `--no-record` to print only).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from advfeatures.attacks import flat_norm
from advfeatures.construct import build_inverted_dataset, build_relabelled_dataset, inversion_diagnostics
from advfeatures.evaluation import clean_accuracy, predict, robust_accuracy
from advfeatures.experiments.context import PresetRun
from advfeatures.pipeline import Overrides, RunOptions, apply_overrides, load_preset_data
from advfeatures.presets import get_preset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import add_record_option, record, timed_once  # noqa: E402

COLUMNS = ("set", "early_exit", "build_seconds", "mean_l2_change_vs_off", "construction", "clean", "robust")


def measure(preset_name: str, tolerances: list[float]) -> tuple[list[str], list[dict]]:
    preset = apply_overrides(get_preset(preset_name), Overrides())
    options = RunOptions(progress=False, theory=False)
    data = load_preset_data(preset, options)
    with tempfile.TemporaryDirectory() as tmp:
        run = PresetRun(preset, 0, Path(tmp), data, options, log=lambda _: None)
        standard, _ = run.fit("D", run.train_x, run.train_y, preset.train)
        robust, _ = run.fit("D_adv", run.train_x, run.train_y, preset.adversarial_train)
        x, y, ev, threat = run.train_x, run.train_y, preset.evaluation, preset.threat

        def score(name: str, images, labels) -> tuple[float, float]:
            model, _ = run.fit(name, images, labels, preset.constructed_train[name.split("@")[0]])
            clean = clean_accuracy(model, run.test_x, run.test_y)
            rob = robust_accuracy(model, run.test_x, run.test_y, threat.norm, threat.eps, steps=ev.steps,
                                  restarts=ev.restarts)
            return clean, rob

        rows = []
        inv = preset.inversion
        for name, model in (("D_R", robust), ("D_NR", standard)):
            base, t_base = timed_once(lambda m=model: build_inverted_dataset(
                m, x, y, steps=inv.steps, step_size=inv.step_size, start=inv.start, progress=False))
            base_err = inversion_diagnostics(model, x, base)["relative_representation_error_mean"]
            base_acc = score(name, base.images, base.labels)
            rows.append((name, "off", t_base, 0.0, f"rel. error {base_err:.4f}", *base_acc))
            for tol in tolerances:
                fast, t_fast = timed_once(lambda m=model, tol=tol: build_inverted_dataset(
                    m, x, y, steps=inv.steps, step_size=inv.step_size, start=inv.start, tolerance=tol,
                    progress=False))
                err = inversion_diagnostics(model, x, fast)["relative_representation_error_mean"]
                diff = float(flat_norm(fast.images - base.images).mean())
                rows.append((name, f"tolerance {tol:g}", t_fast, diff, f"rel. error {err:.4f}",
                             *score(f"{name}@{tol}", fast.images, fast.labels)))
        rel = preset.relabel
        for mode in ("rand", "det"):
            common = dict(mode=mode, num_classes=run.num_classes, norm=threat.norm, eps=rel.eps, steps=rel.steps,
                          step_size=rel.step_size, progress=False)
            for early in (False, True):
                ds, t = timed_once(
                    lambda e=early, c=common: build_relabelled_dataset(standard, x, y, early_stop=e, **c))
                if not early:
                    base = ds
                hit = float((predict(standard, ds.images) == ds.labels).float().mean())
                diff = float(flat_norm(ds.images - base.images).mean())
                rows.append((f"D_{mode}", "early_stop" if early else "off", t, diff, f"attack success {hit:.3f}",
                             *score(f"D_{mode}", ds.images, ds.labels)))
    lines = [f"### {preset_name}", "",
             "| set | early exit | build s | mean L2 change vs off | construction | clean % | robust % |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {n} | {flag} | {t:.1f} | {d:.4f} | {diag} | {100 * c:.1f} | {100 * r:.1f} |"
              for n, flag, t, d, diag, c, r in rows]
    return lines, [{"preset": preset_name, **dict(zip(COLUMNS, row, strict=True))} for row in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", action="append", help="preset(s) to measure (default: synthetic and digits)")
    ap.add_argument("--tolerance", action="append", type=float, help="inversion tolerance(s) (default 0.01, 0.05)")
    add_record_option(ap)
    args = ap.parse_args()
    torch.manual_seed(0)
    lines, data = [], []
    for name in args.preset or ["synthetic", "digits"]:
        table, rows = measure(name, args.tolerance or [0.01, 0.05])
        lines += table + [""]
        data += rows
    text = "\n".join(lines)
    print(text)
    record(__file__, text, data, title="Early exit: seconds saved and effect on the numbers (seed 0)",
           enabled=not args.no_record)


if __name__ == "__main__":
    main()
