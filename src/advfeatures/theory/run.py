"""`run_theory`: the Section 4 experiments end to end (numbers + figures) in a few seconds on a CPU."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from advfeatures.errors import BadInputError

from .figures import alignment_figure, figure4, variance_figure
from .fit import fit_gaussian
from .gaussian import GaussianFit, anisotropy, fit_mle, robust_covariance, robust_lambda, sample_gaussian
from .vulnerability import (
    excess_adversarial_loss,
    excess_adversarial_loss_mc,
    gradient_alignment,
    isotropic_like,
    kantorovich_alignment,
    worst_case_alignment,
)

# The 2-D model of Figure 4 (the paper gives no numbers): x1 has a large variance, x2 a small one, and both
# carry signal. The standard classifier leans on x2, which an L2 adversary can move cheaply.
MU_STAR = (4.0, 2.0)
SIGMA_STAR = (25.0, 1.0)
FIGURE4_EPS = (1.0, 10.0)
FIGURES = {"figure4": "theory_figure4.png", "variances": "theory_robust_variances.png",
           "alignment": "theory_gradient_alignment.png"}


@contextmanager
def _single_thread() -> Iterator[None]:
    """These tensors are tiny: one intra-op thread avoids oversubscription when other jobs share the CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _floats(t: torch.Tensor) -> list[float]:
    return [float(v) for v in t.tolist()]


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b) / b).abs().max().item()


def _robust_fits(x, y, eps_values, seed: int) -> dict[float, dict[str, GaussianFit]]:
    return {eps: {adv: fit_gaussian(x, y, eps, adv, seed=seed) for adv in ("relaxed", "exact")}
            for eps in eps_values}


def _variance_table(sigma_star: torch.Tensor, mle: GaussianFit, fits: dict) -> list[dict]:
    """Per eps: Theorem 2 (on Sigma* and on the sample covariance) against both empirical fits."""
    rows = []
    for eps, pair in fits.items():
        on_truth = robust_covariance(sigma_star, eps)
        on_sample = robust_covariance(mle.sigma, eps)
        relaxed, exact = pair["relaxed"], pair["exact"]
        rows.append({
            "eps": eps,
            "lambda": robust_lambda(sigma_star, eps),
            "closed_form": _floats(on_truth),
            "closed_form_on_sample_covariance": _floats(on_sample),
            "relaxed": _floats(relaxed.sigma),
            "exact": _floats(exact.sigma),
            "relaxed_vs_closed_form_sample_rel_err": _relative_error(relaxed.sigma, on_sample),
            "relaxed_vs_closed_form_rel_err": _relative_error(relaxed.sigma, on_truth),
            "exact_vs_closed_form_sample_rel_gap": _floats((exact.sigma - on_sample) / on_sample),
            "mu_relaxed": _floats(relaxed.mu),
            "mu_exact": _floats(exact.mu),
            "fit_iterations": {"relaxed": relaxed.steps, "exact": exact.steps},
        })
    return rows


def _high_dimensional_check(seed: int, quick: bool) -> dict:
    """The same comparison in d = 10 (variances log-spaced over two decades)."""
    sigma_star = torch.logspace(-1, 1, 10, dtype=torch.float64)
    mu_star = torch.ones(10, dtype=torch.float64)
    x, y = sample_gaussian(mu_star, sigma_star, 2000 if quick else 4000, seed + 1)
    mle = fit_mle(x, y)
    eps_values = (1.0,) if quick else (0.3, 1.0, 3.0)
    rows = _variance_table(sigma_star, mle, _robust_fits(x, y, eps_values, seed))
    return {
        "sigma_star": _floats(sigma_star),
        "n": x.shape[0],
        "eps": list(eps_values),
        "relaxed_vs_closed_form_sample_max_rel_err": max(r["relaxed_vs_closed_form_sample_rel_err"]
                                                         for r in rows),
        "relaxed_vs_closed_form_max_rel_err": max(r["relaxed_vs_closed_form_rel_err"] for r in rows),
        "exact_vs_closed_form_sample_max_abs_rel_gap": max(abs(g) for r in rows
                                                           for g in r["exact_vs_closed_form_sample_rel_gap"]),
    }


def _theorem1(seed: int, quick: bool) -> dict:
    """Formula against Monte Carlo for the 2-D model and a 10-D one, at several penalties C."""
    cases = {"2d": torch.tensor(SIGMA_STAR, dtype=torch.float64),
             "10d": torch.logspace(-1, 1, 10, dtype=torch.float64)}
    factors = (1.5, 3.0) if quick else (1.2, 1.5, 2.0, 5.0)
    n = 5000 if quick else 20000
    result = {}
    for name, sigma in cases.items():
        rows = []
        for factor in factors:
            C = factor / sigma.min().item()
            mc = excess_adversarial_loss_mc(sigma, C, n=n, seed=seed)
            formula = excess_adversarial_loss(sigma, C)
            rows.append({"C": C, "C_times_sigma_min": factor, "formula": formula, "monte_carlo": mc.mean,
                         "stderr": mc.stderr, "z": (mc.mean - formula) / mc.stderr})
        result[name] = {"sigma_star": _floats(sigma), "n": n, "rows": rows}
    return result


def _isotropy() -> dict:
    """Theorem 1's second claim: at a fixed trace the excess loss is smallest for the isotropic covariance."""
    total = sum(SIGMA_STAR)
    family = [(total / 2 + t, total / 2 - t) for t in (0.0, 3.0, 6.0, 9.0, 12.0)]
    C = 1.5 / min(min(s) for s in family)
    rows = [{"sigma": list(s), "excess": excess_adversarial_loss(list(s), C)} for s in family]
    d10 = torch.logspace(-1, 1, 10, dtype=torch.float64)
    C10 = 1.5 / d10.min().item()
    return {
        "trace": total, "C": C, "family": rows,
        "increasing_with_anisotropy": all(a["excess"] < b["excess"]
                                          for a, b in zip(rows, rows[1:], strict=False)),
        "10d": {"trace": d10.sum().item(), "C": C10, "anisotropic": excess_adversarial_loss(d10, C10),
                "isotropic": excess_adversarial_loss(isotropic_like(d10), C10)},
    }


def _alignment_at(mu, sigma) -> float:
    """cos(mu, -y grad) measured with autograd at the class mean (equal at every x for these classifiers)."""
    mu = torch.as_tensor(mu, dtype=torch.float64)
    return gradient_alignment(mu[None, :], torch.ones(1, dtype=torch.float64), mu, sigma).min().item()


def _alignment(mle: GaussianFit, fits: dict, eps_line: list[float], seed: int) -> dict:
    standard = {"worst_case": worst_case_alignment(mle.sigma, seed=seed),
                "worst_case_closed_form": kantorovich_alignment(mle.sigma),
                "at_mu_star": _alignment_at(MU_STAR, mle.sigma)}
    line_sigmas = [robust_covariance(SIGMA_STAR, eps) for eps in eps_line]
    robust_line = {"worst_case": [kantorovich_alignment(s) for s in line_sigmas],
                   "at_mu_star": [_alignment_at(MU_STAR, s) for s in line_sigmas]}
    exact = [fits[eps]["exact"] for eps in fits]
    measured = {"worst_case": [worst_case_alignment(f.sigma, seed=seed) for f in exact],
                "worst_case_closed_form": [kantorovich_alignment(f.sigma) for f in exact],
                "at_mu_star": [_alignment_at(MU_STAR, f.sigma) for f in exact]}
    return {"eps": list(fits), "standard": standard, "robust_exact_fit": measured,
            "robust_closed_form": {"eps": eps_line, **robust_line}}


def run_theory(out_dir: Path, seed: int = 0, quick: bool = False) -> dict:
    """Run the Section 4 experiments, write three PNG figures into out_dir, return the numbers (JSON-ready).

    Keys: model, robust_variances (Theorem 2 closed form vs relaxed and exact empirical fits per eps),
    robust_variances_10d, anisotropy, theorem1 (formula vs Monte Carlo), isotropy (fixed-trace comparison),
    alignment (Theorem 3, standard vs robust), conventions, figures (file names relative to out_dir), seconds.
    quick=True uses fewer samples and radii (for tests). The work runs with one torch intra-op thread (the
    previous setting is restored afterwards): the tensors are tiny and extra threads only contend.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInputError(f"{out_dir} exists and is not a folder; pass a folder for the figures")
    out_dir.mkdir(parents=True, exist_ok=True)
    sigma_star = torch.tensor(SIGMA_STAR, dtype=torch.float64)
    eps_points = FIGURE4_EPS if quick else (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
    eps_line = [float(e) for e in torch.logspace(-2, 1.5, 15 if quick else 50).tolist()]
    with _single_thread():
        x, y = sample_gaussian(MU_STAR, sigma_star, 2000 if quick else 5000, seed)
        mle = fit_mle(x, y)
        fits = _robust_fits(x, y, eps_points, seed)
        table = _variance_table(sigma_star, mle, fits)
        line = torch.stack([robust_covariance(sigma_star, eps) for eps in eps_line])
        anisotropy_cf = [anisotropy(robust_covariance(sigma_star, eps)) for eps in (0.0, *eps_points)]
        result = {
            "model": {"mu_star": list(MU_STAR), "sigma_star": list(SIGMA_STAR), "n": x.shape[0], "seed": seed,
                      "mle": mle.as_dict()},
            "robust_variances": table,
            "robust_variances_10d": _high_dimensional_check(seed, quick),
            "anisotropy": {
                "eps": [0.0, *eps_points],
                "closed_form": anisotropy_cf,
                "relaxed": [mle.anisotropy()] + [fits[e]["relaxed"].anisotropy() for e in eps_points],
                "exact": [mle.anisotropy()] + [fits[e]["exact"].anisotropy() for e in eps_points],
                "closed_form_strictly_decreasing": all(a > b for a, b in zip(anisotropy_cf, anisotropy_cf[1:],
                                                                             strict=False)),
            },
            "theorem1": _theorem1(seed, quick),
            "isotropy": _isotropy(),
            "alignment": _alignment(mle, fits, eps_line, seed),
            "conventions": {
                "theorem2": "eps is the L2 radius; lambda solves sum_i Sigma*_ii/(lambda Sigma_r,ii - 1)^2 = "
                            "eps^2 with Sigma_r the robust covariance itself (relaxed adversary, expectation "
                            "under the true distribution)",
                "theorem1": "formula = E[l2(x+delta*) - l2(x)], l2 = 2 x NLL, delta* = argmax l2(x+delta) - "
                            "C ||delta||_2^2 (squared penalty); the literal linear penalty is unbounded",
            },
        }
        scatter = slice(0, 600)
        figure4(out_dir / FIGURES["figure4"], x[scatter], y[scatter], MU_STAR, SIGMA_STAR, mle.as_dict(),
                {eps: fits[eps]["exact"].as_dict() for eps in FIGURE4_EPS},
                {eps: _floats(robust_covariance(sigma_star, eps)) for eps in FIGURE4_EPS})
        variance_figure(out_dir / FIGURES["variances"], eps_line, line.tolist(), eps_points,
                        [fits[e]["relaxed"].sigma.tolist() for e in eps_points],
                        [fits[e]["exact"].sigma.tolist() for e in eps_points], SIGMA_STAR)
        alignment = result["alignment"]
        alignment_figure(out_dir / FIGURES["alignment"], eps_line, alignment["standard"],
                         alignment["robust_closed_form"], eps_points, alignment["robust_exact_fit"])
    result["figures"] = list(FIGURES.values())
    result["seconds"] = time.perf_counter() - start
    _check_finite(result)
    return result


def _check_finite(obj, where: str = "result") -> None:
    """Fail loudly rather than hand NaN or inf to JSON."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            _check_finite(value, f"{where}.{key}")
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            _check_finite(value, f"{where}[{i}]")
    elif isinstance(obj, float) and not math.isfinite(obj):
        raise RuntimeError(f"{where} is not finite ({obj}); this is a bug in advfeatures.theory")
