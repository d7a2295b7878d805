"""SRGAN networks (Ledig et al. 2017): the SRResNet generator and the SRGAN discriminator.

The generator (the paper's Fig. 4, as twtygqyy/pytorch-SRResNet builds it, with the paper's
PReLU): a 9x9 conv + PReLU head, B residual blocks (conv3x3-BN-PReLU-conv3x3-BN, plus the
block's input), a conv3x3-BN whose output is added to the head's (the long skip), one
conv3x3 -> pixel shuffle x2 -> PReLU block per factor 2 of the scale, and a 9x9 conv tail.
B = 16 and width 64 are the paper's; model.blocks and model.g_features make it small for a
CPU. One deliberate change: a tanh on the tail, as every ganlab generator ends, so outputs
are [-1, 1] images like the targets (the paper leaves the output linear).

The discriminator: conv3x3 + LeakyReLU(0.2), then seven conv3x3-BN-LeakyReLU layers whose
widths double every second layer (64, 128, 128, 256, 256, 512, 512 for width 64) and whose
strides alternate 2, 1 (four stride-2 layers in all), then a dense 1024 + LeakyReLU and a
dense 1 (a logit). The paper's dense head sees the 6x6 map of its 96-px crops; here the map is
averaged to 1x1 first, so any image size works, 7-px or 28-px digits included (the leftthomas
and tensorlayer ports pool the same way).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ganlab.errors import UserError
from ganlab.models.base import MODELS

D_WIDTH_STEPS = (1, 2, 2, 4, 4, 8, 8)  # the paper's 64, 128, 128, 256, 256, 512, 512 over 64
D_STRIDES = (2, 1, 2, 1, 2, 1, 2)  # after the first stride-1 conv: four halvings in all
D_DENSE = 16  # the dense layer's width over d_features: 1024 for 64


def check_scale(scale: int) -> None:
    """Upsampling is by pixel-shuffle x2 blocks: a power of two."""
    if scale < 2 or scale & (scale - 1):
        raise UserError(f"model.scale={scale}: the SRResNet upsamples by pixel-shuffle x2 "
                        "blocks, so the scale must be a power of two (2 or 4)")


class ResidualBlock(nn.Module):
    """x + BN(conv(PReLU(BN(conv(x))))): the paper's residual block, at constant width."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False),  # BN's shift is the bias
            nn.BatchNorm2d(width),
            nn.PReLU(width),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class SRResNet(nn.Module):
    """Low-resolution [-1, 1] images (N, C, h, w) -> (N, C, scale h, scale w) in [-1, 1]."""

    def __init__(self, channels: int, width: int = 64, blocks: int = 16, scale: int = 4) -> None:
        super().__init__()
        check_scale(scale)
        self.scale = scale
        self.head = nn.Sequential(nn.Conv2d(channels, width, 9, padding=4), nn.PReLU(width))
        self.blocks = nn.Sequential(*(ResidualBlock(width) for _ in range(blocks)))
        self.mid = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False),
                                 nn.BatchNorm2d(width))
        upsample: list[nn.Module] = []
        for _ in range(int(math.log2(scale))):
            upsample += [nn.Conv2d(width, 4 * width, 3, padding=1), nn.PixelShuffle(2),
                         nn.PReLU(width)]
        self.upsample = nn.Sequential(*upsample)
        self.tail = nn.Conv2d(width, channels, 9, padding=4)

    def forward(self, x: Tensor) -> Tensor:
        features = self.head(x)
        features = features + self.mid(self.blocks(features))  # the long skip
        return torch.tanh(self.tail(self.upsample(features)))


class SRDiscriminator(nn.Module):
    """[-1, 1] images of any size -> one logit each (N,)."""

    def __init__(self, channels: int, width: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1),
                                   nn.LeakyReLU(0.2, inplace=True)]
        previous = width
        for step, stride in zip(D_WIDTH_STEPS, D_STRIDES, strict=True):
            layers += [nn.Conv2d(previous, step * width, 3, stride, padding=1, bias=False),
                       nn.BatchNorm2d(step * width), nn.LeakyReLU(0.2, inplace=True)]
            previous = step * width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(previous, D_DENSE * width),
                                  nn.LeakyReLU(0.2, inplace=True),
                                  nn.Linear(D_DENSE * width, 1))

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.features(x).mean(dim=(2, 3))  # any size: the map averaged to 1x1
        return self.head(pooled).squeeze(1)


@dataclass
class SrganNetworks:
    G: SRResNet
    D: SRDiscriminator | None  # None for srresnet (no adversarial loss)


@MODELS.register("srgan")
@MODELS.register("srresnet")
def build_srgan(c, spec) -> SrganNetworks:
    """The SRResNet at model.scale, and the discriminator when the adversarial weight is not
    0, for images of the data's channels (PyTorch's default init, as the ports keep)."""
    channels = spec.shape[0]
    G = SRResNet(channels, int(c.g_features), int(c.blocks), int(c.scale))
    D = SRDiscriminator(channels, int(c.d_features)) if float(c.adversarial_weight) else None
    return SrganNetworks(G, D)
