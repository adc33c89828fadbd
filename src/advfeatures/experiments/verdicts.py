"""Claims checked on the seeds' means, saying how many seeds agree where they do not all agree.

A verdict decided on a mean alone can flip with one seed or a floating-point change when the number swings across
seeds by more than its threshold's margin (synthetic's D_det_bugs transfers 0-90% of the time across seeds), and the
reader would not see why. Each section's check runs once on the means and once per seed, on that seed's results.
"""

from __future__ import annotations

from collections.abc import Callable

Claims = list[list[str]]  # rows [claim, verdict, evidence]; verdict "holds" or "does not hold"


def with_seed_counts(check: Callable[[dict], Claims], r: dict) -> Claims:
    """`check(r)`'s rows, each verdict followed by "(on k of n seeds)" / "(holds on k of n seeds)" where the seeds
    split or all disagree with the mean's verdict. `r` is a preset's results (per-seed results under "per_seed")."""
    rows = check(r)
    seeds = r.get("per_seed") or []
    if len(seeds) < 2:
        return rows
    per_seed = [{row[0]: row[1] for row in check({**r, **seed, "per_seed": [seed]})} for seed in seeds]
    for row in rows:
        held = sum(verdicts.get(row[0]) == "holds" for verdicts in per_seed)
        if 0 < held < len(seeds) or (held == len(seeds)) != (row[1] == "holds"):
            row[1] += f" ({'on' if row[1] == 'holds' else 'holds on'} {held} of {len(seeds)} seeds)"
    return rows
