"""VQ-VAE (van den Oord, Vinyals & Kavukcuoglu 2017): a discrete code grid and a learned prior.

One run trains the two stages the paper trains one after the other: until `model.prior_start`
of the run, the encoder, decoder and codebook (reconstruction + beta * commitment, gradients
passed straight through the quantisation, the codebook moved by exponential moving averages
or by the codebook loss); from then on they are frozen and a gated PixelCNN learns the prior
over the code grids of the training images. `sample` draws codes from the prior, one position
at a time, and decodes them.

With a one-hot posterior q(z|x), the ELBO is log p(x|z_q) + log p(z_q): the held-out negative
ELBO is the reconstruction's negative log-likelihood plus the prior's, in nats per image
(the VAE's likelihoods, so the number compares with a VAE's), and bits/dim is that over
pixels * ln 2 (for the Gaussian likelihood, with ln 256 per pixel added: the density of [0, 1]
pixels turned into the probability of their 8-bit values).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ganlab.config import ranged, schema
from ganlab.data.base import DataSpec
from ganlab.distributed import Replicas
from ganlab.errors import UserError
from ganlab.families.autoencoder import (
    Likelihood,
    bernoulli_nll,
    gaussian_nll,
    resolve_likelihood,
)
from ganlab.families.base import FAMILIES, Family
from ganlab.images import UNIT, make_grid, to_float, to_uint8
from ganlab.metrics.sharpness import sharpness_ratio
from ganlab.models import MODELS
from ganlab.models.vqvae import Codebook, code_grid
from ganlab.optim import adam

SHOWN = 32  # held-out images in the reconstruction grid
EVAL_BATCH = 500


class CodebookRule(str, Enum):
    ema = "ema"  # moving averages of the vectors assigned to each code (the paper's appendix)
    loss = "loss"  # ||sg[z_e] - e||^2 trains the vectors by gradient


@schema("model", "vqvae")
@dataclass
class VqvaeConfig:
    """`model.*` of a VQ-VAE: the networks (Sonnet's example), the codebook and the prior."""

    name: str = "vqvae"
    family: str = "vqvae"
    downsample: int = ranged(2, "[1, inf)")  # stride-2 convolutions: 28 px -> 7x7 codes
    hidden: int = ranged(128, "[2, inf)")  # convolution width
    residual_hidden: int = ranged(32, "[1, inf)")
    residual_layers: int = ranged(2, "[0, inf)")
    codebook_size: int = ranged(512, "[2, inf)")  # K
    embedding_dim: int = ranged(64, "[1, inf)")  # D
    commitment: float = ranged(0.25, "[0, inf)")  # beta
    codebook: CodebookRule = CodebookRule.ema
    decay: float = ranged(0.99, "[0, 1)")  # codebook=ema: the moving averages' decay
    epsilon: float = ranged(1e-5, "(0, inf)")  # codebook=ema: Laplace smoothing of the counts
    # a code whose moving-average count falls below this is moved onto a random encoder output
    # of the batch (Dhariwal et al. 2020's random restarts); 0 turns restarts off
    restart_threshold: float = ranged(1.0, "[0, inf)")
    likelihood: Likelihood = Likelihood.auto  # of the reconstruction (a VAE's choices)
    gaussian_std: float = ranged(0.1, "(0, inf)")
    lr: float = ranged(2e-4, "(0, inf)")  # Adam, the paper's
    # the share of the run after which the VQ-VAE is frozen and only the prior trains
    prior_start: float = ranged(0.5, "(0, 1)")
    prior_channels: int = ranged(64, "[1, inf)")
    prior_layers: int = ranged(8, "[1, inf)")  # gated layers: the receptive field grows 1/layer
    prior_lr: float = ranged(3e-4, "(0, inf)")


def perplexity(counts: torch.Tensor) -> torch.Tensor:
    """exp of the entropy of the codes' usage: K when all K are used equally, 1 for one."""
    p = counts / counts.sum().clamp_min(1)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-10))).sum())


@torch.no_grad()
def ema_update(codebook: Codebook, z: torch.Tensor, codes: torch.Tensor, decay: float,
               epsilon: float, replicas: Replicas) -> torch.Tensor:
    """The paper's EMA codebook step on encoder outputs z (N, D, h, w) assigned `codes`:
    N_i <- decay N_i + (1 - decay) n_i, m_i <- decay m_i + (1 - decay) sum of z assigned to i,
    e_i = m_i / N_i (N Laplace-smoothed so an unused code does not divide by zero). Counts and
    sums are over every replica's batch. Returns this step's counts n_i."""
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]).float()
    onehot = F.one_hot(codes.reshape(-1), codebook.size).float()
    counts, sums = onehot.sum(0), onehot.t() @ flat
    replicas.sum([counts, sums])
    codebook.cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
    codebook.ema_sum.mul_(decay).add_(sums, alpha=1 - decay)
    total = codebook.cluster_size.sum()
    smoothed = (codebook.cluster_size + epsilon) / (total + codebook.size * epsilon) * total
    codebook.vectors.copy_(codebook.ema_sum / smoothed[:, None])
    return counts


@torch.no_grad()
def count_usage(codebook: Codebook, codes: torch.Tensor, decay: float,
                replicas: Replicas) -> torch.Tensor:
    """codebook=loss: the moving-average counts alone (they find dead codes)."""
    counts = torch.bincount(codes.reshape(-1), minlength=codebook.size).float()
    replicas.sum([counts])
    codebook.cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
    return counts


@torch.no_grad()
def restart_dead_codes(codebook: Codebook, z: torch.Tensor, threshold: float,
                       replicas: Replicas) -> int:
    """Codes whose moving-average count is below `threshold` jump to randomly chosen encoder
    outputs of this batch, with a count of `threshold` (their sum to match), so they compete
    again. Rank 0's choice is every replica's. Returns how many codes moved."""
    dead = codebook.cluster_size < threshold
    moved = int(dead.sum())
    if not moved:
        return 0
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    picked = flat[torch.randint(len(flat), (moved,), device=flat.device)].to(
        codebook.vectors.dtype)
    codebook.vectors.data[dead] = picked
    codebook.cluster_size[dead] = threshold
    if codebook.ema:
        codebook.ema_sum[dead] = picked * threshold
    replicas.broadcast([codebook])
    return moved


@torch.no_grad()
def initialise_from(codebook: Codebook, z: torch.Tensor, replicas: Replicas) -> None:
    """The codebook's vectors from random encoder outputs of the first batch (Jukebox): codes
    start where the data is, instead of far from every output."""
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    picked = flat[torch.randint(len(flat), (codebook.size,), device=flat.device)]
    codebook.vectors.data.copy_(picked)
    codebook.cluster_size.fill_(1.0)
    if codebook.ema:
        codebook.ema_sum.copy_(picked)
    codebook.initialised.fill_(True)
    replicas.broadcast([codebook])


@FAMILIES.register("vqvae")
class VqvaeFamily(Family):
    # one scale per chart: nats beside 0.005 commitments or counts beside shares flatten lines
    chart_layout: ClassVar[dict[str, dict[str, list[str]]]] = {"vqvae": {
        "stage 1: reconstruction -log p(x|z_q), nats/image": [r"^loss/recon$"],
        "stage 1: commitment and codebook losses, per code element":
            [r"^loss/(commitment|codebook)$"],
        "codebook: perplexity (how many codes are in use, effectively)":
            [r"^vq/perplexity$", r"^eval/heldout_perplexity$"],
        "codebook: share of the K codes used (batch, held-out set)":
            [r"^vq/usage$", r"^eval/heldout_codebook_usage$"],
        "codebook: dead codes restarted per step": [r"^vq/restarts$"],
        "stage 2: the prior's -log p(codes), nats/image":
            [r"^loss/prior$", r"^eval/heldout_prior_nll$"],
        "held-out: negative ELBO (reconstruction + prior) and its terms, nats/image":
            [r"^eval/heldout_(neg_elbo|recon)$"],
        "held-out: bits/dim": [r"^eval/heldout_bits_per_dim$"],
        "held-out: mean squared error per pixel": [r"^eval/heldout_mse$"],
        "sharpness of reconstructions and samples (real images = 1)": [
            r"^eval/(heldout_recon_sharpness|sharpness)$"],
        "sample quality (lower is better)": [r"^eval/(fid|classifier_fid|kid)$"],
    }}
    visual_notes: ClassVar[dict[str, str]] = {
        "reconstructions": "the same held-out images and their reconstructions through the "
                           "codebook at every step",
        "samples": "codes drawn from the prior with the same uniform numbers at every step, "
                   "decoded; the prior trains from model.prior_start of the run, so earlier "
                   "grids show an untrained prior",
    }

    needs_heldout = True

    @classmethod
    def check_config(cls, cfg) -> None:
        if "image_size" not in cfg.dataset:
            raise UserError(f"model={cfg.model.name} encodes images; dataset={cfg.dataset.name} "
                            "holds 2-D points")
        size = int(cfg.dataset.image_size)
        code_grid(size, size, int(cfg.model.downsample))

    def __init__(self, cfg, spec: DataSpec, device: torch.device) -> None:
        self.spec = spec
        self.device = device
        v = cfg.model
        nets = MODELS.get(v.name)(v, spec)
        self.encoder, self.decoder = nets.encoder.to(device), nets.decoder.to(device)
        self.codebook, self.prior = nets.codebook.to(device), nets.prior.to(device)
        self.grid = nets.grid
        self.latent_dim = v.embedding_dim * self.grid[0] * self.grid[1]  # encode()'s width
        self.ema = v.codebook == CodebookRule.ema
        self.beta, self.decay, self.epsilon = float(v.commitment), float(v.decay), float(v.epsilon)
        self.restart_threshold = float(v.restart_threshold)
        self.likelihood = resolve_likelihood(v.likelihood, spec)
        self.gaussian_std = float(v.gaussian_std)
        self.prior_start = float(v.prior_start)
        stage1 = [*self.encoder.parameters(), *self.decoder.parameters(),
                  *self.codebook.parameters()]  # the vectors, under codebook=loss
        self.opt = adam(stage1, lr=v.lr)
        self.prior_opt = adam(self.prior.parameters(), lr=v.prior_lr)
        self.replicas = Replicas()
        fixed = torch.Generator().manual_seed(cfg.trainer.seed + 1)
        self.fixed_noise = self.sample_noise(cfg.log.n_samples, fixed)
        self.eval_samples = int(cfg.eval.n_samples)
        self.steps_done = 0
        self.prior_started = False
        self.heldout = None

    # --- stages --------------------------------------------------------------------------

    @property
    def prior_from(self) -> int:
        """The first step of stage 2 (the prior)."""
        return int(self.prior_start * (self.run_length or 0))

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        x = to_float(batch[0], UNIT)
        # once the prior trains, the codes stay frozen (a resume with a longer run moves
        # prior_from later, but must not go back to changing the codes under the prior)
        self.prior_started = self.prior_started or self.steps_done >= self.prior_from
        out = self.prior_step(x) if self.prior_started else self.autoencoder_step(x)
        self.steps_done += 1
        return out

    def autoencoder_step(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.encoder(x)
        if not bool(self.codebook.initialised):
            initialise_from(self.codebook, z.detach(), self.replicas)
        codes = self.codebook.nearest(z)
        quantised = self.codebook.lookup(codes)
        commitment = F.mse_loss(z, quantised.detach())
        # straight-through: the decoder's gradient at the codes is passed on to z unchanged
        logits = self.decoder(z + (quantised - z).detach())
        recon = self.reconstruction_nll(logits, x)
        pixels = x[0].numel()
        # per pixel and per code element, as the paper and Sonnet weigh the two terms
        loss = recon.mean() / pixels + self.beta * commitment
        terms = {"recon": recon.mean().detach(), "commitment": commitment.detach()}
        if not self.ema:
            codebook_loss = F.mse_loss(quantised, z.detach())
            loss = loss + codebook_loss
            terms["codebook"] = codebook_loss.detach()
        self.opt.zero_grad(set_to_none=True)
        self.amp.backward(loss)
        self.amp.step(self.opt)
        if self.ema:
            counts = ema_update(self.codebook, z.detach(), codes, self.decay, self.epsilon,
                                self.replicas)
        else:
            counts = count_usage(self.codebook, codes, self.decay, self.replicas)
        restarts = (restart_dead_codes(self.codebook, z.detach(), self.restart_threshold,
                                       self.replicas) if self.restart_threshold > 0 else 0)
        out = {f"loss/{k}": v for k, v in terms.items()}
        out["loss/total"] = loss.detach()
        if self.diagnostics:
            out["vq/perplexity"] = perplexity(counts)
            out["vq/usage"] = (counts > 0).float().mean()  # share of the K codes in the batch
            out["vq/restarts"] = torch.tensor(float(restarts))
        return out

    def prior_step(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            codes = self.codebook.nearest(self.encoder(x))
        nll = self.prior_nll(codes)
        loss = nll.mean() / codes[0].numel()  # per code, so prior_lr does not depend on h * w
        self.prior_opt.zero_grad(set_to_none=True)
        self.amp.backward(loss)
        self.amp.step(self.prior_opt)
        return {"loss/prior": nll.mean().detach()}

    # --- the maths -----------------------------------------------------------------------

    def reconstruction_nll(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x | z_q) per image, in nats."""
        if self.likelihood == Likelihood.bernoulli:
            return bernoulli_nll(logits, x)
        return gaussian_nll(torch.sigmoid(logits), x, self.gaussian_std)

    def prior_nll(self, codes: torch.Tensor) -> torch.Tensor:
        """-log p(codes) under the prior, per image, in nats."""
        logits = self.prior(codes)
        return F.cross_entropy(logits, codes, reduction="none").flatten(1).sum(dim=1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] images -> their quantised code vectors, flattened (N, D * h * w)."""
        return self.codebook.lookup(self.codebook.nearest(self.encoder(x))).flatten(1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Flattened code vectors (any, not only codebook entries) -> [0, 1] images."""
        return torch.sigmoid(self.decoder(z.unflatten(1, (-1, *self.grid))))

    # --- sampling (the `sample` command and the sample metrics) --------------------------

    def sample_noise(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """One uniform number per code position: the prior's draws by inverse CDF, so the
        same numbers give the same samples (the fixed grid, seeds)."""
        return torch.rand(n, self.grid[0] * self.grid[1], generator=generator).to(self.device)

    @torch.no_grad()
    def sample_codes(self, uniforms: torch.Tensor) -> torch.Tensor:
        """(n, h * w) uniforms -> (n, h, w) codes drawn from the prior in raster order, each
        the inverse CDF of its conditional distribution at its uniform number."""
        uniforms = uniforms.to(self.device)

        def inverse_cdf(logits: torch.Tensor, position: int) -> torch.Tensor:
            cdf = torch.softmax(logits.float(), dim=1).cumsum(dim=1)
            u = uniforms[:, position, None] * cdf[:, -1:]
            return torch.searchsorted(cdf, u).squeeze(1).clamp_max(self.codebook.size - 1)

        return self.prior.sample(len(uniforms), self.grid, inverse_cdf, self.device)

    @torch.no_grad()
    def generate(self, z: torch.Tensor) -> torch.Tensor:
        codes = self.sample_codes(z)
        return torch.sigmoid(self.decoder(self.codebook.lookup(codes)))

    def to_uint8(self, images: torch.Tensor) -> torch.Tensor:
        return to_uint8(images, UNIT)

    # --- evaluation and pictures ---------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if self.heldout is None:
            return {}
        n = min(self.eval_samples, len(self.heldout))
        sums = {"recon": 0.0, "prior_nll": 0.0, "mse": 0.0}
        counts = torch.zeros(self.codebook.size, device=self.device)
        for start in range(0, n, EVAL_BATCH):
            x = to_float(self.heldout.x[start : min(start + EVAL_BATCH, n)], UNIT)
            codes = self.codebook.nearest(self.encoder(x))
            logits = self.decoder(self.codebook.lookup(codes))
            sums["recon"] += float(self.reconstruction_nll(logits, x).sum())
            sums["prior_nll"] += float(self.prior_nll(codes).sum())
            sums["mse"] += float((torch.sigmoid(logits) - x).pow(2).flatten(1).mean(1).sum())
            counts += torch.bincount(codes.reshape(-1), minlength=self.codebook.size)
        metrics = {f"heldout_{k}": v / n for k, v in sums.items()}
        neg_elbo = metrics["heldout_recon"] + metrics["heldout_prior_nll"]
        pixels = math.prod(self.spec.shape)
        discretisation = pixels * math.log(256) if self.likelihood == Likelihood.gaussian else 0
        metrics["heldout_neg_elbo"] = neg_elbo
        metrics["heldout_bits_per_dim"] = (neg_elbo + discretisation) / (pixels * math.log(2))
        metrics["heldout_perplexity"] = float(perplexity(counts))
        metrics["heldout_codebook_usage"] = float((counts > 0).float().mean())
        x = to_float(self.heldout.x[: min(n, 1000)], UNIT)
        metrics["heldout_recon_sharpness"] = sharpness_ratio(self.decode(self.encode(x)), x)
        return metrics

    @torch.no_grad()
    def visuals(self) -> dict[str, torch.Tensor]:
        out = {}
        if self.heldout is not None:
            x = to_float(self.heldout.x[:SHOWN], UNIT)
            recon = self.decode(self.encode(x))
            rows = [t for i in range(0, len(x), 8) for t in (x[i : i + 8], recon[i : i + 8])]
            out["reconstructions"] = self._grid(torch.cat(rows), nrow=8)
        samples = self.generate(self.fixed_noise)
        out["samples"] = self._grid(samples, nrow=math.ceil(math.sqrt(len(samples))))
        return out

    def _grid(self, images: torch.Tensor, nrow: int) -> torch.Tensor:
        return make_grid(to_uint8(images, UNIT).cpu(), nrow=nrow)

    # --- state ---------------------------------------------------------------------------

    def extra_state(self) -> dict[str, Any]:
        return {"fixed_noise": self.fixed_noise.cpu(), "steps_done": self.steps_done,
                "prior_started": self.prior_started}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.fixed_noise = state["fixed_noise"].to(self.device)
        self.steps_done = int(state["steps_done"])
        self.prior_started = bool(state["prior_started"])
