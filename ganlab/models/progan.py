"""Progressive growing of GANs (Karras et al. 2018) at small scale.

Both networks are built for every stage up front (4 px, 8 px, ..., the final size), so one
optimizer covers all their parameters and checkpoints keep the same keys through the run; a
stage's layers get gradients once the schedule reaches it. Which stage runs, and how far the
newest stage has faded in (alpha), is plain state set by the family before each step
(`set_progress`); it is not stored in checkpoints (the family recomputes it from its step).

- Equalised learning rate: weights stored as N(0, 1) and scaled at runtime by
  gain / sqrt(fan_in) (gain sqrt(2), 1 for toRGB and D's output); biases start at 0.
- G: pixelwise feature normalisation on z and after every conv, LeakyReLU(0.2), nearest
  upsampling, a linear 1x1 toRGB per resolution (no tanh, as in the paper).
- D: a 1x1 fromRGB per resolution, LeakyReLU(0.2), 2x2 average pooling, minibatch standard
  deviation in the last (4 px) block, a linear score.
- Widths: `max_features` up to 16 px, halved per doubling above, never below `min_features`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ganlab.errors import UserError
from ganlab.images import SYMMETRIC
from ganlab.models.base import (
    MODELS,
    GanNetworks,
    MinibatchStd,
)

BASE_RESOLUTION = 4
MIN_IMAGE_SIZE = 8  # at least one doubling after the 4 px start
LEAK = 0.2


def padded_size(size: int) -> int:
    """The power of two the networks work at: the image size, or the next power above it
    (28 -> 32); real images are padded to it and generated ones centre-cropped back."""
    return 1 << max(0, size - 1).bit_length()


def n_stages_for(size: int) -> int:
    """Stages 4, 8, ..., padded_size(size): 4 for 28 or 32 px, 5 for 64 px."""
    return int(math.log2(padded_size(size) // BASE_RESOLUTION)) + 1


def resolution(stage: int) -> int:
    return BASE_RESOLUTION * 2**stage


def features(res: int, max_features: int, min_features: int) -> int:
    """max_features up to 16 px, then halved per doubling, but never below min_features."""
    doublings = max(0, int(math.log2(res)) - 4)
    return max(min_features, max_features >> doublings)


def check_size(size: int, height: int | None = None, model: str = "progan") -> None:
    height = size if height is None else height
    if height != size:
        raise UserError(f"{model} needs square images, not {height}x{size}")
    if size < MIN_IMAGE_SIZE:
        raise UserError(f"{model} grows from 4 px to the image size, which must be at least "
                        f"{MIN_IMAGE_SIZE} px (dataset.image_size={size})")


# --- equalised learning rate --------------------------------------------------------------


class EqualizedConv2d(nn.Conv2d):
    """A conv whose weight is stored as N(0, 1) and multiplied by gain / sqrt(fan_in) at every
    forward (Karras et al.): every layer learns at the same speed under Adam. A subclass of
    nn.Conv2d, so model.spectral_norm still finds it."""

    def __init__(self, c_in: int, c_out: int, kernel: int, padding: int = 0,
                 gain: float = math.sqrt(2)) -> None:
        super().__init__(c_in, c_out, kernel, padding=padding)
        self.scale = gain / math.sqrt(c_in * kernel * kernel)
        nn.init.normal_(self.weight, 0.0, 1.0)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.scale, self.bias)


class EqualizedLinear(nn.Linear):
    def __init__(self, n_in: int, n_out: int, gain: float = math.sqrt(2)) -> None:
        super().__init__(n_in, n_out)
        self.scale = gain / math.sqrt(n_in)
        nn.init.normal_(self.weight, 0.0, 1.0)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class PixelNorm(nn.Module):
    """Each pixel's feature vector divided by its root mean square over the channels."""

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)


def _act() -> nn.Module:
    return nn.LeakyReLU(LEAK)


def _conv_block(c_in: int, c_out: int, pixel_norm: bool) -> list[nn.Module]:
    return [EqualizedConv2d(c_in, c_out, 3, padding=1), _act()] + (
        [PixelNorm()] if pixel_norm else [])


class _Progress(nn.Module):
    """The current stage (0: 4 px) and the fade-in of its layers (alpha in [0, 1])."""

    n_stages: int

    def set_progress(self, stage: int, alpha: float) -> None:
        if not 0 <= stage < self.n_stages:
            raise ValueError(f"stage {stage} outside 0..{self.n_stages - 1}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha {alpha} outside [0, 1]")
        self.stage, self.alpha = int(stage), float(alpha)

    @property
    def resolution(self) -> int:
        return resolution(self.stage)

    @property
    def fading(self) -> bool:
        return self.stage > 0 and self.alpha < 1.0


class ProganGenerator(_Progress):
    """(N, latent_dim) -> (N, channels, r, r) at the current resolution r, values around
    [-1, 1] (linear output)."""

    def __init__(self, latent_dim: int, channels: int, n_stages: int, max_features: int,
                 min_features: int) -> None:
        super().__init__()
        self.n_stages = n_stages
        width = [features(resolution(s), max_features, min_features) for s in range(n_stages)]
        self.latent_dim, self.width0 = latent_dim, width[0]
        # 4 px: z -> a 4x4 map (a dense layer, i.e. a 4x4 transposed conv), then a 3x3 conv
        self.input_norm = PixelNorm()
        self.dense = EqualizedLinear(latent_dim, width[0] * BASE_RESOLUTION**2)
        self.dense_act = nn.Sequential(_act(), PixelNorm())
        blocks = [nn.Sequential(*_conv_block(width[0], width[0], True))]
        for s in range(1, n_stages):  # nearest x2, then two 3x3 convs
            blocks.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                        *_conv_block(width[s - 1], width[s], True),
                                        *_conv_block(width[s], width[s], True)))
        self.blocks = nn.ModuleList(blocks)
        self.to_rgb = nn.ModuleList(EqualizedConv2d(w, channels, 1, gain=1.0) for w in width)
        self.set_progress(n_stages - 1, 1.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.dense(self.input_norm(z)).view(-1, self.width0, BASE_RESOLUTION,
                                                BASE_RESOLUTION)
        x = self.blocks[0](self.dense_act(x))
        previous = x
        for s in range(1, self.stage + 1):
            previous, x = x, self.blocks[s](x)
        rgb = self.to_rgb[self.stage](x)
        if self.fading:  # alpha 0: exactly the previous stage's image, upsampled
            low = F.interpolate(self.to_rgb[self.stage - 1](previous), scale_factor=2,
                                mode="nearest")
            rgb = torch.lerp(low, rgb, self.alpha)
        return rgb


class ProganDiscriminator(_Progress):
    """(N, channels, r, r) at the current resolution r -> (N,) raw scores."""

    def __init__(self, channels: int, n_stages: int, max_features: int,
                 min_features: int) -> None:
        super().__init__()
        self.n_stages = n_stages
        width = [features(resolution(s), max_features, min_features) for s in range(n_stages)]
        self.from_rgb = nn.ModuleList(
            nn.Sequential(EqualizedConv2d(channels, w, 1), _act()) for w in width)
        # blocks[s] takes stage s's resolution down to stage s - 1's; blocks[0] scores 4 px
        blocks = [nn.Sequential(MinibatchStd(), *_conv_block(width[0] + 1, width[0], False),
                                EqualizedConv2d(width[0], width[0], BASE_RESOLUTION), _act(),
                                nn.Flatten(), EqualizedLinear(width[0], 1, gain=1.0))]
        for s in range(1, n_stages):
            blocks.append(nn.Sequential(*_conv_block(width[s], width[s], False),
                                        *_conv_block(width[s], width[s - 1], False),
                                        nn.AvgPool2d(2)))
        self.blocks = nn.ModuleList(blocks)
        self.set_progress(n_stages - 1, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            raise ValueError(f"D is at stage {self.stage} ({self.resolution} px) but got "
                             f"{x.shape[-2]}x{x.shape[-1]} images")
        h = self.blocks[self.stage](self.from_rgb[self.stage](x))
        if self.fading:  # alpha 0: exactly the previous stage's D on the downsampled image
            low = self.from_rgb[self.stage - 1](F.avg_pool2d(x, 2))
            h = torch.lerp(low, h, self.alpha)
        for s in range(self.stage - 1, -1, -1):
            h = self.blocks[s](h)
        return h.flatten()


@MODELS.register("progan")
def build_progan(cfg, spec) -> GanNetworks:
    """D always has Karras' minibatch std in its last block (model.minibatch_std changes
    nothing); model.d_dropout is not part of the architecture and is refused."""
    if spec.kind != "image":
        raise UserError(f"progan needs an image dataset; {spec.name!r} holds {spec.kind}")
    channels, height, width = spec.shape
    check_size(width, height)
    if cfg.d_dropout:
        raise UserError("model.d_dropout does not apply to model=progan (Karras' discriminator "
                        "has no dropout)")
    if cfg.batch_variance:
        raise UserError("model.batch_variance does not apply to model=progan (its discriminator "
                        "always has Karras' minibatch std)")
    n = n_stages_for(width)
    G = ProganGenerator(cfg.latent_dim, channels, n, cfg.max_features, cfg.min_features)
    D = ProganDiscriminator(channels, n, cfg.max_features, cfg.min_features)
    return GanNetworks(G=G, D=D, latent_dim=cfg.latent_dim, value_range=SYMMETRIC)
