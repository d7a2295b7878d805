"""Autoencoders and VAEs (Kingma & Welling).

Losses are sums over pixels and latent dimensions per image, averaged over the batch, so the
negative ELBO is in nats per image, as papers and pytorch/examples report it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ganlab.config import ranged, schema, sizes
from ganlab.data.base import DataSpec
from ganlab.errors import UserError
from ganlab.families.base import FAMILIES, Family
from ganlab.images import UNIT, make_grid, to_float, to_uint8
from ganlab.metrics.likelihood import importance_log_weights, iwae_log_px
from ganlab.metrics.sharpness import sharpness_ratio
from ganlab.models import MODELS
from ganlab.models.autoencoders import Architecture
from ganlab.optim import adam

SHOWN = 32  # held-out images in the reconstruction grid
INTERPOLATION_ROWS, INTERPOLATION_STEPS = 4, 10


class Likelihood(str, Enum):
    auto = "auto"  # bernoulli for 1-channel images (digits), gaussian for colour
    bernoulli = "bernoulli"  # binary cross-entropy on [0, 1] pixels
    gaussian = "gaussian"  # N(x; decoder mean, model.gaussian_std^2), i.e. a scaled MSE


@schema("model", "ae")
@dataclass
class AutoencoderConfig:
    """`model.*` of a plain autoencoder: its networks and Adam's learning rate."""

    name: str = "ae"  # the networks (MODELS)
    family: str = "ae"
    architecture: Architecture = Architecture.mlp
    latent_dim: int = ranged(20, "[1, inf)")
    hidden: list[int] = sizes([400])  # mlp: encoder widths
    features: int = ranged(32, "[1, inf)")  # conv: width of the first encoder stage; doubles
    lr: float = ranged(1e-3, "(0, inf)")  # Adam


@schema("model", "vae")
@dataclass
class VaeConfig(AutoencoderConfig):
    """`model.*` of a VAE: an autoencoder's keys, the KL weight and the likelihood."""

    name: str = "vae"
    family: str = "vae"
    beta: float = ranged(1.0, "[0, inf)")  # KL weight (Higgins et al.); the ELBO uses 1
    likelihood: Likelihood = Likelihood.auto
    gaussian_std: float = ranged(0.1, "(0, inf)")  # gaussian likelihood: the fixed pixel std
    # 1: train on the ELBO; k > 1: on Burda et al.'s importance-weighted bound with k samples
    # per image (IWAE: a tighter bound, k decoder passes per image)
    iwae_k: int = ranged(1, "[1, inf)")


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per example, in closed form, summed over dims."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).flatten(1).sum(dim=1)


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x | logits) per example: binary cross-entropy summed over pixels."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(dim=1)


def gaussian_nll(mean: torch.Tensor, x: torch.Tensor, std: float) -> torch.Tensor:
    """-log N(x; mean, std^2 I) per example, constant included, summed over pixels."""
    per_pixel = 0.5 * ((x - mean) / std).pow(2) + math.log(std) + 0.5 * math.log(2 * math.pi)
    return per_pixel.flatten(1).sum(dim=1)


def resolve_likelihood(choice, spec: DataSpec) -> Likelihood:
    if choice == Likelihood.auto:
        return Likelihood.bernoulli if spec.shape[0] == 1 else Likelihood.gaussian
    return choice


@FAMILIES.register("ae")
class AutoencoderFamily(Family):
    """A deterministic code; reconstruction by squared error summed over pixels."""
    chart_layout: ClassVar[dict[str, dict[str, list[str]]]] = {"autoencoder": {
        "training loss: reconstruction, KL and their sum (the negative ELBO for a VAE)":
            [r"^loss/(recon|kl|total|iwae)$"],
        "held-out: negative ELBO and importance-sampled -log p(x), nats": [
            r"^eval/heldout_(neg_elbo|nll_iwae)$"],
        "held-out terms": [r"^eval/heldout_(recon|kl)$"],
        "sharpness of reconstructions and samples (real images = 1)": [
            r"^eval/(heldout_recon_sharpness|sharpness)$"],
        "sample quality (lower is better)": [r"^eval/(fid|classifier_fid|kid)$"],
    }}
    visual_notes: ClassVar[dict[str, str]] = {
        "reconstructions": "the same held-out images and their reconstructions at every step",
        "samples": "decoded from the same fixed z at every step, from step 0",
        "interpolation": "decoded along lines between the codes of held-out images"}

    variational = False
    needs_heldout = True

    def __init__(self, cfg, spec: DataSpec, device: torch.device) -> None:
        self.spec = spec
        self.device = device
        v = cfg.model
        nets = MODELS.get(cfg.model.name)(cfg.model, spec)
        self.encoder, self.decoder = nets.encoder.to(device), nets.decoder.to(device)
        self.latent_dim = nets.latent_dim
        params = [*self.encoder.parameters(), *self.decoder.parameters()]
        self.opt = adam(params, lr=v.lr)
        if self.variational:
            self.beta = float(v.beta)
            self.likelihood = resolve_likelihood(v.likelihood, spec)
            self.gaussian_std = float(v.gaussian_std)
            self.train_k = int(v.get("iwae_k", 1))  # checkpoints from before it: the ELBO
            self.iwae_k = int(cfg.eval.get("iwae_k", 0) or 0)
        fixed = torch.Generator().manual_seed(cfg.trainer.seed + 1)
        self.fixed_z = torch.randn(cfg.log.n_samples, self.latent_dim, generator=fixed).to(device)
        self.eval_seed = cfg.trainer.seed + 2
        self.eval_samples = int(cfg.eval.n_samples)
        self.heldout = None

    # --- the maths -----------------------------------------------------------------------

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code of [0, 1] images: z for an autoencoder, the posterior mean for a VAE."""
        return self.encoder(x)[:, : self.latent_dim]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstructed images in [0, 1]."""
        return torch.sigmoid(self.decoder(z))

    def losses(self, x: torch.Tensor, noise: torch.Tensor | None = None
               ) -> dict[str, torch.Tensor]:
        """Per-example terms for [0, 1] images x."""
        recon = self.decode(self.encoder(x))
        return {"recon": (recon - x).pow(2).flatten(1).sum(dim=1)}

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        x = to_float(batch[0], UNIT)
        terms = self.losses(x)
        loss = terms["recon"].mean()
        if "kl" in terms:
            loss = loss + self.beta * terms["kl"].mean()
        self.opt.zero_grad(set_to_none=True)
        self.amp.backward(loss)
        self.amp.step(self.opt)
        out = {f"loss/{k}": v.mean().detach() for k, v in terms.items()}
        out["loss/total"] = loss.detach()
        return out

    # --- evaluation and pictures ---------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if self.heldout is None:
            return {}
        generator = torch.Generator(self.device).manual_seed(self.eval_seed)
        n = min(self.eval_samples, len(self.heldout))
        sums: dict[str, float] = {}
        for start in range(0, n, 500):
            x = to_float(self.heldout.x[start : min(start + 500, n)], UNIT)
            noise = torch.randn(len(x), self.latent_dim, generator=generator,
                                device=self.device) if self.variational else None
            for k, v in self.losses(x, noise).items():
                sums[k] = sums.get(k, 0.0) + float(v.sum())
        metrics = {f"heldout_{k}": v / n for k, v in sums.items()}
        # blur: the reconstructions' Laplacian variance over the inputs' (1: as sharp)
        x = to_float(self.heldout.x[: min(n, 1000)], UNIT)
        metrics["heldout_recon_sharpness"] = sharpness_ratio(self.decode(self.encode(x)), x)
        if self.variational:  # the ELBO itself, whatever beta training used
            metrics["heldout_neg_elbo"] = metrics["heldout_recon"] + metrics["heldout_kl"]
            if self.iwae_k:
                metrics["heldout_nll_iwae"] = self.heldout_nll(n, self.iwae_k)
                metrics["iwae_k"] = self.iwae_k
        return metrics

    @torch.no_grad()
    def visuals(self) -> dict[str, torch.Tensor]:
        if self.heldout is None:
            return {}
        x = to_float(self.heldout.x[:SHOWN], UNIT)
        recon = self.decode(self.encode(x))
        # rows of 8 inputs, each followed by the row of their reconstructions
        rows = [t for i in range(0, len(x), 8) for t in (x[i : i + 8], recon[i : i + 8])]
        out = {"reconstructions": self._grid(torch.cat(rows), nrow=8)}
        codes = self.encode(to_float(self.heldout.x[: 2 * INTERPOLATION_ROWS], UNIT))
        if len(codes) >= 2:
            a, b = codes[0::2], codes[1::2]
            t = torch.linspace(0, 1, INTERPOLATION_STEPS, device=self.device)[None, :, None]
            z = ((1 - t) * a[:, None] + t * b[:, None]).reshape(-1, self.latent_dim)
            out["interpolation"] = self._grid(self.decode(z), nrow=INTERPOLATION_STEPS)
        return out

    def _grid(self, images: torch.Tensor, nrow: int) -> torch.Tensor:
        return make_grid(to_uint8(images, UNIT).cpu(), nrow=nrow)

    # --- state ---------------------------------------------------------------------------

    def extra_state(self) -> dict[str, Any]:
        return {"fixed_z": self.fixed_z.cpu()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.fixed_z = state["fixed_z"].to(self.device)


@FAMILIES.register("vae")
class VaeFamily(AutoencoderFamily):
    """Reparameterised Gaussian posterior, KL to N(0, I) in closed form, Bernoulli or
    Gaussian likelihood; loss = recon + beta * KL (the negative ELBO at beta = 1)."""

    variational = True

    def losses(self, x: torch.Tensor, noise: torch.Tensor | None = None
               ) -> dict[str, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        if noise is None:
            noise = torch.randn_like(mu)
        z = mu + noise * torch.exp(0.5 * logvar)  # the reparameterisation trick
        logits = self.decoder(z)
        if self.likelihood == Likelihood.bernoulli:
            recon = bernoulli_nll(logits, x)
        else:
            recon = gaussian_nll(torch.sigmoid(logits), x, self.gaussian_std)
        return {"recon": recon, "kl": gaussian_kl(mu, logvar)}

    @classmethod
    def check_config(cls, cfg) -> None:
        super().check_config(cfg)
        if cfg.model.get("iwae_k", 1) > 1 and cfg.model.beta != 1:
            raise UserError(f"model.iwae_k={cfg.model.iwae_k} trains the importance-weighted "
                            f"bound, which has no KL weight; leave model.beta at 1 (got "
                            f"{cfg.model.beta})")

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x | z) for z of shape (n, c, d): (n, c), c decoder passes per image."""
        n, c, d = z.shape
        logits = self.decoder(z.reshape(n * c, d))
        repeated = x[:, None].expand(n, c, *x.shape[1:]).reshape(n * c, *x.shape[1:])
        if self.likelihood == Likelihood.bernoulli:
            nll = bernoulli_nll(logits, repeated)
        else:
            nll = gaussian_nll(torch.sigmoid(logits), repeated, self.gaussian_std)
        return -nll.reshape(n, c)

    def log_weights(self, x: torch.Tensor, k: int,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return importance_log_weights(x, mu, logvar, self.log_likelihood, k, generator)

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        if self.train_k == 1:
            return super().train_step(batch)
        x = to_float(batch[0], UNIT)
        loss = -iwae_log_px(self.log_weights(x, self.train_k)).mean()
        self.opt.zero_grad(set_to_none=True)
        self.amp.backward(loss)
        self.amp.step(self.opt)
        return {"loss/iwae": loss.detach()}

    @torch.no_grad()
    def heldout_nll(self, n: int, k: int, batch: int = 100) -> float:
        """-log p(x) in nats per image, averaged over the first n held-out images, by
        importance sampling with k samples each (the eval seed: repeatable)."""
        generator = torch.Generator(self.device).manual_seed(self.eval_seed + 1)
        total = 0.0
        for start in range(0, n, batch):
            x = to_float(self.heldout.x[start : min(start + batch, n)], UNIT)
            total -= float(iwae_log_px(self.log_weights(x, k, generator)).sum())
        return total / n

    # --- sampling (the `sample` command and the prior grid) ------------------------------

    @torch.no_grad()
    def generate(self, z: torch.Tensor) -> torch.Tensor:
        was_training = self.decoder.training
        self.decoder.eval()
        out = self.decode(z.to(self.device))
        self.decoder.train(was_training)
        return out

    def sample_noise(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=generator).to(self.device)

    def to_uint8(self, images: torch.Tensor) -> torch.Tensor:
        return to_uint8(images, UNIT)

    def visuals(self) -> dict[str, torch.Tensor]:
        out = super().visuals()
        samples = self.generate(self.fixed_z)
        out["samples"] = self._grid(samples, nrow=math.ceil(math.sqrt(len(samples))))
        return out
