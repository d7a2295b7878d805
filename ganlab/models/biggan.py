"""BigGAN's networks (Brock et al. 2019) at the scale of the reference's CIFAR model.

Read from ajbrock/BigGAN-PyTorch (BigGAN.py, layers.py), written here afresh:

- G: z split into chunks (hierarchical z, "skip-z"): the first chunk goes through a linear
  layer to a 4x4 map of 4*g_ch channels; each residual up-block (BN-ReLU-upsample-conv-BN-
  ReLU-conv, a 1x1 conv on the upsampled shortcut) doubles the size, its two batch norms
  conditioned on the shared class embedding joined to the block's own chunk of z: gain
  1 + W_g c and bias W_b c (class-conditional BN; the norms have no affine of their own).
  Then BN-ReLU-conv to the image channels and tanh. 32 px: 4 -> 8 -> 16 -> 32, three blocks,
  four chunks, as the reference's CIFAR architecture.
- D: residual down-blocks (the first without pre-activation), two blocks without
  downsampling at 8 px, ReLU, a sum over space, then the projection discriminator:
  linear(h) + <embed(y), h> (Miyato & Koyama 2018).
- A SAGAN self-attention block after the G block that outputs `attention` px, and after the
  D block that does (D has none at the full size: its first block halves the input).
- Spectral norm on every conv and linear layer of G and D and on D's class embedding; G's
  shared embedding stays plain (the reference: normalising it "randomly cripples G").
- Weights N(0, 0.02) (the reference's CIFAR script) or orthogonal (its ImageNet scripts).
"""

from __future__ import annotations

import math
from enum import Enum

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm, spectral_norm

from ganlab.errors import UserError
from ganlab.images import SYMMETRIC
from ganlab.models.base import MODELS, GanNetworks
from ganlab.models.dcgan import check_image_spec

BOTTOM = 4  # G's first feature map is BOTTOM x BOTTOM; each G block doubles it
D_BOTTOM = 8  # D halves the image down to this, then has two blocks at this size
WIDTH = 4  # every block has WIDTH * ch channels (the reference's CIFAR architecture)


class Init(str, Enum):
    n02 = "n02"  # N(0, 0.02): the reference's CIFAR script (--G_init N02 --D_init N02)
    ortho = "ortho"  # orthogonal: its ImageNet scripts and the paper


def n_up_blocks(size: int) -> int:
    """G's up-blocks for `size` px: 4 px doubled that many times; a UserError for sizes that
    are not 4 px doubled at least twice (16, 32, 64, ...)."""
    blocks = int(math.log2(size / BOTTOM)) if size >= BOTTOM else 0
    if size < 16 or BOTTOM * 2 ** blocks != size:
        raise UserError(f"model=biggan grows G from {BOTTOM} px by doubling: image sizes 16, 32, "
                        f"64, ...; got {size} px (for the 28-px digits set dataset.image_size=32)")
    return blocks


def g_resolutions(size: int) -> list[int]:
    """The sizes G's blocks output (where an attention block can go): 8, 16, ..., size."""
    return [BOTTOM * 2 ** (i + 1) for i in range(n_up_blocks(size))]


def d_resolutions(size: int) -> list[int]:
    """The sizes D's blocks output: size/2 down to 8, then 8 twice more."""
    downs = int(math.log2(size // D_BOTTOM))
    return [size // 2 ** (i + 1) for i in range(downs)] + [D_BOTTOM, D_BOTTOM]


def z_chunks(latent_dim: int, blocks: int, hier: bool) -> list[int]:
    """The sizes z splits into: one chunk per G block and the rest (at least as large) for the
    input layer; without hierarchical z, all of z for the input layer."""
    if not hier:
        return [latent_dim]
    chunk = latent_dim // (blocks + 1)
    return [latent_dim - blocks * chunk] + [chunk] * blocks


class ConditionalBatchNorm(nn.Module):
    """Batch norm whose gain and bias are linear in a conditioning vector c: the normalised x
    times (1 + W_g c) plus W_b c (the reference's ccbn with shared embeddings)."""

    def __init__(self, channels: int, cond_dim: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Linear(cond_dim, channels, bias=False)
        self.bias = nn.Linear(cond_dim, channels, bias=False)

    def affine(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(gain, bias) per example and channel, (N, C) each."""
        return 1 + self.gain(c), self.bias(c)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        gain, bias = self.affine(c)
        return self.norm(x) * gain[:, :, None, None] + bias[:, :, None, None]


class GBlock(nn.Module):
    """A residual up-block: BN-ReLU-upsample-conv3-BN-ReLU-conv3, plus conv1(upsample(x))."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int) -> None:
        super().__init__()
        self.bn1 = ConditionalBatchNorm(c_in, cond_dim)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.bn2 = ConditionalBatchNorm(c_out, cond_dim)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x, c)), scale_factor=2)  # nearest, as the reference
        h = self.conv2(F.relu(self.bn2(self.conv1(h), c)))
        return h + self.shortcut(F.interpolate(x, scale_factor=2))


class DBlock(nn.Module):
    """A residual block of D ("wide": its hidden width is the output width): [ReLU]-conv3-ReLU-
    conv3-[avgpool], plus a 1x1 conv shortcut when the width or size changes. The first block
    sees the image itself: no ReLU before its first conv, and its shortcut pools before the
    conv (the others convolve first)."""

    def __init__(self, c_in: int, c_out: int, down: bool, preactivation: bool) -> None:
        super().__init__()
        self.down, self.preactivation = down, preactivation
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1) if (c_in != c_out or down) else None

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut is None:
            return x
        if self.preactivation:
            x = self.shortcut(x)
            return F.avg_pool2d(x, 2) if self.down else x
        return self.shortcut(F.avg_pool2d(x, 2) if self.down else x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(x) if self.preactivation else x
        h = self.conv2(F.relu(self.conv1(h)))
        if self.down:
            h = F.avg_pool2d(h, 2)
        return h + self._shortcut(x)


class SelfAttention(nn.Module):
    """SAGAN's self-attention (Zhang et al. 2019) as BigGAN uses it: queries at every position
    (C/8 channels), keys (C/8) and values (C/2) max-pooled 2x2, the attended values mapped back
    to C channels and added to x, scaled by gamma, which starts at 0 (the block starts as the
    identity)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.query = nn.Conv2d(channels, channels // 8, 1, bias=False)
        self.key = nn.Conv2d(channels, channels // 8, 1, bias=False)
        self.value = nn.Conv2d(channels, channels // 2, 1, bias=False)
        self.out = nn.Conv2d(channels // 2, channels, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(()))

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """(N, H*W, H*W/4): for each position, its weights over the pooled positions."""
        q = self.query(x).flatten(2)  # (N, C/8, HW)
        k = F.max_pool2d(self.key(x), 2).flatten(2)  # (N, C/8, HW/4)
        return torch.softmax(q.transpose(1, 2) @ k, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        v = F.max_pool2d(self.value(x), 2).flatten(2)  # (N, C/2, HW/4)
        attended = (v @ self.attention_map(x).transpose(1, 2)).view(n, -1, h, w)
        return x + self.gamma * self.out(attended)


class BigganGenerator(nn.Module):
    def __init__(self, latent_dim: int, num_classes: int, channels: int, size: int, ch: int,
                 shared_dim: int, hier: bool, attention: int) -> None:
        super().__init__()
        blocks = n_up_blocks(size)
        width = WIDTH * ch
        self.width, self.hier = width, hier
        self.chunks = z_chunks(latent_dim, blocks, hier)
        cond_dim = shared_dim + (self.chunks[1] if hier else 0)
        self.shared = nn.Embedding(num_classes, shared_dim)  # one embedding for every block
        self.linear = nn.Linear(self.chunks[0], width * BOTTOM * BOTTOM)
        self.blocks = nn.ModuleList(GBlock(width, width, cond_dim) for _ in range(blocks))
        resolutions = g_resolutions(size)
        # the attention block follows the block that outputs `attention` px
        self.attention_after = resolutions.index(attention) if attention else None
        self.attention = SelfAttention(width) if attention else None
        self.output = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(),
                                    nn.Conv2d(width, channels, 3, padding=1))

    def conditions(self, z: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
        """What each block's batch norms are conditioned on: the shared class embedding joined
        to the block's chunk of z (hierarchical z), or the embedding alone."""
        y = self.shared(labels)
        if not self.hier:
            return [y] * len(self.blocks)
        return [torch.cat([y, part], dim=1) for part in z.split(self.chunks, dim=1)[1:]]

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        first = z[:, :self.chunks[0]]
        h = self.linear(first).view(len(z), self.width, BOTTOM, BOTTOM)
        for i, (block, c) in enumerate(zip(self.blocks, self.conditions(z, labels), strict=True)):
            h = block(h, c)
            if i == self.attention_after:
                h = self.attention(h)
        return torch.tanh(self.output(h))


class BigganDiscriminator(nn.Module):
    def __init__(self, channels: int, size: int, ch: int, num_classes: int,
                 attention: int) -> None:
        super().__init__()
        width = WIDTH * ch
        resolutions = d_resolutions(size)
        downs = len(resolutions) - 2
        self.blocks = nn.ModuleList(
            DBlock(channels if i == 0 else width, width, down=i < downs, preactivation=i > 0)
            for i in range(len(resolutions)))
        self.attention_after = (resolutions.index(attention) if attention in resolutions
                                else None)
        self.attention = SelfAttention(width) if self.attention_after is not None else None
        self.linear = nn.Linear(width, 1)
        self.embed = nn.Embedding(num_classes, width)  # the projection's class vectors

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """phi(x): the blocks, ReLU, summed over space (as SN-GAN and the reference)."""
        h = x
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i == self.attention_after:
                h = self.attention(h)
        return F.relu(h).sum(dim=(2, 3))

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        return self.linear(h).squeeze(1) + (self.embed(labels) * h).sum(dim=1)


def initialise(module: nn.Module, init: Init) -> None:
    """Weights of every conv, linear and embedding layer (biases keep torch's defaults)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            if init == Init.ortho:
                nn.init.orthogonal_(m.weight)
            else:
                nn.init.normal_(m.weight, 0.0, 0.02)


def add_spectral_norm(module: nn.Module, types: tuple[type, ...]) -> None:
    """Spectral norm (one power iteration per training forward) on every layer of `types`."""
    for name, child in list(module.named_children()):
        if isinstance(child, types):
            setattr(module, name, spectral_norm(child))
        else:
            add_spectral_norm(child, types)


@torch.no_grad()
def refresh_spectral_norm(module: nn.Module) -> None:
    """One power iteration of every spectral norm in `module` on its current weights. For a
    moving average of G, which is never trained: its copied singular vectors (G's) are brought
    to its own averaged weights, as the reference's SN does at every forward."""
    for m in module.modules():
        if not parametrize.is_parametrized(m, "weight"):
            continue
        for p in m.parametrizations.weight:
            if isinstance(p, _SpectralNorm) and m.parametrizations.weight.original.ndim > 1:
                weight = m.parametrizations.weight.original
                p._power_method(p._reshape_weight_to_matrix(weight), 1)


def orthogonal_penalty(weights: list[torch.Tensor]) -> torch.Tensor:
    """BigGAN's orthogonal regularisation (off-diagonal only): the sum over weights W, each
    flattened to (outputs, inputs), of ||W W^T * (1 - I)||_F^2 / 2. Its gradient, 2 (W W^T *
    (1 - I)) W, is the one the reference adds to G's gradients (utils.ortho); the paper's
    beta multiplies it."""
    total = weights[0].new_zeros(())
    for weight in weights:
        w = weight.flatten(1)
        gram = w @ w.T
        total = total + (gram - torch.diag(torch.diagonal(gram))).square().sum() / 2
    return total


@MODELS.register("biggan")
def build_biggan(cfg, spec) -> GanNetworks:
    channels, size = check_image_spec(spec, "model=biggan")
    k = spec.num_classes
    if k < 2:
        raise UserError(f"model=biggan needs a labelled dataset (class labels to condition on); "
                        f"{spec.name!r} has none (use mnist, fashion_mnist, cifar10, cifar100, "
                        "synthetic, or dataset=folder with one sub-folder per class)")
    check_attention(cfg.attention, size)
    G = BigganGenerator(cfg.latent_dim, k, channels, size, cfg.g_ch, cfg.shared_dim, cfg.hier,
                        cfg.attention)
    D = BigganDiscriminator(channels, size, cfg.d_ch, k, cfg.attention)
    initialise(G, Init(cfg.init))
    initialise(D, Init(cfg.init))
    if cfg.spectral_norm:  # after the init: the power iteration starts from the real weights
        add_spectral_norm(G, (nn.Conv2d, nn.Linear))  # not G.shared (see the module notes)
        add_spectral_norm(D, (nn.Conv2d, nn.Linear, nn.Embedding))
    return GanNetworks(G=G, D=D, latent_dim=cfg.latent_dim, value_range=SYMMETRIC, num_classes=k)


def check_attention(attention: int, size: int) -> None:
    """model.attention: 0 (none) or a size one of G's blocks outputs."""
    reached = g_resolutions(size)
    if attention and attention not in reached:
        raise UserError(f"model.attention={attention}: G's blocks output "
                        f"{', '.join(map(str, reached))} px at {size} px, so a self-attention "
                        f"block at {attention} px would never be reached (0: none)")
