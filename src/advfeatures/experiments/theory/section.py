"""The report's Section 4 tables: the theory stage's numbers (stages.py, from the library theory/run.py) as one
table per theorem.

Each table puts the paper's closed form beside what the stage measured (a Monte Carlo estimate, or a robust maximum
likelihood fit by gradient descent against the relaxed and the exact adversary), so a reader sees at a glance
whether the theorem's prediction and the experiment agree, and the sentence above it says what to look for.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ...document import Block, Figure, Heading, Table, Text

Section = tuple[str, str, list[str], list[list[str]]]  # title, what to look for, header, rows


def _num(v, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}g}"


def _vector(values: Sequence[float], digits: int = 4) -> str:
    return "(" + ", ".join(_num(v, digits) for v in values) + ")"


def _does(flag: bool | None) -> str:
    return "" if flag is None else f" (here it {'does' if flag else 'does NOT'})"


def theorem1_section(t: dict) -> Section:
    rows, z = [], []
    for setting, entry in t.get("theorem1", {}).items():
        sigma = entry.get("sigma_star", [])
        name = f"{setting}, Sigma* {_vector(sigma, 3)}" if len(sigma) <= 3 else (
            f"{setting}, Sigma* {_num(min(sigma), 3)} ... {_num(max(sigma), 3)}")
        for r in entry.get("rows", []):
            z.append(abs(r["z"]))
            rows.append([name, _num(r["C"], 3), _num(r["C_times_sigma_min"], 3), _num(r["formula"]),
                         f"{_num(r['monte_carlo'])} ± {_num(r['stderr'], 2)}", f"{r['z']:+.2f}"])
    what = ("Theorem 1: the standard MLE's excess loss under the Lagrangian adversary (penalty C), the paper's closed "
            "form tr[(I + (C Sigma* - I)^-1)^2] - d against a Monte Carlo estimate; they agree where |z| stays below "
            "about 2" + (_does(max(z) < 2) if z else "") + ".")
    return ("Theorem 1: vulnerability from metric misalignment", what,
            ["setting", "C", "C x sigma_min", "closed form", "Monte Carlo", "z"], rows)


def isotropy_section(t: dict) -> Section:
    iso = t.get("isotropy", {})
    rows = [[_vector(f["sigma"], 3), _num(iso.get("C"), 3), _num(f["excess"])] for f in iso.get("family", [])]
    high = iso.get("10d")
    if high:
        rows.append([f"10-d anisotropic (trace {_num(high['trace'], 4)})", _num(high["C"], 3),
                     _num(high["anisotropic"])])
        rows.append(["10-d isotropic (same trace)", _num(high["C"], 3), _num(high["isotropic"])])
    what = (f"Theorem 1's corollary: at a fixed trace ({_num(iso.get('trace'), 3)} in 2-d) the excess loss is smallest "
            "for the isotropic Sigma*, so it should rise down the 2-d rows as the variances spread"
            + _does(iso.get("increasing_with_anisotropy")) + ".")
    return ("Theorem 1: isotropic data is the least vulnerable", what, ["Sigma* diagonal", "C", "excess loss"], rows)


def theorem2_section(t: dict) -> Section:
    aniso = t.get("anisotropy", {})
    columns = zip(aniso.get("closed_form", []), aniso.get("exact", []), strict=True)
    ratio = dict(zip(aniso.get("eps", []), columns, strict=True))
    rows = []
    mle = t.get("model", {}).get("mle")
    if mle and 0.0 in ratio:
        cf, ex = ratio[0.0]
        rows.append(["0 (standard MLE)", "-", _vector(t["model"]["sigma_star"]), "-", _vector(mle["sigma"]), "-",
                     f"{_num(cf, 3)} / {_num(ex, 3)}"])
    for r in t.get("robust_variances", []):
        cf, ex = ratio.get(r["eps"], (None, None))
        rows.append([_num(r["eps"], 3), _num(r["lambda"], 4), _vector(r["closed_form"]),
                     _vector(r["closed_form_on_sample_covariance"]), _vector(r["relaxed"]), _vector(r["exact"]),
                     f"{_num(cf, 3)} / {_num(ex, 3)}"])
    high = t.get("robust_variances_10d")
    tail = ""
    if high:
        tail = (f" In 10-d (eps {', '.join(_num(e, 3) for e in high['eps'])}) the relaxed fit matches the closed form "
                f"on the sample covariance to {_num(high['relaxed_vs_closed_form_sample_max_rel_err'], 2)} (max "
                f"relative error) and the exact adversary's fit stays within "
                f"{100 * high['exact_vs_closed_form_sample_max_abs_rel_gap']:.1f}% of it.")
    what = ("Theorem 2: the robust MLE's variances blend Sigma* with the identity as eps grows (lambda falls), so the "
            "anisotropy sigma_max / sigma_min should fall toward 1"
            + _does(aniso.get("closed_form_strictly_decreasing")) + ". The closed form is evaluated on the true "
            "Sigma* and on the sample's covariance; the fits are gradient descent against the proof's relaxed "
            "adversary (which should match the sample closed form) and against the exact, projected one." + tail)
    return ("Theorem 2: robust learning blends the covariance toward the identity", what,
            ["eps", "lambda", "closed form (Sigma*)", "closed form (sample)", "relaxed fit", "exact-adversary fit",
             "anisotropy: closed form / exact fit"], rows)


def theorem3_section(t: dict) -> Section:
    a = t.get("alignment", {})
    std, robust = a.get("standard", {}), a.get("robust_exact_fit", {})
    rows = []
    if std:
        rows.append(["0 (standard MLE)", _num(std.get("worst_case")), _num(std.get("worst_case_closed_form")),
                     _num(std.get("at_mu_star"))])
    for i, eps in enumerate(a.get("eps", [])):
        rows.append([_num(eps, 3), _num(robust["worst_case"][i]), _num(robust["worst_case_closed_form"][i]),
                     _num(robust["at_mu_star"][i])])
    worst = robust.get("worst_case", [])
    holds = (all(c > std["worst_case"] for c in worst) and all(a < b for a, b in zip(worst, worst[1:], strict=False))
             if std and worst else None)
    what = ("Theorem 3: the cosine between mu and the classifier's input gradient, worst case over inputs (a larger "
            "cosine is a smaller angle), for the robust MLE fitted against the exact adversary. It should exceed the "
            "standard MLE's at every eps and rise toward 1 as eps grows" + _does(holds) + ".")
    return ("Theorem 3: robust models' gradients align with the data's mean", what,
            ["eps", "worst-case cosine", "closed form", "cosine at mu*"], rows)


def theory_sections(t: dict) -> list[Section]:
    """One (title, what to look for, header, rows) per theorem present in the theory stage's result."""
    makers = (("theorem1", theorem1_section), ("isotropy", isotropy_section),
              ("robust_variances", theorem2_section), ("alignment", theorem3_section))
    return [make(t) for key, make in makers if t.get(key)]


def conventions(t: dict) -> list[str]:
    """The stage's stated conventions (how eps, lambda and the adversary are defined), one line each."""
    return [f"{name}: {text}." for name, text in t.get("conventions", {}).items()]


def blocks(t: dict, out: Path) -> list[Block]:
    """The report's Section 4: a table per theorem (what to look for above it), the conventions, the figures (PNGs
    the theory stage wrote under `out`/theory)."""
    found: list[Block] = [Heading("Section 4 theory", 2)]
    found += [Table(title, header, rows, note=what) for title, what, header, rows in theory_sections(t)]
    notes = conventions(t)
    if notes:
        found.append(Text("Conventions. " + " ".join(notes)))
    found += [Figure(out / "theory" / name, f"theory/{name}") for name in t.get("figures", [])]
    return found
