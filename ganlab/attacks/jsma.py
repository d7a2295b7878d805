"""The Jacobian-based saliency map attack (Papernot et al. 2016, "The Limitations of Deep
Learning in Adversarial Settings"), targeted, L0.

Algorithm 3 of the paper, for a whole batch at once: at every iteration the forward derivative
(the Jacobian of the logits) gives, for each pair of features (p, q) still in the search domain,
alpha = the change of the target's logit and beta = the change of the other logits; the pair
with alpha > 0, beta < 0 and the largest alpha * |beta| moves by theta (+1: to white). A
feature leaves the search domain once it reaches 0 or 1. An example stops when it is classified
as its target, when no pair is left, or after floor(gamma * F / 2) iterations, so that at most
gamma of its F features change (paper: theta = +1, gamma = 14.5% on MNIST).

Written here rather than wrapped from torchattacks: its JSMA crafts one image at a time (ten
backward passes per image per iteration instead of per batch), allows ceil(gamma * F / 2)
iterations (one pair more than gamma allows) and takes the untargeted default as class + 1 mod 10.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ganlab.attacks.gradient import eval_mode, logits_jacobian

# examples whose F x F saliency maps are built at once: 16 MNIST maps are ~40 MB each step
SALIENCY_CHUNK = 16


def jsma(model: nn.Module, x: torch.Tensor, target: torch.Tensor, theta: float = 1.0,
         gamma: float = 0.145) -> torch.Tensor:
    """Papernot et al.'s JSMA: move pixel pairs by theta until each example is classified as
    its `target` class, changing at most gamma of its features."""
    if not x.is_floating_point():
        raise TypeError(f"attacks take float images in [0, 1], got {x.dtype}")
    if theta == 0 or not -1 <= theta <= 1:
        raise ValueError(f"theta must be in [-1, 1] and not 0, got {theta}")
    if not 0 < gamma <= 1:
        raise ValueError(f"gamma must be in (0, 1], got {gamma}")
    increasing = theta > 0
    adv = x.detach().flatten(1).clone()
    domain = adv < 1 if increasing else adv > 0  # features that can still move
    iterations = math.floor(gamma * adv.shape[1] / 2)
    with eval_mode(model):
        for _ in range(iterations):
            logits, jacobian = logits_jacobian(model, adv.view_as(x))
            active = (logits.argmax(dim=1) != target) & (domain.sum(dim=1) >= 2)
            if not active.any():
                break
            rows = active.nonzero().squeeze(1)
            p, q = _best_pairs(jacobian[rows], target[rows], domain[rows], increasing)
            found = p >= 0  # an example without an admissible pair stops where it is
            rows, p, q = rows[found], p[found], q[found]
            for feature in (p, q):
                adv[rows, feature] = (adv[rows, feature] + theta).clamp(0, 1)
                saturated = adv[rows, feature] >= 1 if increasing else adv[rows, feature] <= 0
                domain[rows[saturated], feature[saturated]] = False
            if not found.any():
                break
    return adv.view_as(x).clamp(0, 1)


def _best_pairs(jacobian: torch.Tensor, target: torch.Tensor, domain: torch.Tensor,
                increasing: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """For each example, the pair of domain features (p, q) maximising alpha * |beta| under the
    paper's sign conditions (eq. 10 and its decreasing twin); p = q = -1 where none qualifies."""
    ps, qs = [], []
    for start in range(0, len(target), SALIENCY_CHUNK):
        part = slice(start, start + SALIENCY_CHUNK)
        p, q = _best_pairs_chunk(jacobian[part], target[part], domain[part], increasing)
        ps.append(p)
        qs.append(q)
    return torch.cat(ps), torch.cat(qs)


def _best_pairs_chunk(jacobian: torch.Tensor, target: torch.Tensor, domain: torch.Tensor,
                      increasing: bool) -> tuple[torch.Tensor, torch.Tensor]:
    n, _, f = jacobian.shape
    target_grad = jacobian[torch.arange(n), target]  # (n, F)
    other_grad = jacobian.sum(dim=1) - target_grad
    alpha = target_grad[:, :, None] + target_grad[:, None, :]  # (n, F, F)
    beta = other_grad[:, :, None] + other_grad[:, None, :]
    admissible = (alpha > 0) & (beta < 0) if increasing else (alpha < 0) & (beta > 0)
    admissible &= domain[:, :, None] & domain[:, None, :]
    admissible &= ~torch.eye(f, dtype=torch.bool, device=jacobian.device)
    score = torch.where(admissible, (alpha * beta).abs(), torch.full_like(alpha, -1.0))
    best = score.flatten(1).argmax(dim=1)
    none = ~admissible.flatten(1).any(dim=1)
    p, q = best // f, best % f
    return p.masked_fill(none, -1), q.masked_fill(none, -1)
