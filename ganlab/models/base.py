"""The model registry and what a GAN architecture builder returns."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import nn

from ganlab.registry import Registry

# name -> builder(cfg.model, spec: DataSpec) -> the networks, one signature for all: GAN
# architectures return GanNetworks, autoencoders AutoencoderNetworks, classifiers an nn.Module
# mapping [0, 1] images to logits, CycleGAN CycleganNetworks. Whatever a builder needs is in
# the model's settings (a family resolves choices that depend on other sections first)
MODELS: Registry = Registry("model")


@dataclass
class GanNetworks:
    G: nn.Module  # (N, latent_dim) -> a batch shaped like the data; conditional: G(z, labels)
    D: nn.Module  # a data batch -> (N,) raw scores (logits); conditional: D(x, labels)
    latent_dim: int
    value_range: tuple[float, float] | None  # G's image range; None for 2-D points
    num_classes: int = 0  # > 0: class-conditional networks


class MinibatchStd(nn.Module):
    """Karras et al.'s minibatch standard deviation: the std of every feature over groups of
    up to `group_size` examples, averaged to one number per group and appended as an extra
    feature (a constant plane for images). A collapsed batch has a small std, which D sees."""

    def __init__(self, group_size: int = 4) -> None:
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        g = math.gcd(n, self.group_size)  # groups must tile the batch; one example: std 0
        # example i belongs to group i % (n // g): groups mix the batch's order
        y = x.reshape(g, n // g, *x.shape[1:]).float()
        std = (y - y.mean(0)).pow(2).mean(0).add(1e-8).sqrt()
        per_group = std.flatten(1).mean(1)  # (n // g,)
        extra = per_group.repeat(g).to(x.dtype)  # (n,): each example's group value
        if x.dim() == 2:
            return torch.cat([x, extra[:, None]], dim=1)
        plane = extra.view(n, 1, *([1] * (x.dim() - 2))).expand(n, 1, *x.shape[2:])
        return torch.cat([x, plane], dim=1)


class BatchVariance(nn.Module):
    """The lectures' per-pixel batch variance, at D's input: the variance over the whole batch
    of every input value (every pixel, averaged over channels), appended as one more input
    channel (a plane for images; for flat inputs, one value per input). A collapsed batch
    shows as zeros. An alternative to MinibatchStd (model.batch_variance)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.float().var(dim=0, unbiased=False, keepdim=True)  # (1, C, ...) or (1, F)
        if x.dim() > 2:
            var = var.mean(dim=1, keepdim=True)  # (1, 1, H, W)
        return torch.cat([x, var.to(x.dtype).expand(x.shape[0], *var.shape[1:])], dim=1)


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
