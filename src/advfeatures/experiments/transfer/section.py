"""The report's Figure 3: accuracy after training on D_det against the transfer rate of D's adversarial examples,
per architecture, with the linear fit the paper's claim reads."""

from __future__ import annotations

import math

import torch

from ...document import Block, Figures, Table, pct, plt


def transfer_architectures(r: dict) -> dict:
    """The per-architecture entries of results["transfer"] (every entry that has a transfer rate)."""
    return {k: v for k, v in r.get("transfer", {}).items() if isinstance(v, dict) and "transfer_rate" in v}


def transfer_fit(archs: dict) -> dict | None:
    pts = [(v["accuracy"], v["transfer_rate"]) for v in archs.values()
           if not math.isnan(v.get("transfer_rate", math.nan))]
    if len(pts) < 3:
        return None
    x = torch.tensor([p[0] for p in pts], dtype=torch.float64)
    y = torch.tensor([p[1] for p in pts], dtype=torch.float64)
    if x.std() == 0 or y.std() == 0:
        return None
    r = float(torch.corrcoef(torch.stack([x, y]))[0, 1])
    slope = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
    return {"r": r, "slope": slope, "intercept": float(y.mean() - slope * x.mean())}


def transfer_rows(r: dict) -> list[list[str]]:
    return [[k, pct(v["accuracy"]), pct(v["transfer_rate"]), pct(v.get("targeted_transfer_rate")),
             pct(v.get("clean_on_D"))] for k, v in transfer_architectures(r).items()]


def figure_transfer(r: dict, figures: Figures):
    archs = transfer_architectures(r)
    if len(archs) < 2:
        return None
    fig, ax = plt.subplots(figsize=(5, 4))
    for k, v in archs.items():
        ax.scatter(100 * v["accuracy"], 100 * v["transfer_rate"])
        ax.annotate(k, (100 * v["accuracy"], 100 * v["transfer_rate"]), fontsize=8)
    fit = transfer_fit(archs)
    if fit:
        xs = torch.linspace(min(100 * v["accuracy"] for v in archs.values()),
                            max(100 * v["accuracy"] for v in archs.values()), 10)
        ax.plot(xs, fit["slope"] * xs + 100 * fit["intercept"], "k--", lw=1, label=f"linear fit, r = {fit['r']:.2f}")
        ax.legend(fontsize=8)
    ax.set_xlabel("accuracy on the test set after training on D_det (%)")
    ax.set_ylabel("transfer rate of D's adversarial examples (%)")
    ax.set_title(f"{r['preset']}: cf. the paper's Figure 3", fontsize=9)
    return figures.save(fig, "transfer")


def blocks(r: dict, figures: Figures) -> list[Block]:
    if not r.get("transfer"):
        return []
    fit = transfer_fit(transfer_architectures(r))
    note = f"; linear fit r = {fit['r']:.2f}" if fit else ""
    title = f"Transferability (Figure 3): {r['transfer'].get('source', {}).get('architecture_set', '')}{note}"
    header = ["architecture", "accuracy after D_det", "transfer rate", "targeted transfer", "clean on D"]
    figure = figure_transfer(r, figures)
    return [Table(title, header, transfer_rows(r))] + ([figure] if figure else [])
