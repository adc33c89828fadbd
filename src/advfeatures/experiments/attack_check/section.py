"""The report's attack-check table: the default evaluation beside the independent check, flagged where weaker."""

from __future__ import annotations

from ...document import Block, Table, pct
from . import TOLERANCE, flagged


def attack_check_rows(r: dict) -> list[list[str]]:
    """One row per checked model; flagged when, in any seed, the default reads more than a point above the check."""
    seeds = [s.get("attack_check", {}) for s in r.get("per_seed", [])] or [r["attack_check"]]
    bad = {name for check in seeds for name in flagged(check)}
    rows = []
    for name, m in r["attack_check"]["models"].items():
        verdict = f"FLAGGED: default evaluation too weak (> {100 * TOLERANCE:g} point above)" if name in bad else "ok"
        rows.append([name, pct(m["default"]), pct(m["check"]), f"{100 * m['gap']:+.1f}", verdict])
    return rows


def blocks(r: dict, figures=None) -> list[Block]:
    ac = r.get("attack_check", {})
    if not ac.get("models"):
        return []
    n = int(ac["images"])
    note = (f"Both attacks on the same {n} test images (the first of the test set): the default column is our "
            f"evaluation's result on exactly these images. One image is {100 / n:.2g} "
            f"point{'' if n == 100 else 's'}, so a gap of a point or more shows as {max(1, round(n / 100)):d} "
            f"image{'' if round(n / 100) <= 1 else 's'} or more.")
    return [Table(f"Attack check on {n} test images: {ac['attack']}",
                  ["model", "default evaluation", "check", "default - check (points)", "verdict"],
                  attack_check_rows(r), note=note)]
