"""StyleGAN2 training (Karras et al. 2020): the logistic GAN loss with lazy R1 and path-length
regularisation, style mixing, a ramped moving average of G, and the truncation trick.

After NVlabs/stylegan2-ada-pytorch `training/loss.py` and `training/training_loop.py` and
rosinality's `train.py` (read, not copied). One train_step is the reference's four phases:

- D: softplus(D(G(z))) + softplus(-D(x)), fakes from style-mixed w.
- R1 (every `r1_interval` D steps, 16): (gamma / 2) |grad_x D(x)|^2 on the real batch,
  multiplied by the interval (the penalty is applied that much less often), its own Adam step.
- G: softplus(-D(G(z))), fakes from style-mixed w.
- Path length (every `pl_interval` G steps, 4; only with pl_weight > 0): on half the batch,
  (|J_w^T y| - a)^2 with y random images scaled by 1/sqrt(pixels) and a the moving average
  (decay 0.01) of |J_w^T y|, times pl_weight and the interval, its own Adam step.

An optimizer with a lazy regulariser gets the reference's correction: lr and betas raised to
interval / (interval + 1), because it takes interval + 1 steps per interval batches.
Style mixing: with probability `style_mixing` (0.9) a batch's layers from a random crossover
on get the w of a second z (the second mapping does not move w_avg). After every step
G_ema <- G_ema + (1 - beta) (G - G_ema) with beta = 0.5^(batch / half-life), the half-life in
images `ema_images` (10,000), limited to `ema_rampup` (0.05) times the images seen so far.
Samples, grids and metrics come from G_ema (its fixed noise images), 28-px data padded to
32 px with the background value as ProGAN does and generated images cropped back.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ganlab.config import ranged, schema
from ganlab.data.base import DataSpec
from ganlab.errors import UserError
from ganlab.families.base import FAMILIES, Family
from ganlab.families.gan import ema_update
from ganlab.images import make_grid, to_float, to_uint8
from ganlab.models import MODELS
from ganlab.models.stylegan import check_resolution
from ganlab.optim import adam


@schema("model", "stylegan")
@dataclass
class StyleganConfig:
    """StyleGAN2 at CPU scale. The reference's values unless said: widths (its channel_base
    32768 and channel_max 512, z and w of 512), and path-length regularisation, off here."""

    name: str = "stylegan"
    family: str = "stylegan"
    latent_dim: int = ranged(128, "[1, inf)")  # z
    w_dim: int = ranged(128, "[1, inf)")  # w, and the mapping network's width
    mapping_layers: int = ranged(8, "[1, inf)")
    mapping_lr_mult: float = ranged(0.01, "(0, inf)")  # the mapping network's lr multiplier
    w_avg_beta: float = ranged(0.995, "[0, 1)")  # the mean w's moving average, per batch
    # widths: min(channel_base / resolution, channel_max) channels at each resolution
    channel_base: int = ranged(512, "[1, inf)")
    channel_max: int = ranged(128, "[1, inf)")
    mbstd_group: int = ranged(4, "[1, inf)")  # D's minibatch std groups
    style_mixing: float = ranged(0.9, "[0, 1]")  # probability a batch mixes two w
    r1_gamma: float = ranged(0.01, "[0, inf)")  # R1 weight (the reference for 32 px: 0.01)
    r1_interval: int = ranged(16, "[1, inf)")  # D steps per R1 step (lazy regularisation)
    pl_weight: float = ranged(0.0, "[0, inf)")  # path-length weight (the reference: 2; 0: off)
    pl_interval: int = ranged(4, "[1, inf)")  # G steps per path-length step
    pl_decay: float = ranged(0.01, "(0, 1]")  # of the path length's moving-average target
    pl_batch_shrink: int = ranged(2, "[1, inf)")  # the path-length batch: batch / this
    ema_images: int = ranged(10_000, "[0, inf)")  # G_ema's half-life in images (0: G itself)
    # the half-life is at most this fraction of the images seen so far; null: no ramp-up
    ema_rampup: float | None = ranged(0.05, "(0, inf)")
    lr_g: float = ranged(0.0025, "(0, inf)")
    lr_d: float = ranged(0.0025, "(0, inf)")
    betas: list[float] = ranged([0.0, 0.99], "[0, 1)")


def lazy_optimizer(params, cfg, lr: float, interval: int | None) -> torch.optim.Adam:
    """Adam with the reference's lazy-regularisation correction: lr * ratio and betas ** ratio
    with ratio = interval / (interval + 1) (interval None: no lazy regulariser, no change)."""
    if len(cfg.betas) != 2:
        raise UserError(f"model.betas needs two numbers, got {list(cfg.betas)}")
    ratio = 1.0 if interval is None else interval / (interval + 1)
    return adam(params, lr=lr * ratio, betas=tuple(b**ratio for b in cfg.betas))


def style_mixing_figure(family, z_rows: torch.Tensor, z_cols: torch.Tensor,
                        crossover: int) -> torch.Tensor:
    """The StyleGAN paper's Figure 3 as a uint8 (C, H, W) grid: the top row shows G of the
    column seeds z_cols (source A), the left column G of the row seeds z_rows (source B); cell
    (i, j) takes the styles of layers 0..crossover-1 (coarse: pose, shape, stroke) from row
    i's w and the rest (finer features, colours) from column j's. The top-left cell is blank.
    `family` is a capabilities.StyleMixer."""
    rows, cols = len(z_rows), len(z_cols)
    top, left = family.generate(z_cols), family.generate(z_rows)
    mixed = family.mix(z_rows.repeat_interleave(cols, 0), z_cols.repeat(rows, 1), crossover)
    images = family.to_uint8(torch.cat([top, left, mixed]).cpu())
    cells = [torch.full_like(images[0], 255), *images[:cols]]
    for i in range(rows):
        start = cols + rows + i * cols
        cells += [images[cols + i], *images[start:start + cols]]
    return make_grid(torch.stack(cells), nrow=cols + 1)


@FAMILIES.register("stylegan")
class StyleganFamily(Family):
    chart_layout: ClassVar[dict[str, dict[str, list[str]]]] = {"StyleGAN": {
        "D and G losses": [r"^loss/(D|G)$"],
        "regularisers (lazy: the latest value)": [r"^loss/(r1|pl)$"],
        "D(x) and D(G(z))": [r"^D/(real|fake)$"],
        "moving averages": [r"^stylegan/"],
        "sample quality (lower is better)": [r"^eval/(fid|classifier_fid|kid)$"],
        "precision and recall": [r"^eval/(precision|recall|density|coverage)$"],
    }}
    visual_notes: ClassVar[dict[str, str]] = {
        "samples": "G_ema(z) for the same fixed z at every step, from step 0",
        "style_mixing": "left column: coarse styles (layers before the crossover), top row: "
                        "the rest; the same seeds at every step"}

    @classmethod
    def check_config(cls, cfg) -> None:
        model = f"model={cfg.model.name}"
        if "image_size" not in cfg.dataset:
            raise UserError(f"{model} needs an image dataset; dataset={cfg.dataset.name} "
                            "holds 2-D points")
        check_resolution(int(cfg.dataset.image_size), model)

    def __init__(self, cfg, spec: DataSpec, device: torch.device) -> None:
        self.check_config(cfg)
        m = cfg.model
        self.spec, self.device = spec, device
        self.size = spec.shape[-1]
        nets = MODELS.get(m.name)(m, spec)
        self.G, self.D = nets.G.to(device), nets.D.to(device)
        self.latent_dim, self.value_range = nets.latent_dim, nets.value_range
        self.resolution, self.num_styles = self.G.synthesis.resolution, self.G.num_ws
        self.style_mixing = float(m.style_mixing)
        self.r1_gamma, self.r1_interval = float(m.r1_gamma), int(m.r1_interval)
        self.pl_weight, self.pl_interval = float(m.pl_weight), int(m.pl_interval)
        self.pl_decay, self.pl_batch_shrink = float(m.pl_decay), int(m.pl_batch_shrink)
        self.ema_images = int(m.ema_images)
        self.ema_rampup = None if m.ema_rampup is None else float(m.ema_rampup)
        self.opt_g = lazy_optimizer(self.G.parameters(), m, m.lr_g,
                                    self.pl_interval if self.pl_weight else None)
        self.opt_d = lazy_optimizer(self.D.parameters(), m, m.lr_d,
                                    self.r1_interval if self.r1_gamma else None)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.eval_only = frozenset({"G_ema"})
        # R1 differentiates D's gradient, path length G's (trainer.compile leaves them)
        self.double_backward = frozenset({"D"} if self.r1_gamma else ()) | frozenset(
            {"G"} if self.pl_weight else ())
        self.updates = 0  # steps so far: the lazy regularisers' phase
        self.images_seen = 0  # real images so far: the EMA's ramp-up
        self.pl_mean = torch.zeros((), device=device)  # the path length's moving average
        # the regularisers' latest values, logged every step (the loop keeps its loss names)
        self.last_r1 = torch.zeros((), device=device)
        self.last_pl = torch.zeros((), device=device)
        self.psi = 1.0  # truncation, set by truncated()
        fixed = torch.Generator().manual_seed(cfg.trainer.seed + 1)
        self.fixed_z = torch.randn(cfg.log.n_samples, self.latent_dim, generator=fixed)
        self.fixed_z = self.fixed_z.to(device)
        self.mixing_z = torch.randn(10, self.latent_dim, generator=fixed).to(device)

    # --- images in and out ---------------------------------------------------------------

    def _pad(self) -> tuple[int, int]:
        extra = self.resolution - self.size
        return extra // 2, extra - extra // 2

    def _real(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 reals -> [-1, 1], padded to the networks' resolution with the background."""
        x = to_float(x, self.value_range)
        if self.resolution != self.size:
            before, after = self._pad()
            x = F.pad(x, (before, after, before, after), value=self.value_range[0])
        return x

    def _crop(self, images: torch.Tensor) -> torch.Tensor:
        if self.resolution == self.size:
            return images
        before, _ = self._pad()
        return images[..., before:before + self.size, before:before + self.size]

    # --- training ------------------------------------------------------------------------

    def _mixed_styles(self, n: int) -> torch.Tensor:
        """(n, num_ws, w_dim) styles of new z; with probability style_mixing, the layers from
        a random crossover (1..num_ws-1) on take the w of a second z."""
        z = torch.randn(n, self.latent_dim, device=self.device)
        ws = self.G.styles(z)
        if self.style_mixing and float(torch.rand(())) < self.style_mixing:
            crossover = int(torch.randint(1, self.num_styles, ()))
            other = self.G.styles(torch.randn_like(z), track=False)
            ws = torch.cat([ws[:, :crossover], other[:, crossover:]], dim=1)
        return ws

    def _step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.amp.backward(loss)
        self.amp.step(optimizer)

    def _d_step(self, real: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            fake = self.G.synthesis(self._mixed_styles(len(real)))
        d_fake, d_real = self.D(fake), self.D(real)
        loss = F.softplus(d_fake).mean() + F.softplus(-d_real).mean()
        self._step(self.opt_d, loss)
        out = {"loss/D": loss}
        if self.diagnostics:
            out["D/real"] = torch.sigmoid(d_real).mean()
            out["D/fake"] = torch.sigmoid(d_fake).mean()
        return out

    def _r1_step(self, real: torch.Tensor) -> None:
        """(gamma / 2) E|grad_x D(x)|^2 times the interval; in fp32 under mixed precision."""
        with torch.autocast(real.device.type, enabled=False):
            x = real.float().detach().requires_grad_(True)
            scores = self.D(x)
            (grad,) = torch.autograd.grad(scores.sum(), x, create_graph=True)
            penalty = grad.square().sum(dim=(1, 2, 3)).mean()
            loss = penalty * (self.r1_gamma / 2) * self.r1_interval
        self._step(self.opt_d, loss)
        self.last_r1 = penalty.detach()

    def _g_step(self, n: int) -> dict[str, torch.Tensor]:
        self.D.requires_grad_(False)  # D's gradients are not needed here
        fake = self.G.synthesis(self._mixed_styles(n))
        loss = F.softplus(-self.D(fake)).mean()
        self._step(self.opt_g, loss)
        self.D.requires_grad_(True)
        return {"loss/G": loss}

    def _pl_step(self, n: int) -> None:
        """Path-length regularisation on n // pl_batch_shrink samples, in fp32."""
        self.D.requires_grad_(False)
        with torch.autocast(self.device.type, enabled=False):
            ws = self._mixed_styles(max(1, n // self.pl_batch_shrink))
            images = self.G.synthesis(ws)
            noise = torch.randn_like(images) / math.sqrt(images.shape[2] * images.shape[3])
            (grad,) = torch.autograd.grad((images * noise).sum(), ws, create_graph=True)
            lengths = grad.square().sum(dim=2).mean(dim=1).sqrt()
            target = self.pl_mean.lerp(lengths.mean().detach(), self.pl_decay)
            self.pl_mean.copy_(target)
            penalty = (lengths - target).square().mean()
            loss = penalty * self.pl_weight * self.pl_interval
        self._step(self.opt_g, loss)
        self.D.requires_grad_(True)
        self.last_pl = penalty.detach()

    def ema_beta(self, batch: int) -> float:
        """G_ema's decay this step: 0.5^(batch / half-life), the half-life ramped up."""
        if not self.ema_images:
            return 0.0
        half_life = float(self.ema_images)
        if self.ema_rampup is not None:
            half_life = min(half_life, self.images_seen * self.ema_rampup)
        return 0.5 ** (batch / max(half_life, 1e-8))

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        x, _ = batch
        real = self._real(x)
        n = len(real)
        out = self._d_step(real)
        if self.r1_gamma and self.updates % self.r1_interval == 0:
            self._r1_step(real)
        out.update(self._g_step(n))
        if self.pl_weight and self.updates % self.pl_interval == 0:
            self._pl_step(n)
        beta = self.ema_beta(n)
        ema_update(self.G_ema, self.G, beta)
        self.updates += 1
        self.images_seen += n
        out["loss/r1"] = self.last_r1
        if self.pl_weight:
            out["loss/pl"] = self.last_pl
            out["stylegan/pl_mean"] = self.pl_mean.clone()
        out["stylegan/ema_beta"] = torch.tensor(beta)
        return {k: v.detach() for k, v in out.items()}

    # --- sampling ------------------------------------------------------------------------

    @property
    def sampler(self) -> torch.nn.Module:
        """The generator samples and metrics use (z -> images at the networks' resolution,
        before the crop to the data's size): the moving average."""
        return self.G_ema

    def sample_noise(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=generator).to(self.device)

    @torch.no_grad()
    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """G_ema(z) with its fixed noise images (and truncation psi under truncated()),
        cropped to the data's size."""
        return self._crop(self.G_ema(z.to(self.device), psi=self.psi))

    @contextlib.contextmanager
    def truncated(self, psi: float) -> Iterator[None]:
        """Samples with w = w_avg + psi (w - w_avg) at every layer (TruncatedSampler)."""
        previous, self.psi = self.psi, float(psi)
        try:
            yield
        finally:
            self.psi = previous

    @torch.no_grad()
    def mix(self, z_coarse: torch.Tensor, z_fine: torch.Tensor, crossover: int) -> torch.Tensor:
        """Images whose layers 0..crossover-1 take the w of z_coarse and the rest z_fine's
        (StyleMixer), from G_ema, truncated under truncated()."""
        if not 1 <= crossover < self.num_styles:
            raise UserError(f"crossover={crossover}: this generator has {self.num_styles} "
                            f"style layers, so the crossover must be in 1..{self.num_styles - 1}")
        G = self.G_ema
        a = G.styles(z_coarse.to(self.device), self.psi)
        b = G.styles(z_fine.to(self.device), self.psi)
        return self._crop(G.synthesis(torch.cat([a[:, :crossover], b[:, crossover:]], dim=1)))

    @property
    def default_crossover(self) -> int:
        """The styles of the 4 and 8 px layers (StyleGAN's coarse styles): 4 of them."""
        return min(4, self.num_styles - 1)

    def to_uint8(self, images: torch.Tensor) -> torch.Tensor:
        return to_uint8(images, self.value_range)

    def visuals(self) -> dict[str, torch.Tensor]:
        fake = self.to_uint8(self.generate(self.fixed_z)).cpu()
        samples = make_grid(fake, nrow=math.ceil(math.sqrt(len(fake))))
        mixing = style_mixing_figure(self, self.mixing_z[:4], self.mixing_z[4:],
                                     self.default_crossover)
        return {"samples": samples, "style_mixing": mixing}

    # --- state ---------------------------------------------------------------------------

    def extra_state(self) -> dict[str, Any]:
        return {"fixed_z": self.fixed_z.cpu(), "mixing_z": self.mixing_z.cpu(),
                "updates": self.updates, "images_seen": self.images_seen,
                "pl_mean": self.pl_mean.cpu(), "last_r1": self.last_r1.cpu(),
                "last_pl": self.last_pl.cpu()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.fixed_z = state["fixed_z"].to(self.device)
        self.mixing_z = state["mixing_z"].to(self.device)
        self.updates, self.images_seen = int(state["updates"]), int(state["images_seen"])
        self.pl_mean = state["pl_mean"].to(self.device)
        self.last_r1 = state["last_r1"].to(self.device)
        self.last_pl = state["last_pl"].to(self.device)
