"""The log-likelihood of a VAE by importance sampling (Burda, Grosse & Salakhutdinov 2016).

    log p(x) >= L_k = E[ log (1/k) sum_j p(x | z_j) p(z_j) / q(z_j | x) ],  z_j ~ q(z | x)

L_1 is the ELBO; L_k grows with k and reaches log p(x) as k -> infinity, and is exact for any
k when q is the true posterior (every weight is then p(x)). The gap between -L_5000 and the
negative ELBO is the part of log p(x) the ELBO leaves out, in nats.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

LOG_2PI = math.log(2 * math.pi)


def standard_normal_log_density(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I), summed over the last dimension."""
    return -0.5 * (z.pow(2) + LOG_2PI).sum(dim=-1)


def importance_log_weights(x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                           log_likelihood: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                           k: int, generator: torch.Generator | None = None,
                           chunk: int = 256) -> torch.Tensor:
    """(n, k) log weights log p(x|z) + log p(z) - log q(z|x) for z ~ q = N(mu, exp(logvar)).

    log_likelihood(x, z) takes z of shape (n, c, d) and returns log p(x | z) of shape (n, c);
    the k samples are drawn `chunk` at a time so memory stays bounded for k in the thousands.
    """
    std = torch.exp(0.5 * logvar)
    parts = []
    for start in range(0, k, chunk):
        c = min(chunk, k - start)
        eps = torch.randn((mu.shape[0], c, mu.shape[1]), generator=generator,
                          device=mu.device, dtype=mu.dtype)
        z = mu[:, None] + eps * std[:, None]
        # log q(z|x) with z = mu + eps * std: the density of eps less log std per dimension
        log_q = standard_normal_log_density(eps) - 0.5 * logvar.sum(dim=-1, keepdim=True)
        parts.append(log_likelihood(x, z) + standard_normal_log_density(z) - log_q)
    return torch.cat(parts, dim=1)


def iwae_log_px(log_weights: torch.Tensor) -> torch.Tensor:
    """Per example: log (1/k) sum_j w_j, from (n, k) log weights (stable in log space)."""
    return torch.logsumexp(log_weights, dim=1) - math.log(log_weights.shape[1])
