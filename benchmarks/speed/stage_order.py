"""Which order should free workers take ready stages in? A simulation on a finished run's measured stage seconds.

    python benchmarks/speed/stage_order.py RUN [--seeds 1 3] [--workers 2] [--no-record]

Reads seed 0's stage seconds of each preset in RUN (a finished `advfeatures reproduce` folder), builds every
(preset, seed)'s stage graph from the stage declarations (`pipeline.STAGES`, the stages that ran in RUN), and
list-schedules it on N workers with each rule: the time the last stage ends and when each preset's last stage ends.
Rules: "built on" (what `pipeline.stage_tasks` does: most stages building on it first, then run, then stage order),
"stage order" (stage order, then run), "preset by preset" (run, then stage order) and "critical path" (longest
remaining chain of measured seconds first: needs the costs, which a fresh run does not have). A simulation: it
assumes a stage takes as long as it did in RUN whatever runs beside it.
"""

from __future__ import annotations

import argparse
import heapq
import json
import sys
from pathlib import Path

from advfeatures.pipeline import STAGES
from advfeatures.presets import DEFAULT_PRESETS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, for common.py
from common import add_record_option, markdown_table, record  # noqa: E402


def stage_graph(costs: dict[str, dict[str, float]]) -> tuple[list[str], dict[str, list[str]]]:
    """The stages that ran (by name, in stage order) and what each needs, from the declarations."""
    ran = set().union(*costs.values())
    names, needs, provider = [], {}, {}
    for stage in STAGES:
        if stage.name in names or not any(_is_record_of(r, stage.name) for r in ran):
            continue
        names.append(stage.name)
        provider[stage.output] = stage.name
        needs[stage.name] = [provider[n] for n in stage.needs]
    return names, needs


def _is_record_of(record: str, stage: str) -> bool:
    """A stage's record is its name, except attack_check's, which names its method and sample."""
    return record == stage or (stage == "attack_check" and record.startswith("attack_check_"))


def simulate(units, names, needs, cost, key, workers: int) -> tuple[float, dict[str, float]]:
    pending = {(u, n) for u in units for n in names}
    done, running, now, free, ends = set(), [], 0.0, workers, {}
    while pending or running:
        ready = sorted((t for t in pending if all((t[0], d) in done for d in needs[t[1]])), key=key)
        while free and ready:
            task = ready.pop(0)
            pending.remove(task)
            free -= 1
            heapq.heappush(running, (now + cost(*task), task))
        now, task = heapq.heappop(running)
        done.add(task)
        free += 1
        ends[task[0][0]] = max(ends.get(task[0][0], 0.0), now)
    return now, ends


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--workers", type=int, default=2)
    add_record_option(ap)
    args = ap.parse_args()
    costs = {}  # the default's preset order first (the order a run takes them in)
    folders = sorted(args.run.glob("*/results.json"), key=lambda f: (
        DEFAULT_PRESETS.index(f.parent.name) if f.parent.name in DEFAULT_PRESETS else len(DEFAULT_PRESETS), f))
    for results in folders:
        data = json.loads(results.read_text())
        costs[data["preset"]] = data["per_seed"][0]["seconds"]
    names, needs = stage_graph(costs)
    index = {n: i for i, n in enumerate(names)}

    def cost(unit, name: str) -> float:
        stage_seconds = costs[unit[0]]
        return next((v for k, v in stage_seconds.items() if _is_record_of(k, name)), 0.0)

    children = {n: [m for m in names if n in needs[m]] for n in names}

    def below(name: str) -> set[str]:
        return set().union(*({c} | below(c) for c in children[name])) if children[name] else set()

    built_on = {n: len(below(n)) for n in names}
    rows, data = [], []
    for seeds in args.seeds:
        units = [(p, s) for p in costs for s in range(seeds)]
        order = {u: i for i, u in enumerate(units)}
        memo: dict = {}

        def chain(unit, name: str, memo=memo) -> float:
            if (unit, name) not in memo:
                memo[(unit, name)] = cost(unit, name) + max([chain(unit, c) for c in children[name]] + [0.0])
            return memo[(unit, name)]

        rules = {
            "built on": lambda t, o=order: (-built_on[t[1]], o[t[0]], index[t[1]]),
            "stage order": lambda t, o=order: (index[t[1]], o[t[0]]),
            "preset by preset": lambda t, o=order: (o[t[0]], index[t[1]]),
            "critical path (knows the costs)": lambda t, o=order, c=chain: (-c(*t), o[t[0]], index[t[1]]),
        }
        for rule, key in rules.items():
            end, ends = simulate(units, names, needs, cost, key, args.workers)
            rows.append([seeds, rule, f"{end:.0f}", ", ".join(f"{p} {t:.0f}" for p, t in ends.items())])
            data.append({"seeds": seeds, "rule": rule, "end": end, "preset_ends": ends})
    text = (f"Stage seconds of seed 0 in `{args.run}`, {args.workers} workers (simulated).\n\n"
            + markdown_table(["seeds", "rule", "last stage ends (s)", "each preset's last stage (s)"], rows))
    print(text)
    record(__file__, text, {"run": str(args.run), "workers": args.workers, "rows": data},
           title="Stage order on workers (simulated)", enabled=not args.no_record)


if __name__ == "__main__":
    main()
