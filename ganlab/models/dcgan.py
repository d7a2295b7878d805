"""DCGAN (Radford et al. 2016) for 28, 32 and 64 px images with 1 or 3 channels."""

from __future__ import annotations

import math
from enum import Enum

import torch
from torch import nn

from ganlab.errors import UserError
from ganlab.images import SYMMETRIC
from ganlab.models.base import (
    MODELS,
    BatchVariance,
    GanNetworks,
    MinibatchStd,
)


class Upsample(str, Enum):
    transposed = "transposed"  # ConvTranspose2d, stride 2 (Radford et al.)
    nearest = "nearest"  # nearest-neighbour upsample + 3x3 conv: no checkerboard artifacts
    bilinear = "bilinear"  # bilinear upsample + 3x3 conv (Odena et al.'s resize-convolution)


class Norm(str, Enum):
    auto = "auto"  # batch norm, or layer norm when the loss has a gradient penalty
    batch = "batch"
    layer = "layer"
    none = "none"

# image size -> spatial size right after the latent projection (then doubled up to the size)
_BASE_SIZE = {28: 7, 32: 4, 64: 4}


def _n_doublings(size: int) -> int:
    if size not in _BASE_SIZE:
        raise UserError(f"dcgan supports image sizes {sorted(_BASE_SIZE)}, not {size}")
    return int(math.log2(size // _BASE_SIZE[size]))


def _up(c_in: int, c_out: int, mode: Upsample) -> nn.Module:
    if mode == Upsample.transposed:
        return nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False)
    upsample = (nn.Upsample(scale_factor=2, mode="nearest") if mode == Upsample.nearest else
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
    return nn.Sequential(upsample, nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False))


def _norm(kind: Norm, channels: int) -> nn.Module:
    if kind == Norm.batch:
        return nn.BatchNorm2d(channels)
    if kind == Norm.layer:
        return nn.GroupNorm(1, channels)  # normalises over (C, H, W) per example
    return nn.Identity()


class DcganGenerator(nn.Module):
    def __init__(self, latent_dim: int, channels: int, size: int, features: int, up: Upsample):
        super().__init__()
        n = _n_doublings(size)
        width = features * 2 ** (n - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, width, _BASE_SIZE[size], 1, 0, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
        ]
        for _ in range(n - 1):
            layers += [_up(width, width // 2, up), nn.BatchNorm2d(width // 2), nn.ReLU(True)]
            width //= 2
        layers += [_up(width, channels, up), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])


class DcganDiscriminator(nn.Module):
    """Strided convs down to the base size, then one conv to a score. net[-1] is that last
    conv: conditional discriminators reuse net[:-1] as the feature extractor."""

    def __init__(self, channels: int, size: int, features: int, norm: Norm, dropout: float,
                 minibatch_std: bool = False, batch_variance: bool = False):
        super().__init__()
        n = _n_doublings(size)
        width = features
        # the batch variance plane joins the input channels
        first = [BatchVariance()] if batch_variance else []
        layers: list[nn.Module] = [*first,
                                   nn.Conv2d(channels + len(first), width, 4, 2, 1, bias=False),
                                   nn.LeakyReLU(0.2, True)]  # no norm on the input layer
        for _ in range(n - 1):
            if dropout > 0:
                layers.append(nn.Dropout2d(dropout))
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=False), _norm(norm, width * 2),
                       nn.LeakyReLU(0.2, True)]
            width *= 2
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        if minibatch_std:  # one more feature plane, right before the scoring conv
            layers.append(MinibatchStd())
            width += 1
        layers.append(nn.Conv2d(width, 1, _BASE_SIZE[size], 1, 0, bias=False))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


def dcgan_init(module: nn.Module) -> None:
    """Radford et al.: conv weights ~ N(0, 0.02); norm scales ~ N(1, 0.02), shifts 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def check_image_spec(spec, model: str) -> tuple[int, int]:
    """(channels, size) of a square image dataset, or a UserError naming the model."""
    if spec.kind != "image":
        raise UserError(f"{model} needs an image dataset; {spec.name!r} holds {spec.kind}")
    channels, height, width = spec.shape
    if height != width:
        raise UserError(f"{model} needs square images, not {height}x{width}")
    return channels, height


def discriminator_norm(cfg, gradient_penalty: bool = False) -> Norm:
    """model.d_norm, with auto resolved: batch norm, or layer norm under a gradient penalty
    (a per-example penalty is wrong under batch norm: Gulrajani et al.). The GAN family
    resolves auto before building, since it knows the loss."""
    if cfg.d_norm == Norm.auto:
        return Norm.layer if gradient_penalty else Norm.batch
    return cfg.d_norm


@MODELS.register("dcgan")
def build_dcgan(cfg, spec) -> GanNetworks:
    channels, size = check_image_spec(spec, "dcgan")
    G = DcganGenerator(cfg.latent_dim, channels, size, cfg.g_features, cfg.upsample)
    D = DcganDiscriminator(channels, size, cfg.d_features, discriminator_norm(cfg),
                           cfg.d_dropout, cfg.minibatch_std, cfg.batch_variance)
    G.apply(dcgan_init)
    D.apply(dcgan_init)
    return GanNetworks(G=G, D=D, latent_dim=cfg.latent_dim, value_range=SYMMETRIC)
