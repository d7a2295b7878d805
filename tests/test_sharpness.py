"""The blur measure: the variance of the Laplacian, relative to real images."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ganlab.metrics.sharpness import laplacian_variance, sharpness_ratio


def edges(n: int = 16) -> torch.Tensor:
    """Sharp images: random black and white squares of 4 px, as uint8 (n, 1, 28, 28)."""
    g = torch.Generator().manual_seed(0)
    cells = torch.randint(0, 2, (n, 1, 7, 7), generator=g).float()
    return (F.interpolate(cells, scale_factor=4, mode="nearest") * 255).to(torch.uint8)


def test_blur_lowers_the_laplacian_variance() -> None:
    sharp = edges()
    blurred = F.avg_pool2d(sharp.float() / 255, 3, stride=1, padding=1)
    assert sharpness_ratio(sharp, sharp) == 1.0
    ratio = sharpness_ratio(blurred, sharp)
    assert 0 < ratio < 0.5
    assert sharpness_ratio(F.avg_pool2d(blurred, 3, stride=1, padding=1), sharp) < ratio
    # uint8 and [0, 1] float images measure alike; a flat image has none
    assert abs(laplacian_variance(sharp) - laplacian_variance(sharp.float() / 255)) < 1e-9
    assert laplacian_variance(torch.full((2, 3, 8, 8), 0.5)) == 0.0


def test_an_autoencoder_reports_its_reconstructions_sharpness() -> None:
    from conftest import build_family

    from ganlab.data.base import DataSpec, InMemoryDataset
    from ganlab.families.autoencoder import AutoencoderConfig

    family = build_family(AutoencoderConfig(latent_dim=4, hidden=[32]))
    family.use_heldout(InMemoryDataset(DataSpec("t", "image", (1, 28, 28)), edges(32)))
    family.eval_samples = 32
    metrics = family.evaluate()
    # an untrained decoder gives near-flat images: far blurrier than the squares
    assert 0 <= metrics["heldout_recon_sharpness"] < 0.2
