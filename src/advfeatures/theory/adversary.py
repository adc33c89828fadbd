"""Worst-case L2 perturbations of the Gaussian negative log-likelihood (the Lemma of Section 4).

For a sample with residual v = x - y mu (its offset from its own class mean), the adversary maximises
l(x + delta; y mu, Sigma), i.e. the quadratic 1/2 (v + delta)^T Sigma^-1 (v + delta), over ||delta||_2 <= eps.
Stationarity gives Sigma^-1 (v + delta) = lambda delta, i.e. delta* = (lambda Sigma - I)^-1 v, and the global
maximum is the root with lambda > 1/sigma_min(Sigma) (so lambda Sigma - I is positive definite), on which
||delta(lambda)|| falls strictly from +inf to 0: the root is unique. The maximiser always sits on the sphere
||delta|| = eps, pushing the sample further from its class mean, mostly along low-variance features.
"""

from __future__ import annotations

import torch

from advfeatures.errors import BadInputError

from ._checks import DTYPE, as_variances, check_eps

NEWTON_STEPS = 60
TOLERANCE = 1e-10  # relative error of ||delta|| (rounding near the pole limits it to ~1e-12)


def _check_residuals(v, sigma) -> tuple[torch.Tensor, torch.Tensor]:
    variances, _ = as_variances(sigma)
    v = torch.as_tensor(v, dtype=DTYPE)
    if v.dim() not in (1, 2) or v.shape[-1] != variances.numel():
        raise BadInputError(f"residuals have shape {tuple(v.shape)} but sigma has {variances.numel()} "
                            "entries; pass v as (n, d) with d variances")
    return v, variances


def lemma_multiplier(v, sigma, eps: float) -> torch.Tensor:
    """lambda per row of v such that ||(lambda Sigma - I)^-1 v|| = eps, lambda > 1/sigma_min (batched Newton).

    Newton runs on phi(lambda) = 1/||delta(lambda)|| - 1/eps, which is increasing and concave on the
    admissible interval (the classic trust-region secular equation), so from a start left of the root every
    iterate stays left of it and increases monotonically to it; it is nearly linear, so a handful of steps
    reach machine precision. Start: lambda0 = max_i (1 + |v_i|/eps) / Sigma_ii makes some |delta_i| >= eps,
    so phi(lambda0) <= 0.
    """
    v, variances = _check_residuals(v, sigma)
    eps = check_eps(eps)
    if eps == 0:
        raise BadInputError("eps=0 has no Lagrange multiplier (the perturbation is zero); pass eps > 0")
    rows = v.reshape(-1, v.shape[-1])
    floor = (1.0 + 1e-12) / variances.min()
    lam = ((1.0 + rows.abs() / eps) / variances).amax(dim=1).clamp_min(floor)
    for _ in range(NEWTON_STEPS):
        gap = lam[:, None] * variances - 1.0
        delta = rows / gap
        norm = delta.norm(dim=1).clamp_min(1e-300)
        phi = 1.0 / norm - 1.0 / eps
        slope = (rows**2 * variances / gap**3).sum(1) / norm**3
        if (phi.abs() * eps).max() <= TOLERANCE:  # relative error of ||delta|| against eps
            break
        step = torch.where(slope > 0, phi / slope.clamp_min(1e-300), torch.zeros_like(phi))
        new = torch.maximum(lam - step, lam)  # monotone from the left, by concavity of phi
        if torch.equal(new, lam):
            break
        lam = new
    return lam.reshape(v.shape[:-1])


def worst_case_perturbation(v, sigma, eps: float) -> torch.Tensor:
    """The exact per-sample maximiser delta* = (lambda Sigma - I)^-1 v of the NLL over ||delta||_2 <= eps.

    v: residuals x - y mu, shape (n, d) or (d,); returns delta of the same shape, ||delta|| = eps per row.
    In the measure-zero "hard case" (v has no component on the smallest-variance feature, e.g. v = 0) the rest
    of the budget goes along that feature, which is then the maximiser.
    """
    v, variances = _check_residuals(v, sigma)
    eps = check_eps(eps)
    if eps == 0:
        return torch.zeros_like(v)
    lam = lemma_multiplier(v, variances, eps)
    delta = v / (lam[..., None] * variances - 1.0)
    deficit = (eps**2 - (delta**2).sum(-1)).clamp_min(0.0)
    hard = deficit > 1e-9 * eps**2
    if hard.any():
        k = int(torch.argmin(variances))
        sign = torch.where(v[..., k] < 0, -1.0, 1.0).to(DTYPE)
        filled = sign * (delta[..., k] ** 2 + deficit).sqrt()
        delta[..., k] = torch.where(hard, filled, delta[..., k])
    return delta


def relaxed_scale(v, sigma, eps: float) -> torch.Tensor:
    """The proof's relaxed adversary: the diagonal M (returned as a vector m) maximising the mean NLL of
    x + M v subject to mean ||M v||^2 = eps^2 over the sample.

    With c_i = mean(v_i^2) the problem is max sum_i (1 + m_i)^2 c_i / Sigma_ii s.t. sum_i m_i^2 c_i = eps^2;
    with u_i = m_i sqrt(c_i) this is the Lemma's problem for the single vector sqrt(c), so
    m = (lambda Sigma - I)^-1 with lambda from `lemma_multiplier` on sqrt(c).
    """
    v, variances = _check_residuals(v, sigma)
    eps = check_eps(eps)
    if eps == 0:
        return torch.zeros_like(variances)
    rms = (v.reshape(-1, v.shape[-1]) ** 2).mean(0).sqrt()
    lam = lemma_multiplier(rms[None, :], variances, eps)[0]
    return 1.0 / (lam * variances - 1.0)


def relaxed_perturbation(v, sigma, eps: float) -> torch.Tensor:
    """delta = M v for every row of v, with M from `relaxed_scale` (budget met on average, not per sample)."""
    v, variances = _check_residuals(v, sigma)
    return v * relaxed_scale(v, variances, eps)
