"""Encoder/decoder pairs for autoencoders and VAEs: MLP (the pytorch/examples VAE shape by
default, 784-400-20 / 20-400-784) or convolutional (stride-2 stages down to 4x4 or 7x7).

The encoder maps [0, 1] images to `latent_dim` numbers (an autoencoder's code) or to
2 * latent_dim (a VAE's mu and log-variance); the decoder maps codes to per-pixel logits, whose
sigmoid is the reconstructed image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from torch import nn

from ganlab.data.base import DataSpec
from ganlab.errors import UserError
from ganlab.models.base import MODELS, mlp_layers


class Architecture(str, Enum):
    mlp = "mlp"
    conv = "conv"


@dataclass
class AutoencoderNetworks:
    encoder: nn.Module  # (N, C, H, W) in [0, 1] -> (N, latent_dim) or (N, 2 * latent_dim)
    decoder: nn.Module  # (N, latent_dim) -> (N, C, H, W) logits
    latent_dim: int


def _conv_stages(size: int) -> int:
    """Stride-2 stages while the side stays even and above 4 (64 -> 4x4, 28 -> 7x7)."""
    stages = 0
    while size > 4 and size % 2 == 0:
        size //= 2
        stages += 1
    return stages


def _conv_networks(cfg, spec: DataSpec, out: int) -> tuple[nn.Module, nn.Module]:
    channels, size = spec.shape[0], spec.shape[1]
    stages = _conv_stages(size)
    if stages == 0:
        raise UserError(f"model.architecture=conv needs images of an even size above 4 px, "
                        f"got {size} px")
    widths = [cfg.features * 2**i for i in range(stages)]
    side = size // 2**stages
    enc: list[nn.Module] = []
    c_in = channels
    for w in widths:
        enc += [nn.Conv2d(c_in, w, 4, 2, 1), nn.BatchNorm2d(w), nn.LeakyReLU(0.2)]
        c_in = w
    enc += [nn.Flatten(), nn.Linear(c_in * side * side, out)]
    dec: list[nn.Module] = [nn.Linear(cfg.latent_dim, c_in * side * side),
                            nn.Unflatten(1, (c_in, side, side))]
    for w in reversed(widths[:-1]):
        dec += [nn.BatchNorm2d(c_in), nn.ReLU(), nn.ConvTranspose2d(c_in, w, 4, 2, 1)]
        c_in = w
    dec += [nn.BatchNorm2d(c_in), nn.ReLU(), nn.ConvTranspose2d(c_in, channels, 4, 2, 1)]
    return nn.Sequential(*enc), nn.Sequential(*dec)


@MODELS.register("ae")
@MODELS.register("vae")
@MODELS.register("conv_vae")
def build_autoencoder(cfg, spec: DataSpec) -> AutoencoderNetworks:
    """A VAE's encoder (model.family=vae) outputs mu and log-variance: twice the latent."""
    variational = cfg.family == "vae"
    if spec.kind != "image":
        raise UserError(f"model={cfg.name} encodes images; dataset {spec.name} is 2-D points")
    out = 2 * cfg.latent_dim if variational else cfg.latent_dim
    if cfg.architecture == Architecture.conv:
        encoder, decoder = _conv_networks(cfg, spec, out)
    else:
        pixels = math.prod(spec.shape)
        hidden = list(cfg.hidden)
        encoder = nn.Sequential(nn.Flatten(), *mlp_layers([pixels, *hidden, out]))
        decoder = nn.Sequential(*mlp_layers([cfg.latent_dim, *reversed(hidden), pixels]),
                                nn.Unflatten(1, tuple(spec.shape)))
    return AutoencoderNetworks(encoder, decoder, cfg.latent_dim)
