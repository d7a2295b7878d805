"""Szegedy et al. (2014, "Intriguing properties of neural networks"): the first adversarial
examples, by box-constrained L-BFGS.

For a target class t, minimise c * CE(f(x'), t) + |x' - x|_2^2 subject to x' in [0, 1] with
L-BFGS-B (scipy's, which keeps the box exactly), and search over c: the paper's line search
finds the weight at which the minimiser just reaches t. As in cleverhans' implementation the
weight multiplies the loss term (the paper's c on |r| is its reciprocal), starts at `c` and
moves by C&W's binary search (tenfold up until a success, then bisection); the result is the
closest x' classified as t over all rounds, or x itself when no round reached t.

One example at a time: L-BFGS-B's line search and curvature pairs would couple a batch solved
as one problem, and per example each result is the same in any batch.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ganlab.attacks.cw import NO_UPPER, search_constants
from ganlab.attacks.gradient import eval_mode


def lbfgs(model: nn.Module, x: torch.Tensor, target: torch.Tensor, c: float = 1e-2,
          search_steps: int = 5, steps: int = 100) -> torch.Tensor:
    """Szegedy et al.'s box-constrained L-BFGS attack towards the classes `target`."""
    if not x.is_floating_point():
        raise TypeError(f"attacks take float images in [0, 1], got {x.dtype}")
    if not (c > 0 and search_steps >= 1 and steps >= 1):
        raise ValueError("lbfgs needs c > 0, search_steps >= 1 and steps >= 1")
    x0 = x.detach()
    with eval_mode(model):
        rows = [_attack_one(model, x0[i : i + 1], target[i : i + 1], c, search_steps, steps)
                for i in range(len(x0))]
    return torch.cat(rows).clamp(0, 1) if rows else x0.clone()


def _attack_one(model: nn.Module, x: torch.Tensor, target: torch.Tensor, c: float,
                search_steps: int, steps: int) -> torch.Tensor:
    best, best_l2 = x.clone(), float("inf")
    const = torch.tensor([c], dtype=torch.float64)
    lower, upper = torch.zeros_like(const), torch.full_like(const, NO_UPPER)
    for _ in range(search_steps):
        adv = _minimise(model, x, target, float(const), steps)
        with torch.no_grad():
            hit = bool(model(adv).argmax(dim=1) == target)
        l2 = float((adv - x).pow(2).sum())
        if hit and l2 < best_l2:
            best, best_l2 = adv, l2
        const = search_constants(const, lower, upper, torch.tensor([hit]))
    return best


def _minimise(model: nn.Module, x: torch.Tensor, target: torch.Tensor, const: float,
              steps: int) -> torch.Tensor:
    """L-BFGS-B on c * CE + squared L2 distance, from x, inside [0, 1]."""
    from scipy.optimize import minimize

    start = x.flatten().double().cpu().numpy()

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        point = torch.from_numpy(flat).to(x.device, x.dtype).view_as(x)
        with torch.enable_grad():
            point.requires_grad_(True)
            loss = const * F.cross_entropy(model(point), target, reduction="sum") \
                + (point - x).pow(2).sum()
            (grad,) = torch.autograd.grad(loss, point)
        return float(loss.detach()), grad.flatten().double().cpu().numpy()

    result = minimize(objective, start, jac=True, method="L-BFGS-B",
                      bounds=[(0.0, 1.0)] * start.size, options={"maxiter": steps})
    return torch.from_numpy(result.x).to(x.device, x.dtype).view_as(x)
