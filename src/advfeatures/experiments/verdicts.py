"""Claims checked on the seeds' means, saying how many seeds agree where they do not all agree, and, on one seed,
calling "undecided" what lies within the test set's sampling error of its threshold.

A verdict decided on a mean alone can flip with one seed or a floating-point change when the number swings across
seeds by more than its threshold's margin (synthetic's D_det_bugs transfers 0-90% of the time across seeds), and the
reader would not see why. Each section's check runs once on the means and once per seed, on that seed's results.

One seed has no seed spread to show, and its accuracies carry the test set's binomial error: on cifar10_cpu's 1,000
test images, 2 s.e. is about 3 points at 50%, and two one-seed verdicts there (D_NR above 50% at 47.5%, Nakkiran's
(X, Y) at most 20% at 22.0%) flipped between runs of the same code. So with one seed a claim comparing test-set
accuracies (`above`) whose number lies within two binomial standard errors of its threshold gets the verdict
"undecided (...)", never a coin toss called "holds" or "does not hold". With several seeds the means decide and the
seed count says how far to trust them, as before; claims on other numbers (a correlation, a construction's
diagnostics) are decided as they are.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

Claims = list[list[str]]  # rows [claim, verdict, evidence]; verdict "holds", "does not hold" or "undecided (...)"
PER_SEED = "_one_of_several_seeds"  # marks the results with_seed_counts checks seed by seed (decided strictly)


@dataclass(frozen=True)
class Undecided:
    """A one-seed comparison too close to call: |difference| <= `margin` (two binomial s.e. on `n` test images)."""

    difference: float
    margin: float
    n: int

    def __str__(self) -> str:
        return (f"undecided ({100 * self.difference:+.1f} points from the threshold, within 2 binomial s.e. = "
                f"{100 * self.margin:.1f} on {self.n} test images; one seed)")


Verdict = bool | Undecided


def above(r: dict, value: float, threshold: float, n: int | None, *, against: float | None = None) -> Verdict:
    """Whether `value` (a test-set accuracy, a fraction of `n` images) exceeds `threshold`. `against`: the other
    test-set accuracy in the threshold (threshold = against + a fixed margin), whose error adds to the difference's.
    On one seed with `n` known, a difference within two binomial standard errors is Undecided."""
    if not one_seed(r) or not n:
        return value > threshold
    margin = binomial_margin(value, n, against)
    difference = value - threshold
    if abs(difference) <= margin and margin > 0:
        return Undecided(difference, margin, int(n))
    return difference > 0


def binomial_margin(value: float, n: int, against: float | None = None) -> float:
    """Two binomial standard errors of an accuracy `value` on `n` test images (of its difference from `against`,
    another accuracy on the same images, when given): the only spread one seed has."""
    variance = value * (1 - value) + (against * (1 - against) if against is not None else 0.0)
    return 2 * math.sqrt(max(variance, 0.0) / n)


def below(r: dict, value: float, threshold: float, n: int | None, *, against: float | None = None) -> Verdict:
    """Whether `value` lies at or under `threshold` (the negation of `above`, with the same undecided band)."""
    got = above(r, value, threshold, n, against=against)
    return got if isinstance(got, Undecided) else not got


def both(*verdicts: Verdict) -> Verdict:
    """All hold: False if any fails, else Undecided if any is, else True."""
    if any(v is False for v in verdicts):
        return False
    return next((v for v in verdicts if isinstance(v, Undecided)), True)


def verdict_text(ok: Verdict) -> str:
    return str(ok) if isinstance(ok, Undecided) else "holds" if ok else "does not hold"


def one_seed(r: dict) -> bool:
    """Whether `r` holds a single seed's results as the whole run (not one seed checked beside others)."""
    return len(r.get("per_seed") or [None]) <= 1 and not r.get(PER_SEED)


def test_set_size(r: dict) -> int | None:
    """The number of test images the run's accuracies were measured on (None where not recorded)."""
    return next((e["test_images"] for e in r.get("accuracy", {}).values()
                 if isinstance(e, dict) and e.get("test_images")), None)


def with_seed_counts(check: Callable[[dict], Claims], r: dict) -> Claims:
    """`check(r)`'s rows, each verdict followed by "(on k of n seeds)" / "(holds on k of n seeds)" where the seeds
    split or all disagree with the mean's verdict. `r` is a preset's results (per-seed results under "per_seed")."""
    rows = check(r)
    seeds = r.get("per_seed") or []
    if len(seeds) < 2:
        return rows
    per_seed = [{row[0]: row[1] for row in check({**r, **seed, "per_seed": [seed], PER_SEED: True})}
                for seed in seeds]
    for row in rows:
        held = sum(verdicts.get(row[0]) == "holds" for verdicts in per_seed)
        if 0 < held < len(seeds) or (held == len(seeds)) != (row[1] == "holds"):
            row[1] += f" ({'on' if row[1] == 'holds' else 'holds on'} {held} of {len(seeds)} seeds)"
    return rows
