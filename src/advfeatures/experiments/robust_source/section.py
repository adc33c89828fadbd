"""The report's Table 9: D_rand / D_det built against the standard model (Figure 2's) and the robust one."""

from __future__ import annotations

from ...document import Block, Table, pct

PAPER = {"D_rand": "63.3 / 25.2", "D_det": "43.7 / 5.8"}  # the paper's Table 9, CIFAR-10 (standard / robust source)


def table9_rows(r: dict) -> list[list[str]]:
    rs, a = r.get("robust_source", {}), r["accuracy"]
    return [[n, pct(a.get(n, {}).get("clean")), pct(rs.get(n, {}).get("clean")), paper]
            for n, paper in PAPER.items() if n in rs]


def blocks(r: dict, figures=None) -> list[Block]:
    if not r.get("robust_source"):
        return []
    return [Table("Table 9: relabelled sets built against the robust model",
                  ["set", "from standard model", "from robust model", "paper (std / robust)"], table9_rows(r))]
