"""results.md, figures/*.png and a self-contained report.html (images embedded) from the results dicts.

Every statement in the "claims" tables is computed from the measured numbers, never written by hand.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .io import atomic_path, write_text_atomic  # noqa: E402
from .report_followups import followup_sections  # noqa: E402
from .report_theory import conventions, theory_sections  # noqa: E402
from .stages.given_sources import describe_sources  # noqa: E402

SETS = ("D", "D_adv", "D_R", "D_NR", "D_rand", "D_det", "D_det_unleaked")
DESCRIPTIONS = {
    "D": "standard training on the original data",
    "D_adv": "adversarial training on the original data",
    "D_R": "standard training on D_R (inverted through the robust model)",
    "D_NR": "standard training on D_NR (inverted through the standard model)",
    "D_rand": "standard training on D_rand (targeted adversarial examples, random target as label)",
    "D_det": "standard training on D_det (targeted adversarial examples, label y+1)",
    "D_det_unleaked": "D_det restricted to images a robust model still reads as their original class",
}


def _pct(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def _save_fig(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


# ---------------------------------------------------------------- tables


def accuracy_rows(r: dict) -> list[list[str]]:
    paper = r.get("settings", {}).get("paper", {})
    rows = []
    for name in SETS:
        e = r["accuracy"].get(name)
        if not e or "clean" not in e:
            continue
        p = paper.get(name, {})
        robust = _pct(e["robust"]) + _spread(e, "robust_std")
        if "autoattack" in e:
            robust += f" (AutoAttack {_pct(e['autoattack'])})"
        source = r.get("sources", {}).get(name, {})
        what = DESCRIPTIONS.get(name, "")
        if source.get("origin") == "given":
            what = f"given ({source['flag']}, sha256 {source['sha256_short']}), not trained here: evaluated only"
        rows.append([name, _pct(e["clean"]) + _spread(e, "clean_std"), robust,
                     _pct(p.get("clean")), _pct(p.get("robust")), what])
    return rows


def _spread(entry: dict, key: str) -> str:
    return f" ± {100 * entry[key]:.1f}" if entry.get(key) else ""


def claims(r: dict) -> list[list[str]]:
    """The paper's qualitative claims, each checked against this run's numbers."""
    a = r["accuracy"]
    chance = 1.0 / r.get("num_classes", 10)
    get = lambda n, k: a.get(n, {}).get(k)  # noqa: E731
    out = []

    def check(claim, ok, evidence):
        if ok is None:
            return
        out.append([claim, "holds" if ok else "does not hold", evidence])

    given = {n for n, s in r.get("sources", {}).items() if s.get("origin") == "given"}
    if get("D", "robust") is not None:
        check("the given standard model is not robust (its training was not run here)" if "D" in given
              else "standard models are not robust", get("D", "robust") < 0.1,
              f"D: {_pct(get('D', 'clean'))}% clean, {_pct(get('D', 'robust'))}% robust")
    if get("D_adv", "robust") is not None:
        check("the given robust model is more robust than D (adversarial training was not run here)"
              if "D_adv" in given else "adversarial training buys robustness",
              get("D_adv", "robust") > get("D", "robust") + 0.1,
              f"D_adv robust {_pct(get('D_adv', 'robust'))}% vs D {_pct(get('D', 'robust'))}%")
    if get("D_R", "robust") is not None:
        check("robustness is in the data: standard training on D_R gives robust models",
              get("D_R", "robust") > get("D", "robust") + 0.1,
              f"D_R robust {_pct(get('D_R', 'robust'))}% vs D {_pct(get('D', 'robust'))}%")
        check("D_R beats D_NR in robustness", get("D_R", "robust") > get("D_NR", "robust") + 0.05,
              f"D_R {_pct(get('D_R', 'robust'))}% vs D_NR {_pct(get('D_NR', 'robust'))}%")
    if get("D_NR", "clean") is not None:
        check("D_NR generalises but is not robust", get("D_NR", "clean") > 0.5 and get("D_NR", "robust") < 0.1,
              f"D_NR {_pct(get('D_NR', 'clean'))}% clean, {_pct(get('D_NR', 'robust'))}% robust")
    for n in ("D_rand", "D_det", "D_det_unleaked"):
        if get(n, "clean") is not None:
            check(f"non-robust features alone generalise ({n} far above chance)", get(n, "clean") > 2 * chance,
                  f"{n}: {_pct(get(n, 'clean'))}% on the real test set (chance {_pct(chance)}%)")
    cons = r.get("construction", {}).get("D_det", {})
    if "robust_model_reads_original" in cons:
        check("D_det images still look like their original class to a robust model",
              cons["robust_model_reads_original"] > cons.get("robust_model_reads_target", 0),
              f"robust model reads original {_pct(cons['robust_model_reads_original'])}%, target "
              f"{_pct(cons.get('robust_model_reads_target'))}%")
    t = transfer_architectures(r)
    fit = transfer_fit(t)
    if fit:
        check("transfer rate grows with accuracy on D_det (Figure 3)", fit["r"] > 0.5,
              f"Pearson r = {fit['r']:.2f} over {len(t)} architectures")
    return out


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


def construction_rows(r: dict) -> list[list[str]]:
    rows = []
    for name, d in r.get("construction", {}).items():
        if "attack_success" in d:
            rows.append([name, f"attack success {_pct(d['attack_success'])}%; mean perturbation L2 "
                         f"{d['mean_perturbation_norm']:.3f}; robust model reads original "
                         f"{_pct(d['robust_model_reads_original'])}% / target {_pct(d['robust_model_reads_target'])}%"])
        elif "relative_representation_error_mean" in d:
            rows.append([name, f"relative representation error {d['relative_representation_error_mean']:.3f}; "
                         f"mean distance to original {d['distance_to_original_mean']:.2f}; source model "
                         f"predicts the label {_pct(d['model_predicts_label'])}%"])
        else:
            rows.append([name, ", ".join(f"{k}: {v}" for k, v in d.items())])
    return rows


def audit_rows(r: dict) -> list[list[str]]:
    rows = []
    for name, a in (r.get("audit") or {}).items():
        if not a:
            continue
        rows.append([name, _pct(a["robust_agrees_label"]), _pct(a["nonrobust_agrees_label"]),
                     _pct(a.get("robust_agrees_original")), _pct(a.get("nonrobust_agrees_original")),
                     f"{a['robust_of_label']:.2f}", f"{a['nonrobust_of_label']:.2f}"])
    return rows


AUDIT_HEADER = ["set", "robust pattern = label %", "non-robust pattern = label %", "robust = original %",
                "non-robust = original %", "robust evidence of label", "non-robust evidence of label"]


def transfer_rows(r: dict) -> list[list[str]]:
    return [[k, _pct(v["accuracy"]), _pct(v["transfer_rate"]), _pct(v.get("targeted_transfer_rate")),
             _pct(v.get("clean_on_D"))] for k, v in transfer_architectures(r).items()]


def table9_rows(r: dict) -> list[list[str]]:
    rs, a = r.get("robust_source", {}), r["accuracy"]
    return [[n, _pct(a.get(n, {}).get("clean")), _pct(rs.get(n, {}).get("clean")), paper]
            for n, paper in (("D_rand", "63.3 / 25.2"), ("D_det", "43.7 / 5.8")) if n in rs]


def attack_check_rows(r: dict) -> list[list[str]]:
    """One row per checked model; flagged when, in any seed, the default reads more than a point above the check."""
    from .stages.attack_check import TOLERANCE, flagged

    seeds = [s.get("attack_check", {}) for s in r.get("per_seed", [])] or [r["attack_check"]]
    bad = {name for check in seeds for name in flagged(check)}
    rows = []
    for name, m in r["attack_check"]["models"].items():
        verdict = f"FLAGGED: default evaluation too weak (> {100 * TOLERANCE:g} point above)" if name in bad else "ok"
        rows.append([name, _pct(m["default"]), _pct(m["check"]), f"{100 * m['gap']:+.1f}", verdict])
    return rows


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "_none_\n"
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "<p><em>none</em></p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# ---------------------------------------------------------------- figures


def figure_accuracy(r: dict, path: Path) -> None:
    names = [n for n in SETS if "clean" in r["accuracy"].get(n, {})]
    clean = [r["accuracy"][n]["clean"] for n in names]
    robust = [r["accuracy"][n]["robust"] for n in names]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], clean, 0.4, label="clean")
    ax.bar([x + 0.2 for x in xs], robust, 0.4, label=f"robust (L2 eps {r['threat_model']['eps']:g})")
    ax.set_xticks(list(xs), names, rotation=20)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy on the original test set")
    ax.set_title(f"{r['preset']}: standard training on each set (cf. the paper's Figure 2)")
    ax.legend()
    _save_fig(fig, path)


def figure_curves(r: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for n in SETS:
        e = r["accuracy"].get(n, {})
        if "curve" not in e:
            continue
        eps = sorted(e["curve"], key=float)
        ax.plot([float(x) for x in eps], [e["curve"][x] for x in eps], marker="o", label=n)
    ax.set_xlabel(f"{r['threat_model']['norm'].upper()} eps")
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"{r['preset']}: robust accuracy vs eps")
    ax.legend(fontsize=8)
    _save_fig(fig, path)


def figure_samples(preset_dir: Path, path: Path, n: int = 8) -> bool:
    from .data import load_dataset_file

    rows = []
    for name in ("D_R", "D_NR", "D_rand", "D_det"):
        f = preset_dir / "datasets" / f"{name}.safetensors"
        if f.exists():
            d = load_dataset_file(f)
            rows.append((name, d["images"][:n], d["labels"][:n]))
    if not rows:
        return False
    originals = _originals(preset_dir, n)
    if originals is not None:
        rows.insert(0, ("original", originals[0], originals[1]))
    fig, axes = plt.subplots(len(rows), n, figsize=(1.3 * n, 1.45 * len(rows)))
    for i, (name, images, labels) in enumerate(rows):
        for j in range(min(n, images.shape[0])):
            ax = axes[i, j]
            img = images[j].permute(1, 2, 0).squeeze(-1).numpy()
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"y={int(labels[j])}", fontsize=7)
            if j == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.suptitle("the same training images in each constructed set (label shown is the one trained on)", fontsize=9)
    _save_fig(fig, path)
    return True


def _originals(preset_dir: Path, n: int):
    import json

    from .data import load_dataset

    try:
        settings = json.loads((preset_dir / "results.json").read_text())["settings"]
        ds = load_dataset(settings["dataset"], "train")
        return ds.images[:n], ds.labels[:n]
    except Exception:  # originals need the data on disk; the grid still shows the constructed sets
        return None


def figure_audit(r: dict, path: Path) -> bool:
    rows = {k: v for k, v in (r.get("audit") or {}).items() if v}
    if not rows:
        return False
    names = list(rows)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [rows[n]["robust_agrees_label"] for n in names], 0.4, label="robust pattern")
    ax.bar([x + 0.2 for x in xs], [rows[n]["nonrobust_agrees_label"] for n in names], 0.4, label="non-robust pattern")
    ax.axhline(1.0 / r.get("num_classes", 10), color="grey", ls=":", lw=1, label="chance")
    ax.set_xticks(list(xs), names)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("fraction whose planted pattern = label")
    ax.set_title("feature audit: which planted feature carries each set's labels")
    ax.legend(fontsize=8)
    _save_fig(fig, path)
    return True


def figure_transfer(r: dict, path: Path) -> bool:
    archs = transfer_architectures(r)
    if len(archs) < 2:
        return False
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
    _save_fig(fig, path)
    return True


# ---------------------------------------------------------------- the report


def write_report(out: Path, all_results: dict[str, dict], theory: dict | None) -> None:
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    md = ["# advfeatures: reproduction report", "",
          "Accuracies are on each data set's original test set, in percent. Paper numbers: CIFAR-10, ResNet-50 "
          "(see PAPER.md); ours are on much smaller data, so compare the pattern, not the values.", ""]
    body = []
    for name, r in all_results.items():
        figs = []
        fa, fc = figures / f"{name}_accuracy.png", figures / f"{name}_curves.png"
        figure_accuracy(r, fa)
        figure_curves(r, fc)
        figs += [fa, fc]
        optional = (
            (figures / f"{name}_samples.png", figure_samples(out / name, figures / f"{name}_samples.png")),
            (figures / f"{name}_audit.png", figure_audit(r, figures / f"{name}_audit.png")),
            (figures / f"{name}_transfer.png", figure_transfer(r, figures / f"{name}_transfer.png")),
        )
        figs += [f for f, made in optional if made]
        sections = _sections(r)
        md.append(f"## {name}\n")
        md.append(f"Threat model: {r['threat_model']['norm'].upper()} eps {r['threat_model']['eps']:g}; "
                  f"seeds: {len(r['seeds'])}; total {r['seconds']['total']:.0f}s.\n")
        body.append(f"<h2>{html.escape(name)}</h2><p>Threat model: {r['threat_model']['norm'].upper()} eps "
                    f"{r['threat_model']['eps']:g}; seeds: {len(r['seeds'])}; total {r['seconds']['total']:.0f}s.</p>")
        sources = describe_sources(r.get("sources", {}))
        if sources:
            md.append(sources + "\n")
            body.append(f"<p>{html.escape(sources)}</p>")
        for title, header, rows in sections:
            md += [f"### {title}\n", _md_table(header, rows)]
            body.append(f"<h3>{html.escape(title)}</h3>{_html_table(header, rows)}")
        md += [f"![{f.stem}](figures/{f.name})\n" for f in figs]
        body += [_img(f) for f in figs]
    if theory:
        md.append("## Section 4 theory\n")
        body.append("<h2>Section 4 theory</h2>")
        for title, what, header, rows in theory_sections(theory):
            md += [f"### {title}\n", what + "\n", _md_table(header, rows)]
            body.append(f"<h3>{html.escape(title)}</h3><p>{html.escape(what)}</p>{_html_table(header, rows)}")
        notes = conventions(theory)
        if notes:
            md += ["Conventions. " + " ".join(notes) + "\n"]
            body.append(f"<p>Conventions. {html.escape(' '.join(notes))}</p>")
        for fname in theory.get("figures", []):
            md.append(f"![{fname}](theory/{fname})\n")
            body.append(_img(out / "theory" / fname))
    write_text_atomic(out / "results.md", "\n".join(md))
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}table{border-collapse:collapse;"
             "margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}img{max-width:100%;"
             "display:block;margin:1em 0}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>advfeatures report</title><style>{style}"
            "</style></head><body><h1>advfeatures: reproduction report</h1><p>" + html.escape(md[2]) + "</p>"
            + "".join(body) + "</body></html>")
    write_text_atomic(out / "report.html", page)


def _sections(r: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    sections = [
        ("Accuracy (%)", ["training set", "clean", f"robust @ eps {r['threat_model']['eps']:g}", "paper clean",
                          "paper robust", "what"], accuracy_rows(r)),
        ("The paper's claims, checked on this data", ["claim", "verdict", "evidence"], claims(r)),
        ("Construction diagnostics", ["set", "diagnostics"], construction_rows(r)),
    ]
    if r.get("audit"):
        sections.append(("Feature audit (planted ground truth)", AUDIT_HEADER, audit_rows(r)))
    if r.get("attack_check", {}).get("models"):
        ac = r["attack_check"]
        title = f"Attack check on {ac['images']:g} test images: {ac['attack']}"
        sections.append((title, ["model", "default evaluation", "check", "default - check (points)", "verdict"],
                         attack_check_rows(r)))
    if r.get("transfer"):
        fit = transfer_fit(transfer_architectures(r))
        note = f"; linear fit r = {fit['r']:.2f}" if fit else ""
        title = f"Transferability (Figure 3): {r['transfer'].get('source', {}).get('architecture_set', '')}{note}"
        header = ["architecture", "accuracy after D_det", "transfer rate", "targeted transfer", "clean on D"]
        sections.append((title, header, transfer_rows(r)))
    if r.get("robust_source"):
        sections.append(("Table 9: relabelled sets built against the robust model",
                         ["set", "from standard model", "from robust model", "paper (std / robust)"], table9_rows(r)))
    return sections + followup_sections(r)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<img alt='{html.escape(path.stem)}' src='data:image/png;base64,{data}'>"
