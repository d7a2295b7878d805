"""Image classifiers for the adversarial lab: softmax regression, an MLP, a LeNet-style convnet.

Each takes [0, 1] images and returns logits; input standardisation happens inside forward, so
an attack never needs to know about it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ganlab.data.base import DataSpec
from ganlab.errors import UserError
from ganlab.models.base import MODELS, mlp_layers


class Standardize(nn.Module):
    """(x - mean) / std with fixed scalars, stored in the state dict."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _check_spec(name: str, spec: DataSpec) -> None:
    if spec.kind != "image":
        raise UserError(f"model={name} classifies images; dataset {spec.name} is 2-D points")
    if spec.num_classes < 2:
        raise UserError(f"model={name} needs images labelled with at least 2 classes; "
                        f"dataset {spec.name} has {spec.num_classes}")


@MODELS.register("softmax")
def build_softmax(cfg, spec: DataSpec) -> nn.Module:
    _check_spec(cfg.name, spec)
    return nn.Sequential(Standardize(cfg.input_mean, cfg.input_std), nn.Flatten(),
                         nn.Linear(math.prod(spec.shape), spec.num_classes))


@MODELS.register("mlp")
def build_mlp(cfg, spec: DataSpec) -> nn.Module:
    _check_spec(cfg.name, spec)
    sizes = [math.prod(spec.shape), *cfg.hidden, spec.num_classes]
    return nn.Sequential(Standardize(cfg.input_mean, cfg.input_std), nn.Flatten(),
                         *mlp_layers(sizes, cfg.dropout))


@MODELS.register("lenet")
def build_lenet(cfg, spec: DataSpec) -> nn.Module:
    _check_spec(cfg.name, spec)
    channels, size = spec.shape[0], spec.shape[1]
    layers: list[nn.Module] = [Standardize(cfg.input_mean, cfg.input_std)]
    for width in cfg.channels:
        if size < 2:
            raise UserError(f"model.channels={list(cfg.channels)} pools {spec.shape[1]}-px "
                            "images below 1 px; use fewer conv stages")
        layers += [nn.Conv2d(channels, width, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2)]
        channels, size = width, size // 2
    layers.append(nn.Flatten())
    layers += mlp_layers([channels * size * size, *cfg.hidden, spec.num_classes], cfg.dropout)
    return nn.Sequential(*layers)
