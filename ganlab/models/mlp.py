"""The intro-course MLP GAN, layer for layer, for images (flattened) and 2-D points."""

from __future__ import annotations

import itertools
import math
from enum import Enum

import torch
from torch import nn

from ganlab.images import SYMMETRIC, UNIT
from ganlab.models.base import (
    MODELS,
    BatchVariance,
    GanNetworks,
    MinibatchStd,
)


class Output(str, Enum):
    auto = "auto"  # sigmoid for images, linear for 2-D points
    sigmoid = "sigmoid"
    tanh = "tanh"
    linear = "linear"


_ACTIVATIONS = {Output.sigmoid: nn.Sigmoid, Output.tanh: nn.Tanh, Output.linear: nn.Identity}


def mlp(sizes: list[int], dropout: float = 0.0) -> list[nn.Module]:
    """Linear layers with LeakyReLU(0.2) between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(0.2))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return layers


class MlpGenerator(nn.Module):
    def __init__(self, latent_dim: int, hidden: list[int], shape: tuple[int, ...], output: Output):
        super().__init__()
        self.shape = tuple(shape)
        self.net = nn.Sequential(
            *mlp([latent_dim, *hidden, math.prod(shape)]), _ACTIVATIONS[output]()
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(z.shape[0], *self.shape)


class MlpDiscriminator(nn.Module):
    def __init__(self, hidden: list[int], shape: tuple[int, ...], dropout: float,
                 minibatch_std: bool = False, batch_variance: bool = False):
        super().__init__()
        inputs = math.prod(shape)
        layers = mlp([inputs * (2 if batch_variance else 1), *hidden, 1], dropout)
        if batch_variance:  # each input's variance over the batch, beside the input
            layers.insert(0, BatchVariance())
        if minibatch_std:  # one more feature before the scoring layer
            last = layers.pop()
            layers += [MinibatchStd(), nn.Linear(last.in_features + 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1)).squeeze(1)


@MODELS.register("mlp_gan")
def build_mlp_gan(cfg, spec) -> GanNetworks:
    output = cfg.output
    if output == Output.auto:
        output = Output.sigmoid if spec.kind == "image" else Output.linear
    value_range = None
    if spec.kind == "image":
        if output == Output.linear:
            from ganlab.errors import UserError

            raise UserError("model.output=linear does not give images; use sigmoid or tanh")
        value_range = UNIT if output == Output.sigmoid else SYMMETRIC
    G = MlpGenerator(cfg.latent_dim, list(cfg.g_hidden), spec.shape, output)
    D = MlpDiscriminator(list(cfg.d_hidden), spec.shape, cfg.d_dropout, cfg.minibatch_std,
                         cfg.batch_variance)
    return GanNetworks(G=G, D=D, latent_dim=cfg.latent_dim, value_range=value_range)
