"""A small L-BFGS with Armijo backtracking for the few-parameter problems of this package.

torch.optim would do, but constructing its first optimiser imports torch._dynamo (~2 s), which is longer than
all the theory experiments together; these problems have at most a few dozen parameters, so the classic
two-loop recursion in float64 is enough.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Objective = Callable[[torch.Tensor], tuple[float, torch.Tensor]]


def _direction(grad: torch.Tensor, pairs: list[tuple[torch.Tensor, torch.Tensor]], first_step: float):
    """-H grad, H the L-BFGS inverse-Hessian approximation from the (s, y) pairs (two-loop recursion)."""
    q = grad.clone()
    coefficients = []
    for s, y in reversed(pairs):
        rho = 1.0 / torch.dot(y, s)
        alpha = rho * torch.dot(s, q)
        q -= alpha * y
        coefficients.append((rho, alpha, s, y))
    if pairs:
        s, y = pairs[-1]
        q *= torch.dot(s, y) / torch.dot(y, y)
    else:
        q *= first_step
    for rho, alpha, s, y in reversed(coefficients):
        beta = rho * torch.dot(y, q)
        q += (alpha - beta) * s
    return -q


def minimise(objective: Objective, start: torch.Tensor, max_iter: int, first_step: float = 1.0,
             grad_tol: float = 1e-10, value_tol: float = 1e-14,
             history: int = 10) -> tuple[torch.Tensor, float, int]:
    """Minimise a smooth function of a flat float64 vector; `objective(theta)` returns (value, gradient).

    The objective may return an infinite value for points outside its domain; the line search then backs off.

    Stops when the largest gradient entry is below grad_tol, when an accepted step lowers the value by less
    than value_tol (relative) or changes no entry by more than 1e-13, when the line search cannot decrease
    the value at all (the float64 noise floor), or after max_iter iterations. Returns (theta, value,
    iterations).
    """
    theta = start.detach().clone()
    value, grad = objective(theta)
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    iteration = 0
    for iteration in range(1, max_iter + 1):  # noqa: B007 - reported
        if grad.abs().max().item() < grad_tol:
            break
        direction = _direction(grad, pairs, first_step)
        slope = torch.dot(grad, direction).item()
        if slope >= 0:  # not a descent direction: forget the curvature history
            pairs.clear()
            direction = -first_step * grad
            slope = torch.dot(grad, direction).item()
        step = 1.0
        while True:
            candidate = theta + step * direction
            new_value, new_grad = objective(candidate)
            if math.isfinite(new_value) and new_value <= value + 1e-4 * step * slope:
                break
            step *= 0.5
            if step < 1e-12:
                return theta, value, iteration
        s, y = candidate - theta, new_grad - grad
        if torch.dot(s, y).item() > 1e-12 * torch.dot(s, s).sqrt().item() * torch.dot(y, y).sqrt().item():
            pairs = (pairs + [(s, y)])[-history:]
        converged = value - new_value <= value_tol * max(1.0, abs(value)) or s.abs().max().item() < 1e-13
        theta, value, grad = candidate, new_value, new_grad
        if converged:
            break
    return theta, value, iteration
