"""BigGAN (Brock et al. 2019): the GAN family with BigGAN's training tricks, for a class-
conditional model (networks: ganlab/models/biggan.py).

What differs from the plain GAN step, as in ajbrock/BigGAN-PyTorch's train_fns.py and its
CIFAR script (launch_cifar_ema.sh): model.d_steps (4) D steps per G step, each on its own real
batch and fresh fakes drawn without G's graph; then one G step on fresh noise and labels, with
the orthogonal regularisation of G's weights (model.ortho, off-diagonal only, the shared class
embedding excluded) added to its hinge loss; then the moving average of G (model.ema), which
is a copy of G for the first model.ema_start steps. Samples and metrics use the average.

The truncation trick (`sample truncation=psi`, `eval truncation=psi`): under truncated(psi),
sample_noise resamples every coordinate of z whose magnitude exceeds the threshold t with
P(|N(0, 1)| < t) = psi, i.e. t = sqrt(2) erfinv(psi): psi is the share of the normal's mass
kept. psi = 1 is plain sampling (t = infinity, nothing is redrawn), 0.954 is the usual
2-sigma truncated normal, 0.7 keeps |z_i| < 1.04, 0.5 keeps |z_i| < 0.67; psi -> 0 pulls z to
0. generate(z) maps whatever z it is given.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ganlab.config import ranged, schema
from ganlab.data.base import DataSpec
from ganlab.errors import UserError
from ganlab.families.base import FAMILIES
from ganlab.families.gan import GanConfig, GanFamily, LatentDist, ema_update, total_grad_norm
from ganlab.models.biggan import (
    Init,
    check_attention,
    n_up_blocks,
    orthogonal_penalty,
    refresh_spectral_norm,
)

# the truncated sampler redraws out-of-range values this many times, then draws the few left
# by the inverse CDF (the same distribution; tiny psi would otherwise take ~log(n)/psi rounds)
RESAMPLE_ROUNDS = 100


@schema("model", "biggan")
@dataclass
class BigganConfig(GanConfig):
    """BigGAN at the reference's CIFAR scale; its optimiser and step settings (Adam 2e-4 for
    both, betas (0, 0.999), 4 D steps per G step) and hinge loss are in conf/model/biggan.yaml."""

    name: str = "biggan"
    family: str = "biggan"
    latent_dim: int = ranged(128, "[1, inf)")  # z, split into one chunk per G block + the rest
    g_ch: int = ranged(16, "[1, inf)")  # G's blocks have 4 * g_ch channels (reference: 64)
    d_ch: int = ranged(16, "[1, inf)")  # D's blocks have 4 * d_ch channels (reference: 64)
    shared_dim: int = ranged(128, "[1, inf)")  # G's shared class embedding
    hier: bool = True  # hierarchical z: each G block's BN also sees its own chunk of z
    attention: int = ranged(16, "[0, inf)")  # px of the self-attention block in G and D; 0: none
    ortho: float = ranged(1e-4, "[0, inf)")  # beta of the orthogonal regularisation of G
    ema_start: int = ranged(1000, "[0, inf)")  # G's moving average copies G until this step
    init: Init = Init.n02
    spectral_norm: bool = True  # in G and D (every conv, linear and D's class embedding)


def truncation_threshold(psi: float) -> float:
    """The |z_i| above which a coordinate is redrawn at truncation psi: P(|N(0,1)| < t) = psi."""
    return math.sqrt(2.0) * torch.erfinv(torch.tensor(psi, dtype=torch.float64)).item()


def truncated_normal(n: int, dim: int, psi: float, generator: torch.Generator) -> torch.Tensor:
    """(n, dim) draws of N(0, I), each coordinate beyond the threshold of psi redrawn (from the
    same generator) until it falls inside: psi = 1 is exactly torch.randn."""
    z = torch.randn((n, dim), generator=generator)
    t = truncation_threshold(psi)
    if math.isinf(t):
        return z
    outside = z.abs() > t
    for _ in range(RESAMPLE_ROUNDS):
        if not outside.any():
            return z
        z[outside] = torch.randn(int(outside.sum()), generator=generator)
        outside = z.abs() > t
    # the rest by the inverse CDF of the normal restricted to [-t, t]
    u = torch.rand(int(outside.sum()), generator=generator, dtype=torch.float64)
    z[outside] = (math.sqrt(2.0) * torch.erfinv((2 * u - 1) * psi)).float()
    return z


@FAMILIES.register("biggan")
class BigganFamily(GanFamily):
    """GanFamily with BigGAN's G step, moving average and truncation trick. Every loss and the
    label options work as for the other GANs; D's architecture options (d_dropout,
    minibatch_std, batch_variance) and the uniform prior are refused."""

    chart_layout: ClassVar[dict[str, dict[str, list[str]]]] = {"GAN": {
        **GanFamily.chart_layout["GAN"],
        "orthogonal regularisation of G (before beta)": [r"^loss/ortho$"],
    }}

    @classmethod
    def check_config(cls, cfg) -> None:
        super().check_config(cfg)
        model = cfg.model
        if "image_size" not in cfg.dataset:
            raise UserError(f"model={model.name} needs an image dataset; "
                            f"dataset={cfg.dataset.name} holds 2-D points")
        size = int(cfg.dataset.image_size)
        n_up_blocks(size)
        check_attention(int(model.attention), size)
        if model.attention and min(model.g_ch, model.d_ch) < 2:
            raise UserError(f"model.attention needs model.g_ch and model.d_ch of at least 2 (its "
                            f"keys have 4*ch/8 channels); got {model.g_ch} and {model.d_ch}")
        for key in ("d_dropout", "minibatch_std", "batch_variance"):
            if model[key]:
                raise UserError(f"model.{key} does not apply to model={model.name} (BigGAN's "
                                "discriminator has no such layer)")
        if model.latent_dist != LatentDist.normal:
            raise UserError(f"model={model.name} draws z from N(0, I) (its truncation trick "
                            "resamples out-of-range normal values); model.latent_dist must be "
                            "normal")
        if model.hier and model.latent_dim < n_up_blocks(size) + 1:
            raise UserError(f"model.latent_dim={model.latent_dim} is too small to split into "
                            f"{n_up_blocks(size) + 1} chunks (one per G block and one for its "
                            "input layer); raise it or set model.hier=false")

    def __init__(self, cfg, spec: DataSpec, device: torch.device) -> None:
        self.check_config(cfg)
        super().__init__(cfg, spec, device)
        self.ortho = float(cfg.model.ortho)
        self.ema_start = int(cfg.model.ema_start)
        # orthogonal regularisation: every weight matrix and conv kernel of G but the shared
        # embedding ("it makes no sense" there: the reference's blacklist); spectral norm's
        # parameter is the raw weight, as the reference's
        self.ortho_weights = [p for name, p in self.G.named_parameters()
                              if p.ndim > 1 and not name.startswith("shared.")]
        self.psi = 1.0  # truncation; only set inside truncated()

    # --- training ------------------------------------------------------------------------

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        batches = batch if isinstance(batch, list) else [batch]
        if self.d_pretrained < self.d_pretrain_steps:
            return self._pretrain_d(batches)
        for x, y in batches:
            z, labels = self._noise(x.shape[0]), self._fake_labels(x.shape[0])
            with torch.no_grad():  # D's fakes: no graph through G (the reference's train_G=False)
                fake = self._g(z, labels)
            out = self._d_step(x, y, fake, labels)
        n = batches[-1][0].shape[0]
        for _ in range(self.g_steps):  # G's fakes: fresh noise and labels
            z, labels = self._noise(n), self._fake_labels(n)
            out.update(self._g_step(self._g(z, labels), labels))
        if self.instance_noise:
            out["instance_noise"] = torch.tensor(self._noise_std())
        self.updates += 1
        return {k: v.detach() for k, v in out.items()}

    def _g_step(self, fake: torch.Tensor,
                labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        self.D.requires_grad_(False)  # no need for D's parameter gradients here
        loss = self.loss.g_loss(self._d(fake, labels), self._g_targets(len(fake)))
        out = {"loss/G": loss}
        if self.ortho:
            penalty = orthogonal_penalty(self.ortho_weights)
            out["loss/ortho"] = penalty
            loss = loss + self.ortho * penalty
        self.opt_g.zero_grad(set_to_none=True)
        self.amp.backward(loss)
        self.D.requires_grad_(True)
        if self.diagnostics:
            self.amp.unscale(self.opt_g)
            out["grad_norm/G"] = total_grad_norm(self.G)
        self.amp.step(self.opt_g)
        if self.G_ema is not None:
            self._update_ema()
        return out

    def _update_ema(self) -> None:
        """The reference's ema with start: a plain copy of G before step model.ema_start (its
        iterations count from 1), the moving average from there on; BN statistics copied (as
        for the other GANs), spectral norms' vectors refreshed on the averaged weights."""
        decay = self.ema_decay if self.updates + 1 >= self.ema_start else 0.0
        ema_update(self.G_ema, self.G, decay)
        refresh_spectral_norm(self.G_ema)

    # --- sampling ------------------------------------------------------------------------

    @contextlib.contextmanager
    def truncated(self, psi: float) -> Iterator[None]:
        """sample_noise draws truncated z inside this block (psi in (0, 1]; 1: plain)."""
        if not 0 < psi <= 1:
            raise UserError(f"truncation must be in (0, 1] (1: no truncation), got {psi}")
        self.psi = float(psi)
        try:
            yield
        finally:
            self.psi = 1.0

    def sample_noise(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return truncated_normal(n, self.latent_dim, self.psi, generator).to(self.device)
