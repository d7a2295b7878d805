"""Carlini & Wagner's L2 attack (2017, "Towards Evaluating the Robustness of Neural Networks").

x' = (tanh(w) + 1) / 2 keeps every pixel in [0, 1] without clipping (the "tanh box"); Adam
minimises |x' - x|_2^2 + c * f(x') over w, with f(x') = max(Z_y - max_{i != y} Z_i, -kappa)
(untargeted; targeted: max(max_{i != t} Z_i - Z_t, -kappa)) on the logits Z. A binary search
over c runs per example (`search_steps` rounds from c = `c`): c halves towards the last failure
after a success and grows tenfold until the first. The result is the smallest adversarial x'
found in any round; an example never fooled comes back unchanged.

Each example has its own c, its own early stop and its own best point, and Adam is elementwise,
so each result is the same in any batch. Written here rather than wrapped from torchattacks:
its CW has no binary search over c (one fixed c, default 1) and stops early on the loss summed
over the batch.
"""

from __future__ import annotations

import torch
from torch import nn

from ganlab.attacks.gradient import eval_mode

NO_UPPER = 1e10  # the upper bound on c before any success


def cw_l2(model: nn.Module, x: torch.Tensor, y: torch.Tensor, targeted: bool = False,
          kappa: float = 0.0, c: float = 1e-3, search_steps: int = 9, steps: int = 1000,
          lr: float = 1e-2, abort_early: bool = True) -> torch.Tensor:
    """Carlini & Wagner L2: the smallest x' found that is misclassified (targeted=True: y holds
    the targets and x' must be classified as them) with a logit margin of at least kappa."""
    if not x.is_floating_point():
        raise TypeError(f"attacks take float images in [0, 1], got {x.dtype}")
    if not (kappa >= 0 and c > 0 and lr > 0 and search_steps >= 1 and steps >= 0):
        raise ValueError("cw_l2 needs kappa >= 0, c > 0, lr > 0, search_steps >= 1, steps >= 0")
    x0 = x.detach()
    n = len(x0)
    w0 = torch.atanh((2 * x0 - 1) * (1 - 1e-6))  # the tanh-space point of x itself
    best = x0.clone()
    best_l2 = torch.full((n,), float("inf"), device=x0.device)
    const = torch.full((n,), float(c), device=x0.device)
    lower, upper = torch.zeros_like(const), torch.full_like(const, NO_UPPER)
    with eval_mode(model):
        for _ in range(search_steps):
            success = _minimise(model, x0, w0, y, targeted, kappa, const, steps, lr, abort_early,
                                best, best_l2)
            const = search_constants(const, lower, upper, success)
    return best.clamp(0, 1)


def _minimise(model: nn.Module, x0: torch.Tensor, w0: torch.Tensor, y: torch.Tensor,
              targeted: bool, kappa: float, const: torch.Tensor, steps: int, lr: float,
              abort_early: bool, best: torch.Tensor, best_l2: torch.Tensor) -> torch.Tensor:
    """One round of Adam at fixed c; updates best / best_l2 in place and returns which examples
    were fooled (with margin kappa) at some step."""
    w = w0.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([w], lr=lr)
    success = torch.zeros(len(x0), dtype=torch.bool, device=x0.device)
    active = torch.ones_like(success)
    previous = torch.full_like(const, float("inf"))
    check_every = max(steps // 10, 1)
    for step in range(steps):
        with torch.enable_grad():
            adv = (torch.tanh(w) + 1) / 2
            logits = model(adv)
            l2 = (adv - x0).flatten(1).pow(2).sum(dim=1)
            loss = l2 + const * margin_loss(logits, y, targeted, kappa)
            (grad,) = torch.autograd.grad(loss.sum(), w)
        with torch.no_grad():
            fooled = is_fooled(logits, y, targeted, kappa)
            better = fooled & (l2 < best_l2)
            best_l2[better] = l2[better]
            best[better] = adv[better]
            success |= fooled
            if abort_early and step % check_every == 0:
                active &= ~(loss > previous * 0.9999)  # no progress since the last check
                previous = torch.where(active, loss, previous)
                if not active.any():
                    break
            frozen = w[~active].clone()  # a stopped example keeps its point: Adam moves all
            w.grad = grad
            optimizer.step()
            w[~active] = frozen
    return success


def margin_loss(logits: torch.Tensor, y: torch.Tensor, targeted: bool,
                kappa: float) -> torch.Tensor:
    """C&W's f6 per example: how far the label (target) is above (below) the best other logit,
    floored at -kappa."""
    label = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    gap = other - label if targeted else label - other
    return gap.clamp(min=-kappa)


def is_fooled(logits: torch.Tensor, y: torch.Tensor, targeted: bool,
              kappa: float) -> torch.Tensor:
    """Classified as the target (or away from the label) with a margin of at least kappa."""
    shifted = logits.scatter_add(1, y[:, None],
                                 torch.full_like(y[:, None], -kappa if targeted else kappa,
                                                 dtype=logits.dtype))
    predicted = shifted.argmax(dim=1)
    return predicted == y if targeted else predicted != y


def search_constants(const: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                     success: torch.Tensor) -> torch.Tensor:
    """One step of C&W's binary search on c per example (lower and upper updated in place):
    after a success c moves halfway down towards the last failure, after a failure halfway up
    towards the last success, or tenfold while no success has been seen."""
    upper[success] = torch.minimum(upper[success], const[success])
    lower[~success] = torch.maximum(lower[~success], const[~success])
    bisect = upper < NO_UPPER
    return torch.where(bisect, (lower + upper) / 2, const * 10)
