"""The report's main tables and figures (the paper's Figure 2 / Table 1): accuracy of standard training on each set,
the paper's claims checked against this run's numbers, the construction diagnostics, the feature audit, and the
accuracy, eps-curve, sample-image and audit figures.

Every statement in the claims table is computed from the measured numbers, never written by hand.
"""

from __future__ import annotations

from ...document import Block, Figures, Table, pct, plt
from ..sources.section import given_names
from ..transfer.section import transfer_architectures, transfer_fit
from ..verdicts import above, below, both, test_set_size, verdict_text, with_seed_counts

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


def accuracy_rows(r: dict) -> list[list[str]]:
    paper = r.get("settings", {}).get("paper", {})
    rows = []
    for name in SETS:
        e = r["accuracy"].get(name)
        if not e or "clean" not in e:
            continue
        p = paper.get(name, {})
        robust = pct(e["robust"]) + _spread(e, "robust_std")
        if "autoattack" in e:
            robust += f" (AutoAttack {pct(e['autoattack'])})"
        source = r.get("sources", {}).get(name, {})
        what = DESCRIPTIONS.get(name, "")
        if source.get("origin") == "given":
            what = f"given ({source['flag']}, sha256 {source['sha256_short']}), not trained here: evaluated only"
        rows.append([name, pct(e["clean"]) + _spread(e, "clean_std"), robust,
                     pct(p.get("clean")), pct(p.get("robust")), what])
    return rows


def _spread(entry: dict, key: str) -> str:
    return f" ± {100 * entry[key]:.1f}" if entry.get(key) else ""


def claims(r: dict) -> list[list[str]]:
    """The paper's qualitative claims, each checked against this run's numbers (the seeds' means, with the seed count
    where seeds disagree; on one seed, "undecided" within the test set's binomial error: verdicts.py)."""
    return with_seed_counts(_claims, r)


def _claims(r: dict) -> list[list[str]]:
    a = r["accuracy"]
    chance = 1.0 / r.get("num_classes", 10)
    get = lambda n, k: a.get(n, {}).get(k)  # noqa: E731
    n = test_set_size(r)
    out = []

    def check(claim, ok, evidence):
        if ok is None:
            return
        out.append([claim, verdict_text(ok), evidence])

    def gains(name, key, over, by):  # name's accuracy above over's by more than `by`
        return above(r, get(name, key), get(over, key) + by, n, against=get(over, key))

    given = given_names(r)
    if get("D", "robust") is not None:
        check("the given standard model is not robust (its training was not run here)" if "D" in given
              else "standard models are not robust", below(r, get("D", "robust"), 0.1, n),
              f"D: {pct(get('D', 'clean'))}% clean, {pct(get('D', 'robust'))}% robust")
    if get("D_adv", "robust") is not None:
        check("the given robust model is more robust than D (adversarial training was not run here)"
              if "D_adv" in given else "adversarial training buys robustness", gains("D_adv", "robust", "D", 0.1),
              f"D_adv robust {pct(get('D_adv', 'robust'))}% vs D {pct(get('D', 'robust'))}%")
    if get("D_R", "robust") is not None:
        check("robustness is in the data: standard training on D_R gives robust models",
              gains("D_R", "robust", "D", 0.1),
              f"D_R robust {pct(get('D_R', 'robust'))}% vs D {pct(get('D', 'robust'))}%")
        check("D_R beats D_NR in robustness", gains("D_R", "robust", "D_NR", 0.05),
              f"D_R {pct(get('D_R', 'robust'))}% vs D_NR {pct(get('D_NR', 'robust'))}%")
    if get("D_NR", "clean") is not None:
        check("D_NR generalises but is not robust",
              both(above(r, get("D_NR", "clean"), 0.5, n), below(r, get("D_NR", "robust"), 0.1, n)),
              f"D_NR {pct(get('D_NR', 'clean'))}% clean, {pct(get('D_NR', 'robust'))}% robust")
    for name in ("D_rand", "D_det", "D_det_unleaked"):
        if get(name, "clean") is not None:
            check(f"non-robust features alone generalise ({name} far above chance)",
                  above(r, get(name, "clean"), 2 * chance, n),
                  f"{name}: {pct(get(name, 'clean'))}% on the real test set (chance {pct(chance)}%)")
    cons = r.get("construction", {}).get("D_det", {})
    if "robust_model_reads_original" in cons:
        check("D_det images still look like their original class to a robust model",
              cons["robust_model_reads_original"] > cons.get("robust_model_reads_target", 0),
              f"robust model reads original {pct(cons['robust_model_reads_original'])}%, target "
              f"{pct(cons.get('robust_model_reads_target'))}%")
    t = transfer_architectures(r)
    fit = transfer_fit(t)
    if fit:
        check("transfer rate grows with accuracy on D_det (Figure 3)", fit["r"] > 0.5,
              f"Pearson r = {fit['r']:.2f} over {len(t)} architectures")
    return out


def construction_rows(r: dict) -> list[list[str]]:
    rows = []
    for name, d in r.get("construction", {}).items():
        if "attack_success" in d:
            rows.append([name, f"attack success {pct(d['attack_success'])}%; mean perturbation L2 "
                         f"{d['mean_perturbation_norm']:.3f}; robust model reads original "
                         f"{pct(d['robust_model_reads_original'])}% / target {pct(d['robust_model_reads_target'])}%"])
        elif "relative_representation_error_mean" in d:
            rows.append([name, f"relative representation error {d['relative_representation_error_mean']:.3f}; "
                         f"mean distance to original {d['distance_to_original_mean']:.2f}; source model "
                         f"predicts the label {pct(d['model_predicts_label'])}%"])
        else:
            rows.append([name, ", ".join(f"{k}: {v}" for k, v in d.items())])
    return rows


def audit_rows(r: dict) -> list[list[str]]:
    rows = []
    for name, a in (r.get("audit") or {}).items():
        if not a:
            continue
        rows.append([name, pct(a["robust_agrees_label"]), pct(a["nonrobust_agrees_label"]),
                     pct(a.get("robust_agrees_original")), pct(a.get("nonrobust_agrees_original")),
                     f"{a['robust_of_label']:.2f}", f"{a['nonrobust_of_label']:.2f}"])
    return rows


AUDIT_HEADER = ["set", "robust pattern = label %", "non-robust pattern = label %", "robust = original %",
                "non-robust = original %", "robust evidence of label", "non-robust evidence of label"]


def figure_accuracy(r: dict, figures: Figures):
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
    return figures.save(fig, "accuracy")


def figure_curves(r: dict, figures: Figures):
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
    return figures.save(fig, "curves")


def figure_samples(r: dict, figures: Figures, n: int = 8):
    from ...data import load_dataset_file

    preset_dir = figures.out / r["preset"]
    rows = []
    for name in ("D_R", "D_NR", "D_rand", "D_det"):
        f = preset_dir / "datasets" / f"{name}.safetensors"
        if f.exists():
            d = load_dataset_file(f)
            rows.append((name, d["images"][:n], d["labels"][:n]))
    if not rows:
        return None
    originals = _originals(r, n)
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
    return figures.save(fig, "samples")


def _originals(r: dict, n: int):
    from ...data import load_dataset

    try:
        settings = r["settings"]
        ds = load_dataset(settings["dataset"], "train")
        return ds.images[:n], ds.labels[:n]
    except Exception:  # originals need the data on disk; the grid still shows the constructed sets
        return None


def figure_audit(r: dict, figures: Figures):
    rows = {k: v for k, v in (r.get("audit") or {}).items() if v}
    if not rows:
        return None
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
    return figures.save(fig, "audit")


def blocks(r: dict, figures: Figures) -> list[Block]:
    eps = r["threat_model"]["eps"]
    found: list[Block] = [
        Table("Accuracy (%)", ["training set", "clean", f"robust @ eps {eps:g}", "paper clean", "paper robust",
                               "what"], accuracy_rows(r)),
        Table("The paper's claims, checked on this data", ["claim", "verdict", "evidence"], claims(r)),
        Table("Construction diagnostics", ["set", "diagnostics"], construction_rows(r)),
    ]
    if r.get("audit"):
        found.append(Table("Feature audit (planted ground truth)", AUDIT_HEADER, audit_rows(r)))
    made = (figure_accuracy(r, figures), figure_curves(r, figures), figure_samples(r, figures),
            figure_audit(r, figures))
    return found + [f for f in made if f is not None]
