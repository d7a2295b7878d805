"""World Models' M and C (Ha & Schmidhuber 2018): an LSTM whose output parameterises, for
every dimension of the next latent z_{t+1}, a mixture of K Gaussians (an MDN-RNN), plus the
VizDoom version's done head (and a reward head); and the linear controller a = W [z, h] + b.
V is ganlab's convolutional VAE (ganlab/models/autoencoders.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from ganlab.models.autoencoders import Architecture, AutoencoderNetworks, build_autoencoder
from ganlab.models.base import MODELS

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@MODELS.register("worldmodel")
def build_vision(cfg, spec) -> AutoencoderNetworks:
    """V: the conv VAE of ganlab/models/autoencoders.py (stride-2 4x4 convs, widths
    features * 1, 2, 4, 8: the paper's 32-64-128-256 at features=32), encoder -> mu, logvar."""
    return build_autoencoder(SimpleNamespace(
        family="vae", name=cfg.name, architecture=Architecture.conv,
        latent_dim=cfg.latent_dim, features=cfg.features), spec)


@dataclass
class MdnOutput:
    """Per step: mixture log-weights, means and log-stds (B, T, Z, K); reward (B, T); the
    done logit (B, T)."""

    logpi: torch.Tensor
    mu: torch.Tensor
    logsigma: torch.Tensor
    reward: torch.Tensor
    done: torch.Tensor


class MdnRnn(nn.Module):
    """(z_t, a_t) -> LSTM -> p(z_{t+1}) as Z independent K-component Gaussian mixtures."""

    def __init__(self, z_dim: int, action_dim: int, hidden: int = 256, mixtures: int = 5):
        super().__init__()
        self.z_dim, self.action_dim = z_dim, action_dim
        self.hidden, self.mixtures = hidden, mixtures
        self.lstm = nn.LSTM(z_dim + action_dim, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 3 * z_dim * mixtures + 2)

    def forward(self, z: torch.Tensor, a: torch.Tensor, state=None):
        """z (B, T, Z), a (B, T, A) -> (MdnOutput, (h, c)); state as nn.LSTM's."""
        out, state = self.lstm(torch.cat([z, a], dim=-1), state)
        return self.read_head(self.head(out)), state

    def read_head(self, raw: torch.Tensor) -> MdnOutput:
        b, t = raw.shape[:2]
        mdn = raw[..., : 3 * self.z_dim * self.mixtures].reshape(b, t, self.z_dim, 3,
                                                                 self.mixtures)
        logpi = F.log_softmax(mdn[..., 0, :], dim=-1)
        return MdnOutput(logpi, mdn[..., 1, :], mdn[..., 2, :].clamp(-7.0, 5.0),
                         raw[..., -2], raw[..., -1])


def mdn_log_prob(out: MdnOutput, target: torch.Tensor) -> torch.Tensor:
    """log p(target) per dimension (B, T, Z): log sum_k pi_k N(target; mu_k, sigma_k^2)."""
    x = target.unsqueeze(-1)
    log_normal = (-0.5 * ((x - out.mu) * torch.exp(-out.logsigma)).pow(2) - out.logsigma
                  - LOG_SQRT_2PI)
    return torch.logsumexp(out.logpi + log_normal, dim=-1)


def mdn_sample(out: MdnOutput, temperature: float,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """z ~ the mixture at temperature tau (as the paper: mixture logits divided by tau,
    variances multiplied by it); tau -> 0 picks the likeliest component's mean."""
    if temperature <= 0:
        k = out.logpi.argmax(-1, keepdim=True)
        return out.mu.gather(-1, k).squeeze(-1)
    probs = F.softmax(out.logpi / temperature, dim=-1)
    flat = probs.reshape(-1, probs.shape[-1])
    k = torch.multinomial(flat, 1, generator=generator).reshape(*probs.shape[:-1], 1)
    mu, logsigma = out.mu.gather(-1, k).squeeze(-1), out.logsigma.gather(-1, k).squeeze(-1)
    noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(logsigma) * math.sqrt(temperature) * noise


def gaussian_nll(x: torch.Tensor, mean: torch.Tensor, var: float) -> torch.Tensor:
    """-log N(x; mean, var) elementwise (the copy baseline's density)."""
    return 0.5 * (x - mean).pow(2) / var + 0.5 * math.log(var) + LOG_SQRT_2PI


def controller_size(inputs: int, actions: int) -> int:
    """Parameters of the linear controller: W (actions x inputs) and b."""
    return (inputs + 1) * actions


def controller_act(params: torch.Tensor, features: torch.Tensor, discrete: bool,
                   low: torch.Tensor | None = None, high: torch.Tensor | None = None
                   ) -> torch.Tensor:
    """Actions of a population of linear controllers. params (P, (I + 1) * A), features
    (P, N, I) -> (P, N) action indices (discrete: the argmax) or (P, N, A) actions (tanh,
    scaled into [low, high])."""
    p, _, i = features.shape
    w = params.reshape(p, -1, i + 1)
    out = torch.einsum("pni,pai->pna", features, w[..., :i]) + w[..., i][:, None, :]
    if discrete:
        return out.argmax(-1)
    squashed = torch.tanh(out)
    if low is None or high is None:
        return squashed
    return low + (squashed + 1) / 2 * (high - low)
