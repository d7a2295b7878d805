"""DeepFool (Moosavi-Dezfooli et al. 2016), the multi-class L2 version, for a whole batch.

At x_i it linearises the classifier around the current point: for each class k other than the
label, w_k = grad f_k - grad f_y and f'_k = f_k - f_y; the nearest linearised boundary is
l = argmin_k |f'_k| / |w_k|_2, and the step r_i = (|f'_l| / |w_l| + 1e-4) w_l / |w_l| reaches it.
The steps add up to r; x_{i+1} = clip(x + (1 + overshoot) r, 0, 1). An example stops as soon as
its label changes (or after `steps` iterations).

Written here rather than wrapped from torchattacks: its DeepFool works one image at a time
(one backward pass per class per image per step) and applies the overshoot to each step rather
than to the total perturbation as the paper's reference code does.
"""

from __future__ import annotations

import torch
from torch import nn

from ganlab.attacks.gradient import eval_mode, logits_jacobian


def deepfool(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 50,
             overshoot: float = 0.02) -> torch.Tensor:
    """Moosavi-Dezfooli et al.'s DeepFool (L2): the smallest step to the nearest linearised
    decision boundary, repeated until the label changes."""
    if not x.is_floating_point():
        raise TypeError(f"attacks take float images in [0, 1], got {x.dtype}")
    if steps < 0 or overshoot < 0:
        raise ValueError(f"steps and overshoot must be >= 0, got {steps} and {overshoot}")
    x0 = x.detach().flatten(1)
    total = torch.zeros_like(x0)
    adv = x0.clone()
    with eval_mode(model):
        for _ in range(steps):
            logits, jacobian = logits_jacobian(model, adv.view_as(x))
            active = logits.argmax(dim=1) == y
            if not active.any():
                break
            rows = active.nonzero().squeeze(1)
            total[rows] += _step_to_boundary(logits[rows], jacobian[rows], y[rows])
            adv[rows] = (x0[rows] + (1 + overshoot) * total[rows]).clamp(0, 1)
    return adv.view_as(x)


def _step_to_boundary(logits: torch.Tensor, jacobian: torch.Tensor,
                      y: torch.Tensor) -> torch.Tensor:
    """The minimal L2 step (N, F) onto the nearest boundary of the linearised classifier."""
    rows = torch.arange(len(y))
    f = logits - logits[rows, y][:, None]  # (N, K): f'_k, 0 for the label
    w = jacobian - jacobian[rows, y][:, None, :]  # (N, K, F)
    w_norm = w.norm(dim=2).clamp_min(1e-12)
    distance = f.abs() / w_norm
    distance[rows, y] = float("inf")
    nearest = distance.argmin(dim=1)
    scale = (distance[rows, nearest] + 1e-4) / w_norm[rows, nearest]
    return scale[:, None] * w[rows, nearest]
