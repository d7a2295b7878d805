"""The VAE's log-likelihood by importance sampling (Burda et al.): exact when q is the true
posterior, a bound that tightens with k otherwise, at least the ELBO on a trained VAE; the
IWAE training objective."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import assert_bad_input, build_family, train_in_process, train_refused_in_process

from ganlab.data.base import DataSpec, InMemoryDataset
from ganlab.families.autoencoder import VaeConfig
from ganlab.metrics.likelihood import importance_log_weights, iwae_log_px

S = 0.5  # the linear Gaussian model: z ~ N(0, 1), x | z ~ N(z, S^2), so x ~ N(0, 1 + S^2)


def linear_gaussian_log_likelihood(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return (-0.5 * ((x[:, None] - z) / S) ** 2 - math.log(S) - 0.5 * math.log(2 * math.pi)
            ).sum(dim=-1)


def true_log_px(x: torch.Tensor) -> torch.Tensor:
    var = 1 + S**2
    return (-0.5 * x**2 / var - 0.5 * math.log(2 * math.pi * var)).sum(dim=-1)


def estimate(x, mu, logvar, k: int, seed: int = 0) -> torch.Tensor:
    weights = importance_log_weights(x, mu, logvar, linear_gaussian_log_likelihood, k,
                                     torch.Generator().manual_seed(seed), chunk=64)
    return iwae_log_px(weights)


def test_exact_when_q_is_the_true_posterior() -> None:
    x = torch.linspace(-2, 2, 9, dtype=torch.float64)[:, None]
    # p(z | x) = N(x / (1 + S^2), S^2 / (1 + S^2)): every weight is p(x) itself
    mu, logvar = x / (1 + S**2), torch.full_like(x, math.log(S**2 / (1 + S**2)))
    for k in (1, 7):
        assert torch.allclose(estimate(x, mu, logvar, k), true_log_px(x), atol=1e-10)


def test_with_the_prior_as_q_the_bound_rises_with_k_towards_log_px() -> None:
    x = torch.linspace(-2, 2, 41, dtype=torch.float64)[:, None]
    mu, logvar = torch.zeros_like(x), torch.zeros_like(x)  # q = p(z): a poor posterior
    truth = true_log_px(x).mean()
    bounds = [estimate(x, mu, logvar, k).mean() for k in (1, 10, 1000)]
    assert bounds[0] < bounds[1] < bounds[2]
    # a bound in expectation: one estimate may land a little above the truth
    assert truth - bounds[0] > 0.3 and abs(truth - bounds[2]) < 0.02


def digits(n: int = 200) -> InMemoryDataset:
    """Blobs of ink at one of four places: something a VAE can learn in a few steps."""
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(n, 1, 28, 28, dtype=torch.uint8)
    for i in range(n):
        r, c = 4 + 12 * (i % 2), 4 + 12 * ((i // 2) % 2)
        x[i, 0, r : r + 8, c : c + 8] = 255
    x = torch.where(torch.rand(x.shape, generator=g) < 0.05, 255 - x, x)
    return InMemoryDataset(DataSpec("blobs", "image", (1, 28, 28)), x)


def test_on_a_trained_vae_the_bound_is_at_least_the_elbo_and_tightens_with_k() -> None:
    family = build_family(VaeConfig(latent_dim=4, hidden=[64]), **{"eval.iwae_k": 1})
    data = digits()
    family.use_heldout(data)
    batches = data.batches(50, seed=0)
    for _ in range(60):
        family.train_step(next(batches))
    family.eval_samples = 100
    elbo = family.evaluate()
    nll = {k: family.heldout_nll(100, k) for k in (1, 10, 100)}
    # k = 1 is a one-sample ELBO: the same number up to sampling noise
    assert abs(nll[1] - elbo["heldout_neg_elbo"]) < 0.05 * elbo["heldout_neg_elbo"]
    assert elbo["heldout_nll_iwae"] == pytest.approx(nll[1])
    assert nll[100] < nll[10] < nll[1]  # the bound tightens: -log p(x) estimates fall


def test_the_iwae_objective_trains_and_logs_its_bound(tmp_path: Path) -> None:
    train_in_process(["model=vae", "model.iwae_k=5", "model.hidden=[32]", "dataset=synthetic",
                      "dataset.n_samples=64", "trainer.batch_size=16", "trainer.max_steps=3",
                      "eval.iwae_k=4", "log.progress=false", "device=cpu",
                      "hydra.run.dir=run"], tmp_path)
    import json

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert math.isfinite(metrics["loss/iwae"]) and metrics["iwae_k"] == 4
    assert math.isfinite(metrics["heldout_nll_iwae"])


def test_iwae_with_a_kl_weight_is_bad_input(tmp_path: Path, capsys) -> None:
    result = train_refused_in_process(["model=vae", "model.iwae_k=5", "model.beta=4",
                                       "dataset=synthetic", "device=cpu"], tmp_path, capsys)
    assert_bad_input(result, "model.iwae_k=5 trains the importance-weighted bound")
    result = train_refused_in_process(["model=vae", "model.iwae_k=0", "device=cpu"], tmp_path,
                                      capsys)
    assert_bad_input(result, "model.iwae_k=0 is outside its range [1, inf)")
