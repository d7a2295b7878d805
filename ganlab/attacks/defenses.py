"""Training objectives that defend a classifier: the `defense=` config group.

A defence maps (model, x, y) to the loss to minimise and the logits it saw, so the family can
report accuracy. Inputs are [0, 1] image batches; adversarial examples are fresh every step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ganlab.attacks.gradient import fgsm, pgd
from ganlab.config import ranged
from ganlab.registry import Registry

# name -> class(cfg.defense) -> Defense
DEFENSES: Registry = Registry("defense", group="defense")


@dataclass
class NoDefenseConfig:
    name: str = "none"


@dataclass
class FgsmDefenseConfig:
    name: str = "fgsm"
    eps: float = ranged(0.3, "[0, 1]")
    # Goodfellow's alpha: alpha * J(x) + (1 - alpha) * J(x_adv)
    clean_weight: float = ranged(0.5, "[0, 1]")
    random_start: bool = False  # step from a random point of the eps-ball (against masking)


@dataclass
class PgdDefenseConfig:
    name: str = "pgd"
    eps: float = ranged(0.3, "[0, 1]")
    step_size: float = ranged(0.01, "(0, inf)")
    steps: int = ranged(40, "[1, inf)")
    random_start: bool = True
    clean_weight: float = ranged(0.0, "[0, 1]")  # Madry et al. train on adversarial examples only


@dataclass
class MixupDefenseConfig:
    name: str = "mixup"
    alpha: float = ranged(1.0, "(0, inf)")  # lam ~ Beta(alpha, alpha)


@dataclass
class GradRegDefenseConfig:
    name: str = "gradreg"
    # J + weight * mean over the batch of ||grad_x J(x_i, y_i)||^2
    weight: float = ranged(10.0, "[0, inf)")


@dataclass
class DefenseStep:
    loss: torch.Tensor  # to minimise
    logits: dict[str, torch.Tensor]  # "clean" / "adversarial" -> the logits seen, for accuracy
    scalars: dict[str, torch.Tensor] = field(default_factory=dict)  # extra terms to log


class Defense:
    # the defence trains on adversarial examples, so their accuracy is worth logging
    adversarial: bool = False
    # its loss differentiates an input gradient (so torch.compile must leave the model alone)
    double_backward: bool = False

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> DefenseStep:
        raise NotImplementedError


def _mixed(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
           clean_weight: float) -> DefenseStep:
    """clean_weight * J(x) + (1 - clean_weight) * J(x_adv); J(x) skipped at weight 0."""
    logits_adv = model(x_adv)
    loss = (1 - clean_weight) * F.cross_entropy(logits_adv, y)
    logits = {"adversarial": logits_adv}
    if clean_weight:
        logits["clean"] = model(x)
        loss = loss + clean_weight * F.cross_entropy(logits["clean"], y)
    return DefenseStep(loss, logits)


@DEFENSES.register("none", NoDefenseConfig)
class NoDefense(Defense):
    def step(self, model, x, y):
        logits = model(x)
        return DefenseStep(F.cross_entropy(logits, y), {"clean": logits})


@DEFENSES.register("fgsm", FgsmDefenseConfig)
class FgsmTraining(Defense):
    """Goodfellow et al.'s mixed objective; random_start=True is Wong et al.'s R+FGSM."""

    adversarial = True

    def step(self, model, x, y):
        eps = self.cfg.eps
        if self.cfg.random_start:  # one step of eps from a random point, projected to the ball
            x_adv = pgd(model, x, y, eps, alpha=eps, steps=1, random_start=True)
        else:
            x_adv = fgsm(model, x, y, eps)
        return _mixed(model, x, x_adv, y, self.cfg.clean_weight)


@DEFENSES.register("pgd", PgdDefenseConfig)
class PgdTraining(Defense):
    """Madry et al.: minimise the loss at the PGD maximiser inside the eps-ball."""

    adversarial = True

    def step(self, model, x, y):
        c = self.cfg
        x_adv = pgd(model, x, y, c.eps, alpha=c.step_size, steps=c.steps,
                    random_start=c.random_start)
        return _mixed(model, x, x_adv, y, c.clean_weight)


@DEFENSES.register("mixup", MixupDefenseConfig)
class Mixup(Defense):
    """Zhang et al.: one lam ~ Beta(alpha, alpha) per batch, pairs from a random permutation."""

    def step(self, model, x, y):
        lam = float(torch.distributions.Beta(self.cfg.alpha, self.cfg.alpha).sample())
        perm = torch.randperm(x.shape[0], device=x.device)
        logits = model(lam * x + (1 - lam) * x[perm])
        loss = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[perm])
        return DefenseStep(loss, {})  # mixed inputs: no accuracy to report


@DEFENSES.register("gradreg", GradRegDefenseConfig)
class InputGradientRegularisation(Defense):
    """J + weight * mean_i ||grad_x J(x_i, y_i)||^2, by double backpropagation."""

    double_backward = True

    def step(self, model, x, y):
        x = x.detach().requires_grad_(True)
        logits = model(x)
        per_example = F.cross_entropy(logits, y, reduction="sum")  # row i: J(x_i, y_i) only
        (grad,) = torch.autograd.grad(per_example, x, create_graph=True)
        penalty = grad.pow(2).flatten(1).sum(1).mean()
        loss = per_example / x.shape[0] + self.cfg.weight * penalty
        return DefenseStep(loss, {"clean": logits}, {"loss/grad_penalty": penalty})
