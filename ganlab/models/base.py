"""The model registry and what a GAN architecture builder returns."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from torch import nn

from ganlab.registry import Registry

# name -> builder. GAN architectures: (cfg.model, spec, *, gradient_penalty: bool) -> GanNetworks;
# classifiers: (cfg.model, spec) -> nn.Module mapping [0, 1] images to logits
MODELS: Registry = Registry("model")


@dataclass
class GanNetworks:
    G: nn.Module  # (N, latent_dim) -> a batch shaped like the data
    D: nn.Module  # a data batch -> (N,) raw scores (logits)
    latent_dim: int
    value_range: tuple[float, float] | None  # G's image range; None for 2-D points


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def mlp_layers(sizes: list[int], dropout: float = 0.0) -> list[nn.Module]:
    """Linear + ReLU (+ dropout) between consecutive sizes; the last layer is linear."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return layers
