"""What commands need from a family, as small typed protocols.

`sample`, `translate`, `latent`, `eval` and `attack` check a loaded family with isinstance
against these, and say in one line when a checkpoint lacks what they need (`require`). A
family has a capability by having its members; nothing is registered.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

from ganlab.errors import UserError


@runtime_checkable
class Sampler(Protocol):
    """Draws images (or 2-D points) from noise: `sample` and the sample-quality metrics."""

    latent_dim: int

    def sample_noise(self, n: int, generator: torch.Generator) -> torch.Tensor: ...

    def generate(self, z: torch.Tensor) -> torch.Tensor: ...

    def to_uint8(self, images: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class ConditionalSampler(Sampler, Protocol):
    """A sampler whose generate(z, labels=...) takes class labels when num_classes > 0."""

    num_classes: int


@runtime_checkable
class Translator(Protocol):
    """Maps uint8 images of one domain to the other: `translate`."""

    def translate(self, images: torch.Tensor, direction: str) -> torch.Tensor: ...

    def check_size(self, size: int, key: str) -> None: ...


@runtime_checkable
class Autoencoder(Protocol):
    """Encodes [0, 1] images to codes and decodes them back: `latent`."""

    latent_dim: int

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class Classifier(Protocol):
    """Holds `model`, an nn.Module mapping [0, 1] images to logits: `attack`."""

    model: nn.Module


def num_classes(family) -> int:
    """How many classes a conditional sampler generates; 0 for any other family."""
    return int(family.num_classes) if isinstance(family, ConditionalSampler) else 0


def require(family, capability: type, what: str, source: str) -> None:
    """A UserError in one line when `family` (loaded from `source`) lacks the capability:
    e.g. require(f, Sampler, "sample draws new images", "outputs/run")."""
    if not isinstance(family, capability):
        cfg = family.config.model if family.config is not None else None
        kind = f"a {cfg.family} model ({cfg.name})" if cfg is not None else type(family).__name__
        raise UserError(f"{what}; {source} holds {kind}")
