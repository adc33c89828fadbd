"""Section 4 of the paper: the Gaussian model where adversarial vulnerability comes from metric misalignment.

Plain torch on the CPU, float64, seconds. See `run_theory` for the end-to-end experiment and figures.
"""

from .adversary import lemma_multiplier, relaxed_perturbation, relaxed_scale, worst_case_perturbation
from .fit import fit_gaussian
from .gaussian import (
    GaussianFit,
    anisotropy,
    classify,
    fit_mle,
    gaussian_nll,
    robust_covariance,
    robust_lambda,
    sample_gaussian,
)
from .run import run_theory
from .vulnerability import (
    MonteCarloEstimate,
    classifier_loss,
    excess_adversarial_loss,
    excess_adversarial_loss_mc,
    gradient_alignment,
    input_gradient,
    isotropic_like,
    kantorovich_alignment,
    worst_case_alignment,
)

__all__ = [
    "GaussianFit",
    "MonteCarloEstimate",
    "anisotropy",
    "classifier_loss",
    "classify",
    "excess_adversarial_loss",
    "excess_adversarial_loss_mc",
    "fit_gaussian",
    "fit_mle",
    "gaussian_nll",
    "gradient_alignment",
    "input_gradient",
    "isotropic_like",
    "kantorovich_alignment",
    "lemma_multiplier",
    "relaxed_perturbation",
    "relaxed_scale",
    "robust_covariance",
    "robust_lambda",
    "run_theory",
    "sample_gaussian",
    "worst_case_alignment",
    "worst_case_perturbation",
]
