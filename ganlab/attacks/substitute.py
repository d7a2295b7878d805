"""Papernot et al. (2017), "Practical Black-Box Attacks against Machine Learning".

The attacker sees only the labels the target (the oracle) gives. It trains a substitute on a
small seed set labelled by the oracle, grows the set by Jacobian-based augmentation
(x + lambda * sign(d F_{O(x)}(x) / dx), the step's sign flipping every tau rounds), and crafts
adversarial examples on the substitute, which transfer to the target.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from ganlab.attacks.gradient import eval_mode
from ganlab.config import SubstituteArchitecture
from ganlab.data.base import DataSpec
from ganlab.families.classifier import LenetConfig, MlpClassifierConfig
from ganlab.models.classifiers import build_lenet, build_mlp
from ganlab.optim import adam

log = logging.getLogger("ganlab")


@dataclass
class Substitute:
    model: nn.Module
    queries: int  # labels asked of the oracle
    training_set_size: int


def label_oracle(model: nn.Module,
                 batch_size: int = 1000) -> Callable[[torch.Tensor], torch.Tensor]:
    """The target as the attacker sees it: images in, predicted labels out, nothing else."""

    @torch.no_grad()
    def oracle(x: torch.Tensor) -> torch.Tensor:
        with eval_mode(model):
            return torch.cat([model(x[i : i + batch_size]).argmax(dim=1)
                              for i in range(0, len(x), batch_size)])

    return oracle


def jacobian_augmentation(model: nn.Module, x: torch.Tensor, labels: torch.Tensor,
                          step: float) -> torch.Tensor:
    """x + step * sign of the gradient of the substitute's logit for each oracle label."""
    with eval_mode(model), torch.enable_grad():
        x = x.detach().requires_grad_(True)
        selected = model(x).gather(1, labels[:, None]).sum()  # row i depends on x_i only
        (grad,) = torch.autograd.grad(selected, x)
    return (x.detach() + step * grad.sign()).clamp(0, 1)


def _fit(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
         epochs: int, batch_size: int, generator: torch.Generator) -> None:
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator).to(x.device)
        for i in range(0, len(x), batch_size):
            index = order[i : i + batch_size]
            loss = F.cross_entropy(model(x[index]), y[index])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()


def train_substitute(oracle: Callable[[torch.Tensor], torch.Tensor], seed_x: torch.Tensor,
                     spec: DataSpec, cfg, generator: torch.Generator) -> Substitute:
    """Algorithm 1 of the paper: `cfg.rounds` rounds of training, the set doubling between
    them. cfg: architecture, channels, hidden, lr, epochs, batch_size, rounds, lmbda, tau."""
    if cfg.architecture == SubstituteArchitecture.lenet:
        model_cfg = LenetConfig(channels=list(cfg.channels), hidden=list(cfg.hidden))
        model = build_lenet(OmegaConf.structured(model_cfg), spec)
    else:
        model = build_mlp(OmegaConf.structured(MlpClassifierConfig(hidden=list(cfg.hidden))), spec)
    model = model.to(seed_x.device)
    opt = adam(model.parameters(), lr=cfg.lr)
    x, y = seed_x, oracle(seed_x)
    queries = len(x)
    for rho in range(cfg.rounds):
        _fit(model, opt, x, y, cfg.epochs, cfg.batch_size, generator)
        log.info("substitute round %d/%d: %d oracle-labelled images", rho + 1, cfg.rounds, len(x))
        if rho == cfg.rounds - 1:
            break
        step = cfg.lmbda * (-1) ** (rho // cfg.tau)  # periodic step size
        new_x = jacobian_augmentation(model, x, y, step)
        new_y = oracle(new_x)
        queries += len(new_x)
        x, y = torch.cat([x, new_x]), torch.cat([y, new_y])
    return Substitute(model, queries, len(x))
