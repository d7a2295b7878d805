"""3D-GAN's networks (Wu et al. 2016): volumetric transposed convolutions from a latent
vector to an occupancy grid, and a mirrored volumetric discriminator.

G: z (200-d in the paper) -> ConvTranspose3d (kernel 4) to 4^3 -> (kernel 4, stride 2, pad 1,
BatchNorm, ReLU) doubling -> 1 channel at the grid size, sigmoid: an occupancy probability per
voxel. The paper's 64^3 generator has widths 512, 256, 128, 64 (model.g_features=64 is the
width of the last hidden layer, doubling towards the input); smaller grids drop the first
layers (32^3: 256, 128, 64; 16^3: 128, 64). No biases (the released models have none).
D mirrors it: strided Conv3d (LeakyReLU 0.2, BatchNorm after the first layer) down to 4^3,
then one 4^3 convolution to a score (a logit; the loss applies the sigmoid).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ganlab.errors import UserError
from ganlab.images import UNIT
from ganlab.models.base import MODELS, BatchVariance, GanNetworks, MinibatchStd
from ganlab.models.dcgan import Norm, discriminator_norm

BASE = 4  # the grid side right after the latent projection, and before D's last conv
SIZES = (8, 16, 32, 64, 128)  # grid sides the networks take: 4 doubled once or more


def check_grid_size(size: int, what: str = "dataset.size") -> None:
    """A UserError unless `size` is one the 3-D networks take."""
    if size not in SIZES:
        raise UserError(f"{what}={size}: model=gan3d takes grids of {', '.join(map(str, SIZES))} "
                        "voxels a side (4 doubled by its layers; 16 for a CPU, 32 by default, "
                        "64 in the paper)")


def _norm3d(kind: Norm, channels: int) -> nn.Module:
    if kind == Norm.batch:
        return nn.BatchNorm3d(channels)
    if kind == Norm.layer:
        return nn.GroupNorm(1, channels)  # over (C, D, H, W) per example
    return nn.Identity()


class Generator3d(nn.Module):
    def __init__(self, latent_dim: int, size: int, features: int) -> None:
        super().__init__()
        n = int(math.log2(size // BASE))
        width = features * 2 ** (n - 1)
        layers: list[nn.Module] = [nn.ConvTranspose3d(latent_dim, width, BASE, 1, 0, bias=False),
                                   nn.BatchNorm3d(width), nn.ReLU(True)]
        for _ in range(n - 1):
            layers += [nn.ConvTranspose3d(width, width // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm3d(width // 2), nn.ReLU(True)]
            width //= 2
        layers += [nn.ConvTranspose3d(width, 1, 4, 2, 1, bias=False), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None, None])


class Discriminator3d(nn.Module):
    def __init__(self, size: int, features: int, norm: Norm, dropout: float = 0.0,
                 minibatch_std: bool = False, batch_variance: bool = False) -> None:
        super().__init__()
        n = int(math.log2(size // BASE))
        first = [BatchVariance()] if batch_variance else []
        width = features
        layers: list[nn.Module] = [*first, nn.Conv3d(1 + len(first), width, 4, 2, 1, bias=False),
                                   nn.LeakyReLU(0.2, True)]
        for _ in range(n - 1):
            if dropout > 0:
                layers.append(nn.Dropout3d(dropout))
            layers += [nn.Conv3d(width, width * 2, 4, 2, 1, bias=False), _norm3d(norm, width * 2),
                       nn.LeakyReLU(0.2, True)]
            width *= 2
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        if minibatch_std:
            layers.append(MinibatchStd())
            width += 1
        layers.append(nn.Conv3d(width, 1, BASE, 1, 0, bias=False))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


def gan3d_init(module: nn.Module) -> None:
    """DCGAN's initialisation, which the 3D-GAN code bases keep: N(0, 0.02) conv weights."""
    if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, (nn.BatchNorm3d, nn.GroupNorm)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


@MODELS.register("gan3d")
def build_gan3d(cfg, spec) -> GanNetworks:
    if spec.kind != "voxels":
        raise UserError(f"model=gan3d needs voxel grids (dataset=voxels); {spec.name!r} holds "
                        f"{spec.kind}")
    size = spec.shape[-1]
    check_grid_size(size)
    G = Generator3d(cfg.latent_dim, size, cfg.g_features)
    D = Discriminator3d(size, cfg.d_features, discriminator_norm(cfg), cfg.d_dropout,
                        cfg.minibatch_std, cfg.batch_variance)
    G.apply(gan3d_init)
    D.apply(gan3d_init)
    return GanNetworks(G=G, D=D, latent_dim=cfg.latent_dim, value_range=UNIT)
