"""Training objectives that defend a classifier: the `defense=` config group.

A defence maps (model, x, y) to the loss to minimise and the logits it saw, so the family can
report accuracy. Inputs are [0, 1] image batches; adversarial examples are fresh every step
(free adversarial training carries its perturbation over instead).

The family owns the model and its optimizer; a defence only says what to minimise and, through
a few class attributes and hooks with do-nothing defaults, how the family should step:

- `replays`: optimizer steps per batch (free: m; every other defence 1), each one `step()`,
  backward, `after_backward()`, optimizer step;
- `position(step, total)`: where the run is, set by the family before each batch, for schedules
  (an eps warm-up, a cyclic learning rate) read by `step()` and `lr_factor()`;
- `check_every` and `check()`: a health check the family runs every so many batches (fast's
  catastrophic-overfitting test); the family keeps the last healthy weights and, on a failed
  check, restores them and stops updating;
- `state_dict()` / `load_state_dict()`: what a checkpoint must keep for a bit-exact resume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ganlab.attacks.gradient import eval_mode, fgsm, pgd
from ganlab.config import ranged
from ganlab.registry import Registry
from ganlab.schedules import linear_warmup, triangle

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
    # eps grows linearly from 0 over this share of the run, then stays (0: eps from the start);
    # the step size grows with it, so a step covers the same share of the ball
    eps_warmup: float = ranged(0.0, "[0, 1]")


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
class FastDefenseConfig:
    name: str = "fast"
    eps: float = ranged(0.3, "[0, 1]")
    # FGSM from a uniform random point of the eps-ball, one step of step_ratio * eps, projected
    step_ratio: float = ranged(1.25, "(0, inf)")
    eps_warmup: float = ranged(0.0, "[0, 1]")  # as pgd's
    # one cycle of the learning rate (model.lr at the top): up from 0 to the top at this share
    # of the run, then down to 0 (Wong et al.'s MNIST script peaks at 2/5)
    lr_peak: float = ranged(0.4, "(0, 1)")
    # every check_every batches, PGD at the full eps (check_steps steps of 2.5 eps /
    # check_steps, random start) on the first training batch; a robust accuracy more than
    # check_drop below its best is catastrophic overfitting: the last healthy weights come back
    # and training stops
    check_every: int = ranged(50, "[0, inf)")  # 0: never check
    check_steps: int = ranged(10, "[1, inf)")
    check_drop: float = ranged(0.2, "(0, 1]")


@dataclass
class FreeDefenseConfig:
    name: str = "free"
    eps: float = ranged(0.3, "[0, 1]")
    # m: optimizer steps per batch, each also one signed step of eps on the perturbation, which
    # is carried over to the next replay and the next batch (Shafahi et al.: m = 8 on MNIST;
    # divide the run's length by m to keep the same cost)
    replays: int = ranged(8, "[1, inf)")
    eps_warmup: float = ranged(0.0, "[0, 1]")  # as pgd's


@dataclass
class TradesDefenseConfig:
    name: str = "trades"
    # CE(f(x), y) + beta * KL(f(x) || f(x_adv)), x_adv by PGD on the KL term
    beta: float = ranged(6.0, "[0, inf)")
    eps: float = ranged(0.3, "[0, 1]")
    step_size: float = ranged(0.01, "(0, inf)")
    steps: int = ranged(40, "[1, inf)")
    eps_warmup: float = ranged(0.0, "[0, 1]")  # as pgd's


@dataclass
class NoiseDefenseConfig:
    name: str = "noise"
    # train on clip(x + N(0, std^2), 0, 1): a "failed defence" to measure
    std: float = ranged(0.3, "[0, inf)")


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
    # optimizer steps the family makes with each batch, one step() each
    replays: int = 1
    # batches between health checks (check()); 0: the defence has none
    check_every: int = 0

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.at, self.total = 0, 1  # this batch's number (0-based) and the run's length

    def position(self, step: int, total: int) -> None:
        """Set by the family before each batch: batch number `step` (0-based) of `total`."""
        self.at, self.total = step, max(total, 1)

    @property
    def scheduled(self) -> bool:
        """Whether step() or lr_factor() depend on the position (so a resumed run needs it)."""
        return False

    def step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> DefenseStep:
        raise NotImplementedError

    def after_backward(self) -> None:
        """Called after the loss's backward pass, before the optimizer step."""

    def lr_factor(self) -> float:
        """The learning rate at this position, as a factor of the family's (model.lr)."""
        return 1.0

    def check(self, model: nn.Module, x: torch.Tensor,
              y: torch.Tensor) -> tuple[bool, torch.Tensor]:
        """Whether training is still healthy, and the number that says so (to log)."""
        raise NotImplementedError(f"defense={self.cfg.name} has no health check")

    def state_dict(self) -> dict[str, Any]:
        """What the defence carries from batch to batch, for checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict() gave."""


class WarmedEps(Defense):
    """A defence whose eps grows over the first `eps_warmup` share of the run."""

    @property
    def scheduled(self) -> bool:
        return self.cfg.eps_warmup > 0

    def eps(self) -> float:
        """eps at this position: 0 at the first batch, the full eps after the warm-up."""
        return self.cfg.eps * linear_warmup(self.at, self.total, self.cfg.eps_warmup)


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
class PgdTraining(WarmedEps):
    """Madry et al.: minimise the loss at the PGD maximiser inside the eps-ball."""

    adversarial = True

    def step(self, model, x, y):
        c, eps = self.cfg, self.eps()
        # during the warm-up the step shrinks with eps: the same number of steps spans the ball
        alpha = c.step_size if eps == c.eps else c.step_size * eps / c.eps
        x_adv = pgd(model, x, y, eps, alpha=alpha, steps=c.steps, random_start=c.random_start)
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


@DEFENSES.register("fast", FastDefenseConfig)
class FastTraining(WarmedEps):
    """Wong, Rice & Kolter 2020 ("Fast is better than free"): FGSM from a uniform random start
    with a step of 1.25 eps, a one-cycle learning rate, and a PGD check against catastrophic
    overfitting (FGSM robustness that PGD no longer sees)."""

    adversarial = True

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.check_every = int(cfg.check_every)
        self.best = -1.0  # the best robust accuracy a check has seen

    @property
    def scheduled(self) -> bool:
        return True  # the learning-rate cycle

    def step(self, model, x, y):
        eps = self.eps()
        x_adv = pgd(model, x, y, eps, alpha=self.cfg.step_ratio * eps, steps=1,
                    random_start=True)
        return _mixed(model, x, x_adv, y, clean_weight=0.0)

    def lr_factor(self) -> float:
        return triangle(self.at, self.total, self.cfg.lr_peak)

    def check(self, model, x, y):
        """PGD at the full eps on (x, y) from a fixed random start (its own generator: the
        check never changes the training trajectory); healthy unless the robust accuracy fell
        more than check_drop below the best so far. The full eps also during a warm-up: at the
        growing eps the accuracy would fall by design, not by overfitting."""
        c, eps = self.cfg, self.cfg.eps
        generator = torch.Generator(x.device).manual_seed(0)
        x_adv = pgd(model, x, y, eps, alpha=2.5 * eps / c.check_steps, steps=c.check_steps,
                    generator=generator)
        with torch.no_grad(), eval_mode(model):
            accuracy = (model(x_adv).argmax(dim=1) == y).float().mean()
        value = float(accuracy)
        healthy = value >= self.best - c.check_drop
        self.best = max(self.best, value)
        return healthy, accuracy

    def state_dict(self):
        return {"best": self.best}

    def load_state_dict(self, state):
        self.best = float(state["best"])


@DEFENSES.register("free", FreeDefenseConfig)
class FreeTraining(WarmedEps):
    """Shafahi et al. 2019 ("Adversarial training for free!"): each batch is replayed m times;
    one backward pass per replay gives both the parameters' gradient (the family's optimizer
    steps) and the perturbation's, which takes a signed step of eps and is carried over to the
    next replay and the next batch. The perturbation's gradient comes from the training pass
    itself, so it is taken in training mode (the other defences craft in eval mode)."""

    adversarial = True

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.replays = int(cfg.replays)
        self.delta: torch.Tensor | None = None  # the carried perturbation
        self._leaf: torch.Tensor | None = None  # this replay's copy, whose .grad backward fills

    def step(self, model, x, y):
        if self.delta is None or self.delta.shape != x.shape:
            # a batch of another size (the first, or a short last one) starts from zero
            self.delta = torch.zeros_like(x)
        self._leaf = self.delta.clone().requires_grad_(True)
        return _mixed(model, x, (x + self._leaf).clamp(0, 1), y, clean_weight=0.0)

    def after_backward(self) -> None:
        # sign() ignores a loss scale, so this holds under mixed precision too
        grad = self._leaf.grad
        eps = self.eps()
        self.delta = (self._leaf.detach() + eps * grad.sign()).clamp(-eps, eps)
        self._leaf = None

    def state_dict(self):
        return {"delta": self.delta}

    def load_state_dict(self, state):
        self.delta = state["delta"]


def _kl_from(clean_log_probs: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(p || q) summed over the batch, p from the clean log-probabilities, q = softmax(logits)."""
    return F.kl_div(F.log_softmax(logits, dim=1), clean_log_probs, reduction="sum",
                    log_target=True)


@DEFENSES.register("trades", TradesDefenseConfig)
class Trades(WarmedEps):
    """Zhang et al. 2019: CE(f(x), y) + beta * KL(f(x) || f(x_adv)), x_adv maximising the KL
    term by PGD from x plus a small Gaussian start (0.001, as their code), in eval mode."""

    adversarial = True

    def _adversarial(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        c, eps = self.cfg, self.eps()
        alpha = c.step_size if eps == c.eps else c.step_size * eps / c.eps
        with eval_mode(model), torch.enable_grad():
            with torch.no_grad():
                clean = F.log_softmax(model(x), dim=1)
            adv = (x + 0.001 * torch.randn_like(x)).clamp(0, 1)
            for _ in range(c.steps):
                adv = adv.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(_kl_from(clean, model(adv)), adv)
                adv = torch.min(torch.max(adv.detach() + alpha * grad.sign(), x - eps), x + eps)
                adv = adv.clamp(0, 1)
        return adv.detach()

    def step(self, model, x, y):
        x = x.detach()
        x_adv = self._adversarial(model, x)
        logits, logits_adv = model(x), model(x_adv)
        natural = F.cross_entropy(logits, y)
        robust = _kl_from(F.log_softmax(logits, dim=1), logits_adv) / x.shape[0]
        loss = natural + self.cfg.beta * robust
        return DefenseStep(loss, {"clean": logits, "adversarial": logits_adv},
                           {"loss/natural": natural, "loss/kl": robust})


@DEFENSES.register("noise", NoiseDefenseConfig)
class GaussianNoise(Defense):
    """Training on inputs with Gaussian noise added (clipped to [0, 1]): one of the lecture's
    "failed defences", which helps against random noise but little against a worst case."""

    def step(self, model, x, y):
        noisy = (x + self.cfg.std * torch.randn_like(x)).clamp(0, 1)
        logits = model(noisy)
        return DefenseStep(F.cross_entropy(logits, y), {"noisy": logits})
