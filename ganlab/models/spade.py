"""SPADE's networks (Park et al. 2019, "Semantic Image Synthesis with Spatially-Adaptive
Normalization"), after NVlabs/SPADE's models/networks with its defaults.

- SPADE: parameter-free batch norm, then a per-pixel scale and shift, (1 + gamma) and beta,
  predicted by a small conv net from the label map resized (nearest) to the features' size.
- SpadeResBlock: two (SPADE, leaky ReLU, 3x3 conv) stages around a shortcut that is learnt
  (SPADE, 1x1 conv) when the width changes; spectral norm on every conv (norm_G's "spectral").
- SpadeGenerator: the reference's default start without the VAE: the label map downsampled to
  S/2^5 and a 3x3 conv to 16 nf channels; then 7 blocks of widths 16, 16, 16, 8, 4, 2, 1 x nf
  with 5 nearest 2x upsamplings (num_upsampling_layers "normal"), leaky ReLU, 3x3 conv, tanh.
- MultiscaleDiscriminator: num_D PatchGANs (4x4 convs, the first stride 2 without norm, then
  spectral norm + instance norm, the last hidden one stride 1), each on the input average-
  pooled once more than the last; every layer's output is returned for feature matching.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import spectral_norm

from ganlab.errors import UserError
from ganlab.models import MODELS

UPSAMPLINGS = 5  # the reference's num_upsampling_layers "normal"
WIDTHS = (16, 16, 16, 8, 4, 2, 1)  # x nf: head_0, G_middle_0, G_middle_1, up_0 .. up_3
UPSAMPLE_AFTER = (0, 2, 3, 4, 5)  # blocks followed by a 2x upsampling
MAX_D_FEATURES = 512
SLOPE = 0.2  # leaky ReLU


def _sn(conv: nn.Module, on: bool) -> nn.Module:
    return spectral_norm(conv) if on else conv


class Spade(nn.Module):
    """Spatially-adaptive (de)normalisation of `channels` features by a `classes`-channel map."""

    def __init__(self, channels: int, classes: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)  # parameter-free
        self.shared = nn.Sequential(nn.Conv2d(classes, hidden, 3, padding=1), nn.ReLU())
        self.gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def modulation(self, x: torch.Tensor, segmap: torch.Tensor):
        """(gamma, beta) for features x from the map resized to x's size."""
        segmap = F.interpolate(segmap, size=x.shape[-2:], mode="nearest")
        hidden = self.shared(segmap)
        return self.gamma(hidden), self.beta(hidden)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.modulation(x, segmap)
        return self.norm(x) * (1 + gamma) + beta


class SpadeResBlock(nn.Module):
    def __init__(self, fin: int, fout: int, classes: int, hidden: int, sn: bool) -> None:
        super().__init__()
        middle = min(fin, fout)
        self.learned_shortcut = fin != fout
        self.conv_0 = _sn(nn.Conv2d(fin, middle, 3, padding=1), sn)
        self.conv_1 = _sn(nn.Conv2d(middle, fout, 3, padding=1), sn)
        self.norm_0 = Spade(fin, classes, hidden)
        self.norm_1 = Spade(middle, classes, hidden)
        if self.learned_shortcut:
            self.conv_s = _sn(nn.Conv2d(fin, fout, 1, bias=False), sn)
            self.norm_s = Spade(fin, classes, hidden)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        shortcut = self.conv_s(self.norm_s(x, segmap)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, segmap), SLOPE))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, segmap), SLOPE))
        return shortcut + dx


class SpadeGenerator(nn.Module):
    """One-hot label map (N, classes, S, S) -> image (N, channels, S, S) in [-1, 1]."""

    def __init__(self, classes: int, channels: int, nf: int, hidden: int, sn: bool) -> None:
        super().__init__()
        self.fc = nn.Conv2d(classes, WIDTHS[0] * nf, 3, padding=1)
        widths = [w * nf for w in WIDTHS]
        fins = [widths[0], *widths[:-1]]
        self.blocks = nn.ModuleList(SpadeResBlock(fin, fout, classes, hidden, sn)
                                    for fin, fout in zip(fins, widths, strict=True))
        self.conv_img = nn.Conv2d(nf, channels, 3, padding=1)

    def forward(self, segmap: torch.Tensor) -> torch.Tensor:
        start = segmap.shape[-1] // 2**UPSAMPLINGS
        x = self.fc(F.interpolate(segmap, size=(start, start), mode="nearest"))
        for i, block in enumerate(self.blocks):
            x = block(x, segmap)
            if i in UPSAMPLE_AFTER:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
        return torch.tanh(self.conv_img(F.leaky_relu(x, SLOPE)))


class PatchDiscriminator(nn.Module):
    """The reference's NLayerDiscriminator: a list of every layer group's output."""

    def __init__(self, in_channels: int, nf: int, layers: int, sn: bool) -> None:
        super().__init__()
        pad = 2  # ceil((4 - 1) / 2)
        groups = [nn.Sequential(nn.Conv2d(in_channels, nf, 4, 2, pad), nn.LeakyReLU(SLOPE))]
        for n in range(1, layers):
            prev, nf = nf, min(nf * 2, MAX_D_FEATURES)
            stride = 1 if n == layers - 1 else 2
            groups.append(nn.Sequential(_sn(nn.Conv2d(prev, nf, 4, stride, pad), sn),
                                        nn.InstanceNorm2d(nf, affine=False),
                                        nn.LeakyReLU(SLOPE)))
        groups.append(nn.Sequential(nn.Conv2d(nf, 1, 4, 1, pad)))
        self.groups = nn.ModuleList(groups)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for group in self.groups:
            x = group(x)
            out.append(x)
        return out


class MultiscaleDiscriminator(nn.Module):
    def __init__(self, in_channels: int, nf: int, layers: int, scales: int, sn: bool) -> None:
        super().__init__()
        self.scales = nn.ModuleList(PatchDiscriminator(in_channels, nf, layers, sn)
                                    for _ in range(scales))

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        """Per scale, every layer group's output (the last: the patch scores)."""
        out = []
        for i, d in enumerate(self.scales):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            out.append(d(x))
        return out


def init_xavier(module: nn.Module, gain: float) -> None:
    """The reference's init_weights("xavier", 0.02): xavier-normal conv and linear weights
    with gain 0.02, zero biases (the norm layers here have no parameters)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            weight = m.weight_orig if hasattr(m, "weight_orig") else m.weight
            nn.init.xavier_normal_(weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def spade_min_size() -> int:
    return 2**UPSAMPLINGS


def check_spade_size(image_size: int, key: str = "dataset.image_size") -> None:
    multiple = spade_min_size()
    if image_size < multiple or image_size % multiple:
        raise UserError(f"{key}={image_size} does not suit model=spade: its generator starts "
                        f"from a {image_size}/{multiple} grid and upsamples {UPSAMPLINGS} "
                        f"times, so the size must be a multiple of {multiple} (32, 64, 256)")


@dataclass
class SpadeNetworks:
    G: nn.Module
    D: nn.Module


@MODELS.register("spade")
def build_spade(c, spec) -> SpadeNetworks:
    """G: one-hot map of spec.num_classes classes -> image of the data's channels; D: the
    multi-scale PatchGAN on (map, image) channels concatenated. Initialised as the reference."""
    channels, size, classes = spec.shape[0], spec.shape[-1], spec.num_classes
    check_spade_size(size)
    sn = bool(c.spectral_norm)
    G = SpadeGenerator(classes, channels, int(c.g_features), int(c.spade_hidden), sn)
    D = MultiscaleDiscriminator(classes + channels, int(c.d_features), int(c.d_layers),
                                int(c.d_scales), sn)
    # spectral_norm's u vectors are drawn when it wraps a conv: init after, as the reference
    init_xavier(G, float(c.init_gain))
    init_xavier(D, float(c.init_gain))
    return SpadeNetworks(G, D)
