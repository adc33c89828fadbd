"""Figures for Section 4 (matplotlib, Agg backend, PNG written atomically).

Each function takes plain numbers (tensors or lists) and a target path, draws one figure and writes it to a
temporary file in the same folder before renaming it into place, so a reader never sees half a PNG.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
from matplotlib.patches import Ellipse  # noqa: E402
from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter  # noqa: E402

X1_LIMITS = (-20.0, 20.0)
X2_LIMITS = (-10.0, 10.0)
CLASS_COLOURS = {1: "tab:blue", -1: "tab:orange"}


def save_figure(fig, path: Path) -> None:
    """Write `fig` as PNG to a temporary name beside `path`, then os.replace it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=100)
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; figures are meant to be read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)


def _as_array(values) -> np.ndarray:
    return np.asarray([float(v) for v in values], dtype=float)


def _draw_ellipse(ax, centre, variances, radius: float, **style) -> None:
    """The set {x : (x - centre)^T Sigma^-1 (x - centre) = radius^2} for diagonal Sigma."""
    width, height = (2 * radius * math.sqrt(v) for v in variances)
    ax.add_patch(Ellipse(xy=tuple(centre), width=width, height=height, fill=False, **style))


def _draw_boundary(ax, mu, variances, **style) -> None:
    """The decision boundary x^T Sigma^-1 mu = 0: a line through the origin normal to w = Sigma^-1 mu."""
    w = np.asarray(mu) / np.asarray(variances)
    if abs(w[1]) > 1e-12 * abs(w[0]):
        xs = np.array(X1_LIMITS)
        ax.plot(xs, -w[0] * xs / w[1], **style)
    else:
        ax.axvline(0.0, **style)


def _draw_model(ax, x, y, mu, variances, title: str, dashed_variances=None) -> None:
    """Samples, class contours (1 and 2 Mahalanobis units) and the decision boundary of one 2-D model."""
    for label, colour in CLASS_COLOURS.items():
        pts = x[y == label]
        ax.scatter(pts[:, 0], pts[:, 1], s=4, alpha=0.35, color=colour, label=f"y = {label:+d}")
        centre = label * np.asarray(mu)
        for radius in (1.0, 2.0):
            _draw_ellipse(ax, centre, variances, radius, color=colour, lw=1.5)
        if dashed_variances is not None:
            _draw_ellipse(ax, centre, dashed_variances, 1.0, color="k", lw=1.0, ls="--")
    _draw_boundary(ax, mu, variances, color="k", lw=1.5)
    ax.set_title(title, fontsize=10)


def _format_axes(ax) -> None:
    ax.set_xlim(*X1_LIMITS)
    ax.set_ylim(*X2_LIMITS)
    ax.set_aspect("equal")
    ax.set_xlabel("Feature x1")
    ax.set_ylabel("Feature x2")


def figure4(path: Path, x, y, mu_star, sigma_star, mle: dict, robust: dict[float, dict],
            closed_form: dict[float, list]) -> None:
    """Figure 4 redrawn: MLE with the two unit balls, true parameters, robust fits at two radii.

    mle: {"mu", "sigma"} of the standard MLE; robust: eps -> {"mu", "sigma"} of the robust fits (exact
    adversary); closed_form: eps -> Theorem 2's variances, drawn dashed at 1 Mahalanobis unit.
    """
    x, y = np.asarray(x), np.asarray(y)
    mu_star, sigma_star = _as_array(mu_star), _as_array(sigma_star)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.2), layout="constrained")
    ax = axes[0, 0]
    _draw_model(ax, x, y, _as_array(mle["mu"]), _as_array(mle["sigma"]), "Maximum likelihood estimate")
    ax.add_patch(Ellipse((0, 0), 2, 2, fill=False, color="crimson", lw=2.2, label=r"$\ell_2$ unit ball"))
    _draw_ellipse(ax, (0, 0), _as_array(mle["sigma"]), 1.0, color="darkgreen", lw=2.2,
                  label=r"$\hat\Sigma^{-1}$-induced unit ball")
    ax.legend(loc="lower right", fontsize=7, markerscale=3)
    ax = axes[0, 1]
    _draw_model(ax, x, y, mu_star, sigma_star, r"True parameters ($\varepsilon = 0$)")
    for ax, eps in zip(axes[1], sorted(robust), strict=True):
        fit = robust[eps]
        _draw_model(ax, x, y, _as_array(fit["mu"]), _as_array(fit["sigma"]),
                    rf"Robust parameters, $\varepsilon = {eps:g}$", dashed_variances=closed_form.get(eps))
    for ax in axes.flat:
        _format_axes(ax)
    fig.suptitle(
        rf"Gaussian model, $\mu^* = ({mu_star[0]:g}, {mu_star[1]:g})$, "
        rf"$\Sigma^* = \mathrm{{diag}}({sigma_star[0]:g}, {sigma_star[1]:g})$: "
        "x1 is the high-variance feature, x2 the low-variance one", fontsize=11)
    fig.supxlabel(
        "Ellipses: 1 and 2 Mahalanobis units of each class Gaussian; black line: decision boundary "
        r"sign($x^\top\Sigma^{-1}\mu$)." "\n"
        r"Robust panels: robust MLE under the exact $\ell_2$ adversary (solid) and Theorem 2's closed form "
        "(dashed, 1 unit).", fontsize=9)
    save_figure(fig, path)


def variance_figure(path: Path, eps_line, closed_form_line, eps_points, relaxed, exact,
                    sigma_star) -> None:
    """Learned variances and anisotropy against eps: Theorem 2 as lines, empirical fits as points."""
    eps_line, eps_points = _as_array(eps_line), _as_array(eps_points)
    lines, relaxed, exact = (np.asarray(a, dtype=float) for a in (closed_form_line, relaxed, exact))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for i, colour in enumerate(("tab:purple", "tab:green")):
        left.plot(eps_line, lines[:, i], color=colour, label=f"Theorem 2, feature x{i + 1}")
        left.scatter(eps_points, relaxed[:, i], color=colour, marker="o", facecolors="none", s=45,
                     label=f"fit, relaxed adversary, x{i + 1}")
        left.scatter(eps_points, exact[:, i], color=colour, marker="x", s=45,
                     label=f"fit, exact adversary, x{i + 1}")
        left.axhline(float(sigma_star[i]), color=colour, ls=":", lw=1)
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel(r"$\ell_2$ radius $\varepsilon$")
    left.set_ylabel("learned variance")
    left.set_title("Robust variances (dotted: true variances)", fontsize=10)
    left.legend(fontsize=7)
    right.plot(eps_line, lines.max(1) / lines.min(1), color="k", label="Theorem 2")
    right.scatter(eps_points, relaxed.max(1) / relaxed.min(1), marker="o", facecolors="none", color="k",
                  s=45, label="fit, relaxed adversary")
    right.scatter(eps_points, exact.max(1) / exact.min(1), marker="x", color="tab:red", s=45,
                  label="fit, exact adversary")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel(r"$\ell_2$ radius $\varepsilon$")
    right.set_ylabel("anisotropy (max / min variance)")
    right.yaxis.set_major_locator(FixedLocator([1, 1.5, 2, 3, 5, 10, 20, 50, 100]))
    right.yaxis.set_major_formatter(ScalarFormatter())
    right.yaxis.set_minor_formatter(NullFormatter())
    right.set_title("The robust covariance blends toward the identity", fontsize=10)
    right.legend(fontsize=8)
    save_figure(fig, path)


def alignment_figure(path: Path, eps_line, standard: dict, robust_line: dict, eps_points,
                     robust_measured: dict) -> None:
    """Theorem 3: cosine between mu and the loss's input gradient, standard vs robust classifiers.

    standard: {"worst_case", "at_mu_star"} floats; robust_line: the same keys, closed form per eps_line;
    robust_measured: the same keys, measured on the empirical robust fits at eps_points.
    """
    eps_line, eps_points = _as_array(eps_line), _as_array(eps_points)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), layout="constrained")
    titles = {"worst_case": r"worst case over directions $\mu$", "at_mu_star": r"at the model's $\mu^*$"}
    for ax, key in zip(axes, ("worst_case", "at_mu_star"), strict=True):
        ax.axhline(standard[key], color="tab:red", ls="--", label="standard MLE")
        ax.plot(eps_line, _as_array(robust_line[key]), color="k", label="robust, Theorem 2 covariance")
        ax.scatter(eps_points, _as_array(robust_measured[key]), color="k", marker="x", s=45,
                   label="robust, fitted (exact adversary)")
        ax.set_xscale("log")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(r"$\ell_2$ radius $\varepsilon$")
        ax.set_ylabel(r"cos($\mu$, input gradient)")
        ax.set_title(titles[key], fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("Gradient alignment (Theorem 3): the robust classifier's input gradient follows the mean",
                 fontsize=11)
    save_figure(fig, path)
