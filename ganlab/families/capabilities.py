"""What commands need from a family, as small typed protocols.

`sample`, `translate`, `latent`, `eval`, `attack` and `play` check a loaded family with
isinstance against these, and say in one line when a checkpoint lacks what they need
(`require`). A family has a capability by having its members; nothing is registered.
"""

from __future__ import annotations

import contextlib
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
class TruncatedSampler(Sampler, Protocol):
    """A sampler with the truncation trick, which trades diversity for fidelity (StyleGAN:
    w pulled toward the tracked mean w; BigGAN: z resampled inside a threshold). Under
    `truncated(psi)`, sample_noise and generate draw truncated samples; psi = 1 is plain
    sampling, smaller psi stays closer to the typical image."""

    def truncated(self, psi: float) -> contextlib.AbstractContextManager[None]: ...


@runtime_checkable
class StyleMixer(Sampler, Protocol):
    """A style-based sampler (StyleGAN): its `num_styles` layers each take a w, and
    mix(z_coarse, z_fine, crossover) draws images whose layers 0..crossover-1 take
    z_coarse's w and the rest z_fine's: `sample mixing=true`."""

    num_styles: int
    default_crossover: int

    def mix(self, z_coarse: torch.Tensor, z_fine: torch.Tensor,
            crossover: int) -> torch.Tensor: ...


@runtime_checkable
class VolumeSampler(Sampler, Protocol):
    """A sampler of 3-D shapes (gan3d): to_uint8 gives 0/1 occupancy grids (N, 1, X, Y, Z),
    y up, and render(voxels, nrow, style) pictures them as one uint8 (3, H, W) image (style:
    shaded, views or mesh). `sample` writes their .npz key `voxels` and renders its .png."""

    def render(self, voxels: torch.Tensor, nrow: int | None = None,
               style: str = "shaded") -> torch.Tensor: ...


@runtime_checkable
class Translator(Protocol):
    """Maps uint8 images of one domain to the other: `translate`."""

    def translate(self, images: torch.Tensor, direction: str) -> torch.Tensor: ...

    def check_size(self, size: int, key: str) -> None: ...


@runtime_checkable
class OneWayTranslator(Translator, Protocol):
    """A translator whose one network G maps its input to the output (pix2pix, SRGAN,
    SPADE): generator_input() says what G takes, as (shape without the batch, dtype, what
    the values are), and generator_output() what it gives; `export` writes G from them."""

    G: nn.Module

    def generator_input(self) -> tuple[tuple[int, ...], torch.dtype, str]: ...

    def generator_output(self) -> str: ...


@runtime_checkable
class HeldoutTranslations(Translator, Protocol):
    """A translator that holds its held-out data: per direction it translates (its
    `directions`), the uint8 inputs and the real images of the target domain. The Inception
    FID of the translations against those real images is measured from them."""

    def heldout_pairs(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]: ...


@runtime_checkable
class Autoencoder(Protocol):
    """Encodes [0, 1] images to codes and decodes them back: `latent`."""

    latent_dim: int

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class Player(Protocol):
    """A learned game engine (GameGAN): from a first frame of the game `env` (uint8 (C, H, W),
    H = W = frame_size) and actions (T, action_dim) (one-hot for discrete ones), play renders
    the frames that follow, uint8 (T + 1, C, H, W), its noise drawn from `generator`: `play`."""

    env: str
    frame_size: int
    action_dim: int
    discrete: bool

    def play(self, first: torch.Tensor, actions: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor: ...


@runtime_checkable
class Classifier(Protocol):
    """Holds `model`, an nn.Module mapping [0, 1] images to logits: `attack`."""

    model: nn.Module


def num_classes(family) -> int:
    """How many classes a conditional sampler generates; 0 for any other family."""
    return int(family.num_classes) if isinstance(family, ConditionalSampler) else 0


def check_truncation(psi: float, command: str) -> None:
    """truncation= of `sample` and `eval`: psi in (0, 1]."""
    if not 0 < psi <= 1:
        raise UserError(f"{command}: truncation must be in (0, 1] (1: no truncation), got {psi}")


def truncation(family, psi: float, source: str, command: str):
    """The context in which `family` samples with truncation psi: nothing to do at psi = 1;
    a one-line error when the model has no truncation trick."""
    if psi == 1.0:
        return contextlib.nullcontext()
    require(family, TruncatedSampler, f"{command}: truncation={psi} needs a model with the "
            "truncation trick (stylegan, biggan)", source)
    return family.truncated(psi)


def require(family, capability: type, what: str, source: str) -> None:
    """A UserError in one line when `family` (loaded from `source`) lacks the capability:
    e.g. require(f, Sampler, "sample draws new images", "outputs/run")."""
    if not isinstance(family, capability):
        config = getattr(family, "config", None)
        cfg = config.model if config is not None else None
        kind = f"a {cfg.family} model ({cfg.name})" if cfg is not None else type(family).__name__
        raise UserError(f"{what}; {source} holds {kind}")
