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
    return [Table(f"Attack check on {ac['images']:g} test images: {ac['attack']}",
                  ["model", "default evaluation", "check", "default - check (points)", "verdict"],
                  attack_check_rows(r))]
