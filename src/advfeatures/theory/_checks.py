"""Input validation for the Gaussian-model code: every problem becomes a one-line BadInputError."""

from __future__ import annotations

import math

import torch

from advfeatures.errors import BadInputError

DTYPE = torch.float64


def as_tensor(value, name: str) -> torch.Tensor:
    """Convert `value` (tensor, list, number) to a float64 tensor, or say why it cannot be."""
    try:
        tensor = torch.as_tensor(value, dtype=DTYPE)
    except (TypeError, ValueError, RuntimeError) as err:
        raise BadInputError(f"{name}: not a numeric array ({err}); pass a tensor or a list of numbers") \
            from err
    if not torch.isfinite(tensor).all():
        raise BadInputError(f"{name} contains NaN or infinite values; pass finite numbers")
    return tensor


def as_variances(sigma, name: str = "sigma") -> tuple[torch.Tensor, bool]:
    """Return (vector of variances, was_a_matrix) for a vector of variances or a diagonal covariance."""
    tensor = as_tensor(sigma, name)
    was_matrix = tensor.dim() == 2
    if was_matrix:
        if tensor.shape[0] != tensor.shape[1]:
            raise BadInputError(f"{name} has shape {tuple(tensor.shape)}; pass a square diagonal matrix "
                                "or a vector of variances")
        off_diagonal = tensor - torch.diag(torch.diagonal(tensor))
        if off_diagonal.abs().max() > 0:
            raise BadInputError(f"{name} has non-zero off-diagonal entries; this model needs a diagonal "
                                "covariance: rotate to its eigenbasis and pass the eigenvalues")
        tensor = torch.diagonal(tensor).clone()
    elif tensor.dim() != 1:
        raise BadInputError(f"{name} has {tensor.dim()} dimensions; pass a vector of variances or a "
                            "diagonal matrix")
    if tensor.numel() == 0:
        raise BadInputError(f"{name} is empty; pass at least one variance")
    if (tensor <= 0).any():
        raise BadInputError(f"{name} has non-positive variances (min {tensor.min().item():.3g}); "
                            "every variance must be > 0")
    return tensor, was_matrix


def check_eps(eps, name: str = "eps") -> float:
    """An L2 radius: a finite number >= 0."""
    try:
        value = float(eps)
    except (TypeError, ValueError) as err:
        raise BadInputError(f"{name}={eps!r} is not a number; pass a float >= 0") from err
    if not math.isfinite(value) or value < 0:
        raise BadInputError(f"{name}={value} is invalid; the perturbation radius must be finite and >= 0")
    return value


def check_mean(mu, dim: int, name: str = "mu") -> torch.Tensor:
    tensor = as_tensor(mu, name)
    if tensor.shape != (dim,):
        raise BadInputError(f"{name} has shape {tuple(tensor.shape)} but the variances have {dim} entries; "
                            "pass one mean per feature")
    return tensor


def check_data(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    """x: (n, d) samples, y: (n,) labels in {-1, +1}; returned as float64."""
    x = as_tensor(x, "x")
    y = as_tensor(y, "y")
    if x.dim() != 2 or x.shape[0] < 2 or x.shape[1] == 0:
        raise BadInputError(f"x has shape {tuple(x.shape)}; pass an (n, d) matrix with n >= 2 samples")
    if y.shape != (x.shape[0],):
        raise BadInputError(f"y has shape {tuple(y.shape)} but x has {x.shape[0]} rows; "
                            "pass one label per row")
    if not ((y == 1) | (y == -1)).all():
        raise BadInputError("y must contain only -1 and +1; map your labels to {-1, +1}")
    constant = (x == x[0]).all(dim=0)
    if constant.any():
        raise BadInputError(f"feature {int(constant.nonzero()[0])} of x is constant; drop constant features")
    return x, y


def check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadInputError(f"{name}={value!r} is invalid; pass a positive integer")
    return value
