"""White-box gradient attacks on classifiers: FGSM, the basic iterative method, PGD (L-inf and
L2).

Plain functions on [0, 1] image batches and a model that returns logits. The rules users of
attack libraries rely on hold for each: the model is in eval mode during the attack and gets
its own modes back after; no parameter gradient is accumulated (torch.autograd.grad asks for the
input's gradient only); the input tensor is never modified; results are clipped to [0, 1]; and
the loss is summed over the batch, so each example's step is the same in any batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Every submodule in eval mode; each gets its own previous mode back afterwards."""
    modes = [m.training for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, mode in zip(model.modules(), modes, strict=True):
            module.training = mode


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d/dx of the summed cross-entropy: each row is its own example's gradient."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def logits_jacobian(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits (N, K) at x and their Jacobian (N, K, F) with respect to the F input values
    of each example: one backward pass per class, through the logit summed over the batch, so
    each example's rows are its own (in eval mode no example affects another)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = model(x)
        rows = [torch.autograd.grad(logits[:, k].sum(), x, retain_graph=k + 1 < logits.shape[1])[0]
                for k in range(logits.shape[1])]
    return logits.detach(), torch.stack(rows, dim=1).flatten(2)


def _check(x: torch.Tensor, eps: float) -> None:
    if not eps >= 0:  # also rejects NaN
        raise ValueError(f"eps must be >= 0, got {eps}")
    if not x.is_floating_point():
        raise TypeError(f"attacks take float images in [0, 1], got {x.dtype}")


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
         targeted: bool = False) -> torch.Tensor:
    """Goodfellow et al.: x' = clip(x + eps * sign(grad_x J(x, y)), 0, 1).

    targeted=True: y holds the target classes and the step descends their loss.
    """
    _check(x, eps)
    with eval_mode(model):
        step = eps * input_gradient(model, x, y).sign()
    adv = x.detach() - step if targeted else x.detach() + step
    return adv.clamp(0, 1)


NORMS = ("inf", "2")


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float,
        steps: int, random_start: bool = True, targeted: bool = False,
        generator: torch.Generator | None = None, norm: str = "inf") -> torch.Tensor:
    """Madry et al.: `steps` gradient steps of size alpha from a random start in the eps-ball,
    each followed by projection onto the ball and onto [0, 1].

    norm="inf" (the L-inf ball): signed-gradient steps, a uniform start in the cube.
    norm="2" (the L2 ball of radius eps): steps along the L2-normalised gradient, a start drawn
    uniformly from the ball, projection by rescaling. random_start=False is the basic iterative
    method (Kurakin et al.). `generator` (on x's device) draws the start; without it the global
    RNG does.
    """
    _check(x, eps)
    if steps < 0 or alpha < 0:
        raise ValueError(f"steps and alpha must be >= 0, got {steps} and {alpha}")
    norm = str(norm)
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of: {', '.join(NORMS)}")
    x0 = x.detach()
    adv = x0.clone()
    if random_start:
        adv = (adv + _random_start(x0, eps, norm, generator)).clamp(0, 1)
    with eval_mode(model):
        for _ in range(steps):
            step = alpha * _ascent_direction(input_gradient(model, adv, y), norm)
            adv = adv - step if targeted else adv + step
            adv = _project(adv, x0, eps, norm).clamp(0, 1)
    return adv


def _per_example_norm(t: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each example, shaped to broadcast against t."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def _random_start(x: torch.Tensor, eps: float, norm: str,
                  generator: torch.Generator | None) -> torch.Tensor:
    if norm == "inf":
        return torch.empty_like(x).uniform_(-eps, eps, generator=generator)
    # uniform in the L2 ball: a Gaussian direction, radius eps * u^(1/d)
    direction = torch.empty_like(x).normal_(generator=generator)
    direction = direction / _per_example_norm(direction).clamp_min(1e-12)
    u = torch.empty(x.shape[0], device=x.device, dtype=x.dtype).uniform_(generator=generator)
    radius = eps * u.pow(1 / x[0].numel())
    return direction * radius.view(-1, *([1] * (x.dim() - 1)))


def _ascent_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The steepest-ascent direction of unit norm: sign(g) for L-inf, g / |g|_2 for L2 (0 where
    the gradient is 0)."""
    if norm == "inf":
        return grad.sign()
    return grad / _per_example_norm(grad).clamp_min(1e-12)


def _project(adv: torch.Tensor, x0: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "inf":
        return torch.min(torch.max(adv, x0 - eps), x0 + eps)
    delta = adv - x0
    scale = (eps / _per_example_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
    return x0 + delta * scale


def kurakin_steps(eps: float) -> int:
    """Kurakin et al.'s iteration count: min(255 eps + 4, 1.25 * 255 eps)."""
    return math.ceil(min(255 * eps + 4, 1.25 * 255 * eps))


def ifgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
          alpha: float = 1 / 255, steps: int | None = None,
          targeted: bool = False) -> torch.Tensor:
    """The basic iterative method (BIM / I-FGSM): PGD from x itself, steps of one grey level."""
    steps = kurakin_steps(eps) if steps is None else steps
    return pgd(model, x, y, eps, alpha, steps, random_start=False, targeted=targeted)


TARGET_CHOICES = "a class number, random or least_likely"


def pick_targets(model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: str | int,
                 num_classes: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Target classes for a targeted attack.

    least_likely: the class the model finds least likely (Kurakin's Step-LL); random: uniform
    over the classes other than y; a number: that class for every example.
    """
    if num_classes < 2:
        raise ValueError(f"a targeted attack needs at least 2 classes, got {num_classes}")
    if target == "least_likely":
        with torch.no_grad(), eval_mode(model):
            return model(x).argmin(dim=1)
    if target == "random":
        offset = torch.randint(1, num_classes, y.shape, generator=generator,
                               device=generator.device if generator is not None else y.device)
        return (y + offset.to(y.device)) % num_classes
    if isinstance(target, bool) or not (isinstance(target, int) or str(target).isdigit()):
        raise ValueError(f"unknown target {target!r}; choose {TARGET_CHOICES}")
    label = int(target)
    if not 0 <= label < num_classes:
        raise ValueError(f"target class {label} is not one of 0..{num_classes - 1}")
    return torch.full_like(y, label)


def attack_by_name(method: str, eps: float, step_size: float | None = None,
                   steps: int | None = None, random_start: bool = True,
                   generator: torch.Generator | None = None, norm: str = "inf"):
    """fgsm | ifgsm | pgd as one callable (model, x, y, targeted) -> x_adv, with each method's
    defaults: ifgsm steps of 1/255 for Kurakin's count; pgd 40 steps of 2.5 eps / steps (in the
    L-inf ball, or the L2 ball with norm="2")."""
    method = str(getattr(method, "value", method))
    if method == "fgsm":
        return lambda model, x, y, targeted=False: fgsm(model, x, y, eps, targeted)
    if method == "ifgsm":
        alpha = 1 / 255 if step_size is None else step_size
        return lambda model, x, y, targeted=False: ifgsm(model, x, y, eps, alpha, steps, targeted)
    if method == "pgd":
        n = 40 if steps is None else steps
        alpha = 2.5 * eps / max(n, 1) if step_size is None else step_size
        return lambda model, x, y, targeted=False: pgd(model, x, y, eps, alpha, n, random_start,
                                                       targeted, generator, norm)
    raise ValueError(f"unknown attack method {method!r}; choose fgsm, ifgsm or pgd")
