"""How many APGD-T target classes our evaluation needs to stay within a point of AutoAttack, per preset.

Reads a finished `advfeatures reproduce` run and evaluates each seed's D, D_adv, D_R and D_NR on the preset's full
test set with one cascade of the largest requested number of APGD-T targets (APGD-CE as the preset has it), reading
off what the cascade with each smaller number would have given: the runs come in a fixed order, so a t-target cascade
is the first 1 + t runs of the longer one, exactly (evaluation.worst_case_examples' `after_run`; tested).

    python benchmarks/compare/apgd_targets.py RUN --preset synthetic [--targets 1 3 9] [--threads 1] [--no-record]
    python benchmarks/compare/apgd_targets.py RUN --preset cifar10_cpu --data-root DIR --threads 2

Beside each number: AutoAttack standard on every test image where the run was made with `--autoattack` (its
results.json), else "-". A run folder whose results.json is not written yet (a run still going) is read from its
seed-0 models. A preset may use fewer targets than AutoAttack's 9 only where every model stays within 1 point of
AutoAttack (issue 24's rule); the per-run AutoAttack check (100 images) keeps watching each new run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from advfeatures import load_model
from advfeatures.evaluation import predict, worst_case_examples
from advfeatures.pipeline import Overrides, RunOptions, apply_overrides, load_preset_data
from advfeatures.presets import get_preset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import Stopwatch, add_record_option, markdown_table, record  # noqa: E402

MODELS = ("D", "D_adv", "D_R", "D_NR")


def runs_to_measure(run: Path, preset: str) -> list[tuple[int, Path, dict]]:
    """(seed, folder, AutoAttack number per model or {}) for every seed of the run."""
    results_file = run / preset / "results.json"
    if not results_file.exists():
        return [(0, run / preset, {})]
    results = json.loads(results_file.read_text())
    out = []
    for seed, seed_results in zip(results["seeds"], results["per_seed"], strict=True):
        folder = run / preset / ("" if seed == 0 else f"seeds/{seed}")
        aa = {m: seed_results["accuracy"][m]["autoattack"] for m in MODELS
              if "autoattack" in seed_results["accuracy"].get(m, {})}
        out.append((seed, folder, aa))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a reproduce run directory (made with --autoattack for the comparison)")
    ap.add_argument("--preset", required=True)
    ap.add_argument("--targets", type=int, nargs="+", default=[1, 3, 9])
    ap.add_argument("--data-root", help="the folder the run's data came from (CIFAR-10 presets)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the timings are per this count)")
    add_record_option(ap)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    p = apply_overrides(get_preset(args.preset), Overrides())
    data = load_preset_data(p, RunOptions(out=args.run, presets=(args.preset,), data_root=args.data_root))
    x, y = data["test"].images, data["test"].labels
    norm, eps, ev = p.threat.norm, p.threat.eps, p.evaluation
    most = max(args.targets)
    rows = []
    for seed, folder, aa in runs_to_measure(args.run, args.preset):
        for name in MODELS:
            model = load_model(folder / "models" / f"{name}.safetensors").eval()
            masks: list[torch.Tensor] = []
            ends: list[float] = []

            clock = Stopwatch()

            def seen(_run: int, mask: torch.Tensor, masks=masks, ends=ends, clock=clock) -> None:
                masks.append(mask)
                ends.append(clock.elapsed())

            adv = worst_case_examples(model, x, y, norm=norm, eps=eps, steps=ev.steps, restarts=ev.restarts,
                                      targets=most, seed=seed, batch_size=ev.batch_size, after_run=seen)
            final = predict(model, adv) == y
            row = {"seed": seed, "model": name, "autoattack": aa.get(name), "clean": float((predict(model, x) == y)
                   .float().mean()), "final_equals_last_run": bool(torch.equal(final, masks[-1]))}
            for t in args.targets:
                i = min(ev.restarts + t, len(masks)) - 1  # targets are capped at classes - 1
                row[f"t{t}"] = float(masks[i].float().mean())
                row[f"t{t}_seconds"] = ends[i]
            rows.append(row)
            print(json.dumps(row), flush=True)
    header = ["seed", "model", "AutoAttack %", *(f"ours, {t} targets: % (s)" for t in args.targets)]
    table = [[r["seed"], r["model"], "-" if r["autoattack"] is None else f"{100 * r['autoattack']:.1f}",
              *(f"{100 * r[f't{t}']:.1f} ({r[f't{t}_seconds']:.0f})" for t in args.targets)] for r in rows]
    worst = {t: max(100 * (r[f"t{t}"] - r[f"t{most}"]) for r in rows) for t in args.targets}
    worst_aa = {t: max(100 * (r[f"t{t}"] - r["autoattack"]) for r in rows) for t in args.targets
                if all(r["autoattack"] is not None for r in rows)}
    text = (f"Models of `{args.run}`, preset {args.preset}, {norm.upper()} eps {eps:g}, {len(y)} test images, "
            f"{args.threads} thread(s); the seconds are cumulative within one cascade. Largest 'fewer targets above "
            f"{most}' (points): " + ", ".join(f"{t} targets {w:+.1f}" for t, w in worst.items())
            + (". Largest 'ours above AutoAttack' (points): "
               + ", ".join(f"{t} targets {w:+.1f}" for t, w in worst_aa.items()) if worst_aa else
               ". No AutoAttack numbers in this run (made without --autoattack)")
            + ".\n\n" + markdown_table(header, table))
    print("\n" + text)
    record(__file__, text, {"preset": args.preset, "run": str(args.run), "threat": [norm, eps], "rows": rows,
                            "worst_gap_points": worst_aa, "worst_gap_to_most_targets_points": worst},
           title=f"APGD-T targets vs AutoAttack: {args.preset}", enabled=not args.no_record)


if __name__ == "__main__":
    main()
