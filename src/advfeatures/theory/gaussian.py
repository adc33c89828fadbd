"""The Gaussian model of Section 4: sampling, likelihood, standard MLE and Theorem 2's robust covariance.

Data: y uniform in {-1, +1}, x ~ N(y mu*, Sigma*) with Sigma* diagonal. Covariances are handled as vectors of
variances throughout (the learned Sigma is diagonal too); the public functions also accept diagonal matrices.
All arithmetic is float64: the quantities compared in the tests differ in the third or fourth digit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from advfeatures.errors import BadInputError

from ._checks import DTYPE, as_variances, check_data, check_eps, check_mean, check_positive_int


@dataclass
class GaussianFit:
    """Learned parameters of the class-conditional Gaussian: mean `mu` (d,) and variances `sigma` (d,)."""

    mu: torch.Tensor
    sigma: torch.Tensor
    eps: float = 0.0
    adversary: str = "none"
    steps: int = 0
    loss: float = float("nan")

    def weights(self) -> torch.Tensor:
        """Normal vector of the linear classifier sign(x^T Sigma^-1 mu)."""
        return self.mu / self.sigma

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return classify(x, self.mu, self.sigma)

    def anisotropy(self) -> float:
        return anisotropy(self.sigma)

    def as_dict(self) -> dict:
        return {"mu": self.mu.tolist(), "sigma": self.sigma.tolist(), "eps": self.eps,
                "adversary": self.adversary, "steps": self.steps, "loss": self.loss}


def sample_gaussian(mu_star, sigma_star, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw n pairs (x, y): y uniform in {-1, +1}, x ~ N(y mu*, Sigma*); reproducible from `seed`."""
    variances, _ = as_variances(sigma_star, "sigma_star")
    mean = check_mean(mu_star, variances.numel(), "mu_star")
    check_positive_int(n, "n")
    gen = torch.Generator().manual_seed(int(seed))
    y = torch.randint(0, 2, (n,), generator=gen).to(DTYPE) * 2 - 1
    noise = torch.randn(n, variances.numel(), generator=gen, dtype=DTYPE)
    return y[:, None] * mean + noise * variances.sqrt(), y


def gaussian_nll(x: torch.Tensor, mean: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample negative log-likelihood of N(mean, diag(sigma)) (mean may be per-sample, shape (n, d)).

    l = 1/2 (x - mean)^T Sigma^-1 (x - mean) + 1/2 log det Sigma + d/2 log(2 pi); differentiable in all
    inputs.
    """
    r = x - mean
    d = x.shape[-1]
    return 0.5 * (r * r / sigma).sum(-1) + 0.5 * sigma.log().sum() + 0.5 * d * math.log(2 * math.pi)


def fit_mle(x, y) -> GaussianFit:
    """Standard maximum-likelihood estimate (closed form): mu = mean(y x), sigma = mean((x - y mu)^2)."""
    x, y = check_data(x, y)
    mu = (y[:, None] * x).mean(0)
    sigma = ((x - y[:, None] * mu) ** 2).mean(0)
    if (sigma <= 0).any():
        raise BadInputError("a feature has zero variance within the classes; drop it before fitting")
    loss = gaussian_nll(x, y[:, None] * mu, sigma).mean().item()
    return GaussianFit(mu=mu, sigma=sigma, eps=0.0, adversary="none", steps=0, loss=loss)


def classify(x, mu, sigma) -> torch.Tensor:
    """The Bayes classifier of the model with parameters (mu, Sigma): sign(x^T Sigma^-1 mu), in {-1, +1}."""
    variances, _ = as_variances(sigma)
    mean = check_mean(mu, variances.numel())
    x = torch.as_tensor(x, dtype=DTYPE)
    if x.shape[-1] != variances.numel():
        raise BadInputError(f"x has {x.shape[-1]} features but the model has {variances.numel()}; "
                            "pass samples of the model's dimension")
    score = x @ (mean / variances)
    return torch.where(score >= 0, 1.0, -1.0).to(DTYPE)


def anisotropy(sigma) -> float:
    """Largest over smallest variance (the condition number of a diagonal covariance)."""
    variances, _ = as_variances(sigma)
    return (variances.max() / variances.min()).item()


# ----------------------------------------------------------------------------------------------------------
# Theorem 2: the robust covariance under the proof's relaxed adversary
# ----------------------------------------------------------------------------------------------------------


def _robust_from_lambda(variances: torch.Tensor, lam: float) -> torch.Tensor:
    """Theorem 2's formula: Sigma_r = 1/2 Sigma* + (1/lambda) I + sqrt((1/lambda) Sigma* + 1/4 Sigma*^2)."""
    inv = 1.0 / lam
    return 0.5 * variances + inv + torch.sqrt(inv * variances + 0.25 * variances**2)


def _budget_used(variances: torch.Tensor, lam: float) -> float:
    """E||M v||^2 for v ~ N(0, Sigma*), M = (lambda Sigma_r(lambda) - I)^-1: strictly decreasing in lambda.

    lambda Sigma_r - 1 = a/2 + sqrt(a + a^2/4) with a = lambda Sigma*, written that way to avoid cancellation.
    """
    a = lam * variances
    gap = 0.5 * a + torch.sqrt(a + 0.25 * a**2)
    return (variances / gap**2).sum().item()


def robust_lambda(sigma_star, eps: float) -> float:
    """The Lagrange multiplier lambda of Theorem 2 for radius eps (math.inf at eps = 0).

    Convention (the proof's relaxed adversary, solved self-consistently): the adversary perturbs every sample
    by delta = M (x - y mu) with one diagonal M for the whole distribution, subject to E||delta||_2^2 = eps^2
    (expectation under the true distribution, at the robust mean mu_r = mu*). Its optimum is
    M = (lambda Sigma - I)^-1 where Sigma is the *robust* covariance being learned, and the learner's optimum
    is Sigma = Sigma* (I + M)^2, whose solution is Theorem 2's formula Sigma_r(lambda). Substituting it,
    lambda solves the scalar equation
        sum_i Sigma*_ii / (lambda Sigma_r,ii(lambda) - 1)^2 = eps^2,
    whose left side falls strictly from +inf (lambda -> 0) to 0 (lambda -> inf), so the root is unique; it
    always satisfies lambda > 1 / sigma_min(Sigma_r), the condition for M to be a maximiser (it is not
    necessarily above 1 / sigma_min(Sigma*): for large eps lambda falls below it). Solved by bisection on
    log lambda to machine precision.

    Here eps is the L2 radius (||delta||_2 <= eps), so lambda ~ sqrt(sum_i 1/Sigma*_ii) / eps for small eps;
    the paper's bound lambda = Theta(eps^-1/2) holds if its eps is read as the squared radius.
    """
    variances, _ = as_variances(sigma_star, "sigma_star")
    eps = check_eps(eps)
    if eps == 0:
        return math.inf
    target = eps**2
    lo = hi = math.sqrt((1.0 / variances).sum().item()) / eps
    while _budget_used(variances, lo) < target:
        lo /= 2
    while _budget_used(variances, hi) > target:
        hi *= 2
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        if mid in (lo, hi):
            break
        if _budget_used(variances, mid) > target:
            lo = mid
        else:
            hi = mid
    return math.sqrt(lo * hi)


def robust_covariance(sigma_star, eps: float) -> torch.Tensor:
    """Theorem 2: the robust MLE's covariance for L2 radius eps, closed form (see `robust_lambda` for lambda).

    Accepts a vector of variances or a diagonal matrix and returns the same kind (float64). eps = 0 returns
    Sigma* itself. As eps grows lambda falls and Sigma_r "blends" toward a multiple of the identity: the
    anisotropy max/min variance decreases strictly.
    """
    variances, was_matrix = as_variances(sigma_star, "sigma_star")
    eps = check_eps(eps)
    result = variances.clone() if eps == 0 else _robust_from_lambda(variances, robust_lambda(variances, eps))
    return torch.diag(result) if was_matrix else result
