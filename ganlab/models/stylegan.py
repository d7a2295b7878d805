"""StyleGAN2's networks (Karras et al. 2020) at a size a CPU can train.

Written after NVlabs/stylegan2-ada-pytorch `training/networks.py` and rosinality's
stylegan2-pytorch `model.py` (read, not copied); what differs is said where it is.

- Mapping network: z normalised to unit second moment, `mapping_layers` equalised-lr fully
  connected layers (LeakyReLU 0.2, gain sqrt 2) whose learning rate is multiplied by
  `lr_mult` (0.01): weights stored as N(0, 1 / lr_mult^2) and scaled by lr_mult / sqrt(fan_in)
  at run time. It tracks the mean w (`w_avg`, a moving average with beta 0.995 over every
  batch mapped in training mode), which the truncation trick pulls samples towards.
- Synthesis network: a learned constant 4x4 input; per resolution two 3x3 convolutions
  (one at 4 px) modulated by a style (an affine map of w, bias 1) and demodulated (each
  output channel's weights normalised to unit norm per example); after each, per-pixel noise
  times a learned strength (0 at first), bias and LeakyReLU. Skip outputs: each resolution's
  1x1 toRGB (modulated, not demodulated) is added to the upsampled image so far.
  `num_ws` = 2 log2(resolution) - 2 styles: toRGB shares its w with the next block's first
  convolution, as in the reference. Noise is random in training mode and each layer's fixed
  noise image (`noise_const`, the reference's noise_mode='const') in evaluation mode, so
  samples are a function of z.
- Discriminator (the reference's `resnet` architecture): fromRGB at the top resolution, then
  residual blocks (two 3x3 convs, a 1x1 skip, both halving the resolution, summed with gain
  sqrt 1/2) down to 4 px; minibatch standard deviation, a 3x3 conv, a dense layer and a linear
  score.
- Resampling: the reference's [1, 3, 3, 1] binomial filter. Differences: G upsamples the
  features, then convolves at the new resolution (the reference fuses a transposed conv and
  the filter), and D filters and subsamples, then convolves at the lower resolution (the
  reference filters, then convolves with stride 2); the same filters, simpler code, and no
  custom CUDA kernels.
- Widths: min(channel_base / resolution, channel_max) at each resolution (the reference's
  rule; its defaults 32768 and 512 are for GPUs, ours for a CPU).
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from ganlab.errors import UserError
from ganlab.images import SYMMETRIC
from ganlab.models.base import MODELS, GanNetworks, MinibatchStd
from ganlab.models.progan import EqualizedConv2d, EqualizedLinear, padded_size

MIN_RESOLUTION = 8  # the 4x4 constant and at least one upsampling block
MAX_RESOLUTION = 1024  # the reference's largest
LEAK = 0.2
ACT_GAIN = math.sqrt(2)
_BLUR = (1.0, 3.0, 3.0, 1.0)


def num_ws(resolution: int) -> int:
    """How many styles the synthesis network takes at `resolution` px: one per conv (one at
    4 px, two per block above) plus the last toRGB's (8 at 32 px, 10 at 64 px)."""
    return 2 * int(math.log2(resolution)) - 2


def resolutions(resolution: int) -> list[int]:
    """4, 8, ..., resolution."""
    return [2**k for k in range(2, int(math.log2(resolution)) + 1)]


def width(res: int, channel_base: int, channel_max: int) -> int:
    return max(1, min(channel_base // res, channel_max))


def check_resolution(size: int, what: str) -> int:
    """The power of two the networks work at for images of `size` px (28 -> 32, padded with
    the background as ProGAN does); a UserError for sizes they cannot take."""
    if size < MIN_RESOLUTION:
        raise UserError(f"{what} needs images of at least {MIN_RESOLUTION} px (a 4x4 constant "
                        f"input and at least one upsampling block), got {size} px")
    padded = padded_size(size)
    if padded > MAX_RESOLUTION:
        raise UserError(f"{what} works at most at {MAX_RESOLUTION} px, got {size} px")
    return padded


# --- resampling with the [1, 3, 3, 1] filter (differentiable twice: R1 and path length) ----


def _filter(x: torch.Tensor, gain: float) -> torch.Tensor:
    f = torch.tensor(_BLUR, dtype=x.dtype, device=x.device)
    kernel = torch.outer(f, f)
    kernel = kernel * (gain / kernel.sum())
    return kernel.expand(x.shape[1], 1, 4, 4)


def upsample2d(x: torch.Tensor) -> torch.Tensor:
    """x2: zeros between the pixels, then the filter (gain 4 keeps a constant image)."""
    return F.conv_transpose2d(x, _filter(x, 4.0), stride=2, padding=1, groups=x.shape[1])


def downsample2d(x: torch.Tensor) -> torch.Tensor:
    """/2: the filter, then every second pixel."""
    return F.conv2d(x, _filter(x, 1.0), stride=2, padding=1, groups=x.shape[1])


# --- the generator ------------------------------------------------------------------------


class StyleLinear(nn.Module):
    """Equalised-lr dense layer with a learning-rate multiplier: the weight is stored as
    N(0, 1 / lr_mult^2) and scaled by lr_mult / sqrt(fan_in) at run time, the bias by lr_mult,
    so under Adam the layer learns lr_mult times as fast as the others. `activate`: LeakyReLU
    times sqrt 2."""

    def __init__(self, n_in: int, n_out: int, lr_mult: float = 1.0, bias_init: float = 0.0,
                 activate: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_out, n_in) / lr_mult)
        self.bias = nn.Parameter(torch.full((n_out,), float(bias_init)))
        self.weight_gain, self.bias_gain = lr_mult / math.sqrt(n_in), lr_mult
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return F.leaky_relu(x, LEAK) * ACT_GAIN if self.activate else x


class MappingNetwork(nn.Module):
    """z (N, latent_dim) -> w (N, w_dim); in training mode it also moves w_avg towards the
    batch's mean w (beta per batch), unless track=False (the style-mixing draw)."""

    def __init__(self, latent_dim: int, w_dim: int, layers: int, lr_mult: float,
                 w_avg_beta: float = 0.995) -> None:
        super().__init__()
        sizes = [latent_dim] + [w_dim] * layers
        self.net = nn.Sequential(*(StyleLinear(a, b, lr_mult, activate=True)
                                   for a, b in itertools.pairwise(sizes)))
        self.w_avg_beta = w_avg_beta
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, track: bool = True) -> torch.Tensor:
        z = z * torch.rsqrt(z.float().square().mean(dim=1, keepdim=True) + 1e-8).to(z.dtype)
        w = self.net(z)
        if self.training and track:
            with torch.no_grad():  # in place: G_ema copies this buffer after every step
                self.w_avg.copy_(w.detach().float().mean(0).lerp(self.w_avg, self.w_avg_beta))
        return w

    def truncate(self, w: torch.Tensor, psi: float) -> torch.Tensor:
        """The truncation trick: w_avg + psi (w - w_avg), at every layer."""
        return w if psi == 1.0 else self.w_avg.to(w.dtype).lerp(w, psi)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                     demodulate: bool) -> torch.Tensor:
    """Each example's conv weight scaled by its style per input channel (and, demodulated,
    each output channel's weights rescaled to unit L2 norm). Computed as the reference's
    non-fused path: scale the input, one shared conv, scale the output; the same numbers as
    a per-example grouped conv, and faster on a CPU."""
    x = x * styles[:, :, None, None].to(x.dtype)
    out = F.conv2d(x, weight.to(x.dtype), padding=weight.shape[-1] // 2)
    if demodulate:  # sum over in-channels and taps of (w * s)^2, per example and out-channel
        norms = styles.float().square() @ weight.float().square().sum(dim=(2, 3)).t()
        out = out * torch.rsqrt(norms + 1e-8)[:, :, None, None].to(out.dtype)
    return out


class SynthesisLayer(nn.Module):
    """[x2 upsampling], modulated 3x3 conv, noise times a learned strength, bias, LeakyReLU."""

    def __init__(self, c_in: int, c_out: int, w_dim: int, resolution: int,
                 up: bool = False) -> None:
        super().__init__()
        self.up = up
        self.affine = StyleLinear(w_dim, c_in, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(c_out, c_in, 3, 3))
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.up:
            x = upsample2d(x)
        x = modulated_conv2d(x, self.weight, self.affine(w), demodulate=True)
        if self.training:
            noise = torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype)
        else:
            noise = self.noise_const.to(x.dtype)
        x = x + noise * self.noise_strength.to(x.dtype)
        return F.leaky_relu(x + self.bias[:, None, None].to(x.dtype), LEAK) * ACT_GAIN


class ToRGB(nn.Module):
    """Modulated 1x1 conv (no demodulation: the style scales the colours) plus a bias."""

    def __init__(self, c_in: int, channels: int, w_dim: int) -> None:
        super().__init__()
        self.affine = StyleLinear(w_dim, c_in, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(channels, c_in, 1, 1))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.weight_gain = 1 / math.sqrt(c_in)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        out = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return out + self.bias[:, None, None].to(out.dtype)


class SynthesisNetwork(nn.Module):
    """ws (N, num_ws, w_dim) -> images (N, channels, resolution, resolution), linear output."""

    def __init__(self, w_dim: int, resolution: int, channels: int, channel_base: int,
                 channel_max: int) -> None:
        super().__init__()
        self.resolution, self.num_ws = resolution, num_ws(resolution)
        res = resolutions(resolution)
        ch = {r: width(r, channel_base, channel_max) for r in res}
        self.const = nn.Parameter(torch.randn(ch[4], 4, 4))
        convs = [SynthesisLayer(ch[4], ch[4], w_dim, 4)]
        for r in res[1:]:
            convs += [SynthesisLayer(ch[r // 2], ch[r], w_dim, r, up=True),
                      SynthesisLayer(ch[r], ch[r], w_dim, r)]
        self.convs = nn.ModuleList(convs)
        self.to_rgb = nn.ModuleList(ToRGB(ch[r], channels, w_dim) for r in res)

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        if ws.dim() != 3 or ws.shape[1] != self.num_ws:
            raise ValueError(f"the synthesis network takes (N, {self.num_ws}, w_dim) styles, "
                             f"got {tuple(ws.shape)}")
        x = self.const[None].expand(ws.shape[0], -1, -1, -1)
        x = self.convs[0](x, ws[:, 0])
        img = self.to_rgb[0](x, ws[:, 1])
        for b in range(1, len(self.to_rgb)):  # block b: convs 2b-1 (up) and 2b, toRGB
            x = self.convs[2 * b - 1](x, ws[:, 2 * b - 1])
            x = self.convs[2 * b](x, ws[:, 2 * b])
            img = upsample2d(img) + self.to_rgb[b](x, ws[:, 2 * b + 1])
        return img


class StyleGenerator(nn.Module):
    """z (N, latent_dim) -> images: the mapping network, every layer given the same w (the
    truncation trick with psi < 1), the synthesis network."""

    def __init__(self, latent_dim: int, w_dim: int, mapping_layers: int, lr_mult: float,
                 resolution: int, channels: int, channel_base: int, channel_max: int,
                 w_avg_beta: float = 0.995) -> None:
        super().__init__()
        self.latent_dim, self.w_dim = latent_dim, w_dim
        self.mapping = MappingNetwork(latent_dim, w_dim, mapping_layers, lr_mult, w_avg_beta)
        self.synthesis = SynthesisNetwork(w_dim, resolution, channels, channel_base,
                                          channel_max)
        self.num_ws = self.synthesis.num_ws

    def styles(self, z: torch.Tensor, psi: float = 1.0, track: bool = True) -> torch.Tensor:
        """(N, num_ws, w_dim): the (truncated) w of z, once per layer."""
        w = self.mapping.truncate(self.mapping(z, track=track), psi)
        return w[:, None].expand(-1, self.num_ws, -1)

    def forward(self, z: torch.Tensor, psi: float = 1.0) -> torch.Tensor:
        return self.synthesis(self.styles(z, psi))


# --- the discriminator --------------------------------------------------------------------


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, LEAK)


class ResidualBlock(nn.Module):
    """3x3 conv, 3x3 conv at half the resolution, plus a 1x1 skip at half the resolution;
    the sum times sqrt 1/2 keeps the variance."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv0 = EqualizedConv2d(c_in, c_in, 3, padding=1)
        self.conv1 = EqualizedConv2d(c_in, c_out, 3, padding=1)
        self.skip = EqualizedConv2d(c_in, c_out, 1, gain=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.skip(downsample2d(x))
        x = _lrelu(self.conv1(downsample2d(_lrelu(self.conv0(x)))))
        return (x + y) * math.sqrt(0.5)


class StyleDiscriminator(nn.Module):
    """(N, channels, resolution, resolution) -> (N,) logits."""

    def __init__(self, resolution: int, channels: int, channel_base: int, channel_max: int,
                 mbstd_group: int = 4) -> None:
        super().__init__()
        ch = {r: width(r, channel_base, channel_max) for r in resolutions(resolution)}
        self.resolution = resolution
        self.from_rgb = EqualizedConv2d(channels, ch[resolution], 1)
        self.blocks = nn.Sequential(*(ResidualBlock(ch[r], ch[r // 2])
                                      for r in reversed(resolutions(resolution)[1:])))
        c = ch[4]
        self.mbstd = MinibatchStd(mbstd_group)
        self.conv = EqualizedConv2d(c + 1, c, 3, padding=1)
        self.dense = EqualizedLinear(c * 16, c)
        self.out = EqualizedLinear(c, 1, gain=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            raise ValueError(f"D takes {self.resolution} px images, got "
                             f"{x.shape[-2]}x{x.shape[-1]}")
        x = self.blocks(_lrelu(self.from_rgb(x)))
        x = _lrelu(self.conv(self.mbstd(x)))
        return self.out(_lrelu(self.dense(x.flatten(1)))).flatten()


@MODELS.register("stylegan")
def build_stylegan(cfg, spec) -> GanNetworks:
    """G and D at the power of two the images are padded to (28 -> 32)."""
    if spec.kind != "image":
        raise UserError(f"stylegan needs an image dataset; {spec.name!r} holds {spec.kind}")
    channels, height, size = spec.shape
    if height != size:
        raise UserError(f"stylegan needs square images, not {height}x{size}")
    resolution = check_resolution(size, "model=stylegan")
    G = StyleGenerator(cfg.latent_dim, cfg.w_dim, cfg.mapping_layers, cfg.mapping_lr_mult,
                       resolution, channels, cfg.channel_base, cfg.channel_max,
                       cfg.w_avg_beta)
    D = StyleDiscriminator(resolution, channels, cfg.channel_base, cfg.channel_max,
                           cfg.mbstd_group)
    return GanNetworks(G=G, D=D, latent_dim=cfg.latent_dim, value_range=SYMMETRIC)
