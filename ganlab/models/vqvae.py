"""VQ-VAE's networks (van den Oord et al. 2017) and a gated PixelCNN prior over its codes.

Encoder and decoder follow the paper and DeepMind's Sonnet example: stride-2 4x4 convolutions
(two by default: 28 px -> a 7x7 code grid), a 3x3 convolution and two residual blocks
(ReLU, 3x3, ReLU, 1x1), a 1x1 projection to the code vectors; the decoder mirrors it with
transposed convolutions. The codebook holds K vectors; training and its statistics are the
family's (ganlab/families/vqvae.py), the nearest-vector search is here.

The prior is a gated PixelCNN (van den Oord et al. 2016) with PixelCNN++'s shifted
convolutions (Salimans et al. 2017): a vertical stack that sees the rows above and a horizontal
stack that sees the codes to the left, so the prediction at a position depends on every earlier
position in raster order and on no later one (no blind spot).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ganlab.data.base import DataSpec
from ganlab.errors import UserError
from ganlab.models.base import MODELS


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, hidden, 3, 1, 1),
                                  nn.ReLU(), nn.Conv2d(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def residual_stack(channels: int, hidden: int, layers: int) -> list[nn.Module]:
    return [*(ResidualBlock(channels, hidden) for _ in range(layers)), nn.ReLU()]


def encoder(channels: int, cfg) -> nn.Sequential:
    """[0, 1] images -> (N, embedding_dim, H / 2^downsample, W / 2^downsample) vectors."""
    layers: list[nn.Module] = []
    c_in = channels
    for i in range(cfg.downsample):
        width = cfg.hidden // 2 if i < cfg.downsample - 1 else cfg.hidden
        layers += [nn.Conv2d(c_in, width, 4, 2, 1), nn.ReLU()]
        c_in = width
    layers += [nn.Conv2d(c_in, cfg.hidden, 3, 1, 1),
               *residual_stack(cfg.hidden, cfg.residual_hidden, cfg.residual_layers),
               nn.Conv2d(cfg.hidden, cfg.embedding_dim, 1)]  # Sonnet's pre-VQ projection
    return nn.Sequential(*layers)


def decoder(channels: int, cfg) -> nn.Sequential:
    """Code vectors -> per-pixel logits (their sigmoid is the image)."""
    layers: list[nn.Module] = [
        nn.Conv2d(cfg.embedding_dim, cfg.hidden, 3, 1, 1),
        *residual_stack(cfg.hidden, cfg.residual_hidden, cfg.residual_layers)]
    c_in = cfg.hidden
    for i in range(cfg.downsample):
        last = i == cfg.downsample - 1
        width = channels if last else cfg.hidden // 2
        layers.append(nn.ConvTranspose2d(c_in, width, 4, 2, 1))
        if not last:
            layers.append(nn.ReLU())
        c_in = width
    return nn.Sequential(*layers)


class Codebook(nn.Module):
    """K code vectors of dimension D and the statistics that train them.

    `vectors` is a parameter when a loss trains the codebook and a buffer when exponential
    moving averages do (then `ema_sum` / `cluster_size` is the vector: Sonnet's and the paper's
    appendix). `cluster_size` is an EMA of how often each code is chosen under either rule,
    which also finds dead codes to restart. `initialised` says whether the vectors were set
    from encoder outputs (the first training batch), as Jukebox does.
    """

    def __init__(self, size: int, dim: int, ema: bool) -> None:
        super().__init__()
        self.ema = ema
        init = torch.empty(size, dim).uniform_(-1 / size, 1 / size)
        if ema:
            self.register_buffer("vectors", init)
            self.register_buffer("ema_sum", init.clone())
        else:
            self.vectors = nn.Parameter(init)
        self.register_buffer("cluster_size", torch.zeros(size))
        self.register_buffer("initialised", torch.tensor(False))

    @property
    def size(self) -> int:
        return self.vectors.shape[0]

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """(N, D, H, W) vectors -> (N, H, W) indices of their nearest codes (squared L2)."""
        flat = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        vectors = self.vectors.detach()
        distances = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ vectors.t()
                     + vectors.pow(2).sum(1)[None])
        return distances.argmin(dim=1).view(z.shape[0], z.shape[2], z.shape[3])

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, H, W) indices -> (N, D, H, W) code vectors (differentiable in the vectors when
        they are a parameter)."""
        return F.embedding(codes, self.vectors).permute(0, 3, 1, 2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.nearest(z)


class ShiftedConv(nn.Module):
    """A convolution whose output at (r, c) sees only rows <= r (`down`), and with `right`
    also only columns <= c of them: zero padding on the top (and left) instead of around."""

    def __init__(self, c_in: int, c_out: int, kernel: tuple[int, int], right: bool) -> None:
        super().__init__()
        kh, kw = kernel
        # (left, right, top, bottom)
        self.pad = (kw - 1, 0, kh - 1, 0) if right else ((kw - 1) // 2, (kw - 1) // 2, kh - 1, 0)
        self.conv = nn.Conv2d(c_in, c_out, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad))


def shift_down(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


def shift_right(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (1, 0, 0, 0))[:, :, :, :-1]


def gate(x: torch.Tensor) -> torch.Tensor:
    """The gated activation tanh(a) * sigmoid(b) over the two halves of the channels."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedLayer(nn.Module):
    """One gated PixelCNN layer: the vertical stack feeds the horizontal one (at the same
    position: the vertical stack only ever saw rows above), both residual."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.vertical = ShiftedConv(channels, 2 * channels, (2, 3), right=False)
        self.horizontal = ShiftedConv(channels, 2 * channels, (2, 2), right=True)
        self.vertical_to_horizontal = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.vertical_out = nn.Conv2d(channels, channels, 1)
        self.horizontal_out = nn.Conv2d(channels, channels, 1)

    def forward(self, v: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v_features = self.vertical(v)
        return (v + self.vertical_update(v_features),
                h + self.horizontal_update(self.horizontal(h), v_features))

    def vertical_update(self, v_features: torch.Tensor) -> torch.Tensor:
        return self.vertical_out(gate(v_features))

    def horizontal_update(self, h_features: torch.Tensor,
                          v_features: torch.Tensor) -> torch.Tensor:
        return self.horizontal_out(gate(h_features + self.vertical_to_horizontal(v_features)))


class GatedPixelCNN(nn.Module):
    """(N, H, W) code indices -> (N, K, H, W) logits of each code given the earlier ones."""

    def __init__(self, codes: int, channels: int, layers: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(codes, channels)
        # the first layer must not see its own position: shifted a row down / a column right
        self.first_vertical = ShiftedConv(channels, channels, (2, 3), right=False)
        self.first_up = ShiftedConv(channels, channels, (1, 3), right=False)
        self.first_left = ShiftedConv(channels, channels, (2, 1), right=True)
        self.layers = nn.ModuleList(GatedLayer(channels) for _ in range(layers))
        self.out = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU(),
                                 nn.Conv2d(channels, codes, 1))

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.logits(self.embed(codes).permute(0, 3, 1, 2))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The network on embedded codes (N, C, H, W): also what tests differentiate."""
        v, h = shift_down(self.first_vertical(x)), self.first_horizontal(x)
        for layer in self.layers:
            v, h = layer(v, h)
        return self.out(h)

    def first_horizontal(self, x: torch.Tensor) -> torch.Tensor:
        return shift_down(self.first_up(x)) + shift_right(self.first_left(x))

    @torch.no_grad()
    def sample(self, n: int, grid: tuple[int, int], pick: Callable[[torch.Tensor, int],
               torch.Tensor], device: torch.device) -> torch.Tensor:
        """Ancestral sampling in raster order: (n, H, W) codes, where pick(logits (n, K),
        position) chooses the codes at each position. The numbers of `logits`, computed
        incrementally: every layer's vertical stack once per row, its horizontal stack once
        per position, each from the one row above and column to the left it reaches (its
        states kept), so a grid costs about one forward pass instead of one per position."""
        rows, cols = grid
        channels = self.embed.embedding_dim
        codes = torch.zeros(n, rows, cols, dtype=torch.long, device=device)
        x = torch.zeros(n, channels, rows, cols, device=device)  # codes drawn so far, embedded

        def states() -> list[torch.Tensor]:
            return [torch.zeros_like(x) for _ in range(len(self.layers) + 1)]

        v, h = states(), states()  # the input of layer l (l = 0 .. L-1), h[L] the output
        for r in range(rows):
            top = max(r - 1, 0)  # every convolution reaches one row up
            if r > 0:  # v at row r is the first convolution's output at row r - 1
                v[0][:, :, r] = self.first_vertical(x[:, :, max(r - 2, 0) : r])[:, :, -1]
            v_features = []
            for i, layer in enumerate(self.layers):
                v_features.append(layer.vertical(v[i][:, :, top : r + 1])[:, :, -1:])
                v[i + 1][:, :, r : r + 1] = v[i][:, :, r : r + 1] + layer.vertical_update(
                    v_features[i])
            for c in range(cols):
                left = max(c - 1, 0)  # and one column left
                h[0][:, :, r] = self.first_horizontal(x[:, :, top : r + 1])[:, :, -1]
                for i, layer in enumerate(self.layers):
                    h_features = layer.horizontal(h[i][:, :, top : r + 1, left : c + 1])
                    h[i + 1][:, :, r : r + 1, c : c + 1] = (
                        h[i][:, :, r : r + 1, c : c + 1]
                        + layer.horizontal_update(h_features[:, :, -1:, -1:],
                                                  v_features[i][:, :, :, c : c + 1]))
                logits = self.out(h[-1][:, :, r : r + 1, c : c + 1])[:, :, 0, 0]
                codes[:, r, c] = pick(logits, r * cols + c)
                x[:, :, r, c] = self.embed(codes[:, r, c])
        return codes


@dataclass
class VqvaeNetworks:
    encoder: nn.Module  # [0, 1] images -> (N, D, h, w)
    decoder: nn.Module  # (N, D, h, w) -> per-pixel logits
    codebook: Codebook
    prior: GatedPixelCNN  # (N, h, w) codes -> (N, K, h, w) logits
    grid: tuple[int, int]  # (h, w) of the code grid


def code_grid(height: int, width: int, downsample: int) -> tuple[int, int]:
    """The code grid's (h, w) for images of this size: refused when the stride-2 stages do
    not divide it."""
    factor = 2**downsample
    if height % factor or width % factor:
        raise UserError(f"model.downsample={downsample} halves the image {downsample} times; "
                        f"{height}x{width} px is not divisible by {factor} (set "
                        "dataset.image_size or model.downsample)")
    return height // factor, width // factor


@MODELS.register("vqvae")
def build_vqvae(cfg, spec: DataSpec) -> VqvaeNetworks:
    if spec.kind != "image":
        raise UserError(f"model={cfg.name} encodes images; dataset {spec.name} is 2-D points")
    channels, height, width = spec.shape
    grid = code_grid(height, width, cfg.downsample)
    return VqvaeNetworks(
        encoder=encoder(channels, cfg), decoder=decoder(channels, cfg),
        codebook=Codebook(cfg.codebook_size, cfg.embedding_dim, cfg.codebook == "ema"),
        prior=GatedPixelCNN(cfg.codebook_size, cfg.prior_channels, cfg.prior_layers),
        grid=grid)
