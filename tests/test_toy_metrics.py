"""Tests for ganlab.metrics.toy: exact numbers on hand-built ring/grid mixtures."""

from __future__ import annotations

import math

import pytest
import torch

from ganlab.metrics.toy import mode_metrics, scatter_image

RING_STD = 0.02
GRID_STD = 0.05


def ring_centres() -> torch.Tensor:
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    return torch.stack([2 * torch.cos(angles), 2 * torch.sin(angles)], dim=1).float()


def grid_centres() -> torch.Tensor:
    v = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
    xs, ys = torch.meshgrid(v, v, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)


def draw(centres: torch.Tensor, per_mode: list[int], std: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    parts = [
        centres[i] + std * torch.randn(n, 2, generator=g) for i, n in enumerate(per_mode) if n > 0
    ]
    return torch.cat(parts)


def test_centres_by_hand():
    c = ring_centres()
    assert c.shape == (8, 2)
    assert torch.allclose(c.norm(dim=1), torch.full((8,), 2.0))
    g = grid_centres()
    assert g.shape == (25, 2)
    assert g.min().item() == -4.0 and g.max().item() == 4.0


def test_ring_all_modes():
    c = ring_centres()
    m = mode_metrics(draw(c, [1000] * 8, RING_STD), c, RING_STD)
    assert set(m) == {"modes_covered", "modes_total", "high_quality_fraction", "mode_kl"}
    assert all(isinstance(v, float) for v in m.values())
    assert m["modes_covered"] == 8.0
    assert m["modes_total"] == 8.0
    # In 2-D the radius of an isotropic Gaussian is Rayleigh: P(r <= 3 std) = 1 - exp(-4.5),
    # about 0.9889, so a perfect generator scores ~0.989, not > 0.99.
    assert m["high_quality_fraction"] == pytest.approx(1 - math.exp(-4.5), abs=0.004)
    assert 0.0 <= m["mode_kl"] < 0.01


def test_grid_all_modes():
    c = grid_centres()
    m = mode_metrics(draw(c, [400] * 25, GRID_STD, seed=1), c, GRID_STD)
    assert m["modes_covered"] == 25.0
    assert m["modes_total"] == 25.0
    assert m["high_quality_fraction"] == pytest.approx(1 - math.exp(-4.5), abs=0.005)
    assert m["mode_kl"] < 0.01


def test_single_mode_collapse():
    c = ring_centres()
    m = mode_metrics(draw(c, [0, 0, 3000], RING_STD), c, RING_STD)
    assert m["modes_covered"] == 1.0
    assert m["mode_kl"] == pytest.approx(math.log(8))


def test_far_from_every_mode():
    c = ring_centres()
    m = mode_metrics(torch.zeros(500, 2), c, RING_STD)
    assert m["modes_covered"] == 0.0
    assert m["high_quality_fraction"] == 0.0
    assert math.isnan(m["mode_kl"])


def test_small_mode_not_counted():
    c = ring_centres()
    s = draw(c, [1000] * 7 + [10], RING_STD)
    # threshold 0.2 * 7010 / 8 = 175.25 > 10
    assert mode_metrics(s, c, RING_STD)["modes_covered"] == 7.0
    # with no share requirement one high-quality sample is enough
    assert mode_metrics(s, c, RING_STD, min_share=0.0)["modes_covered"] == 8.0


def test_min_share_threshold_is_inclusive():
    c = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    # N = 16, K = 2, min_share 0.25 -> threshold exactly 2 samples
    s = torch.cat([c[0].repeat(14, 1), c[1].repeat(2, 1)])
    assert mode_metrics(s, c, 0.1, min_share=0.25)["modes_covered"] == 2.0
    s = torch.cat([c[0].repeat(14, 1), c[1].repeat(1, 1)])  # 1 < 15 * 0.25 / 2 = 1.875
    assert mode_metrics(s, c, 0.1, min_share=0.25)["modes_covered"] == 1.0


def test_four_hand_placed_points():
    c = ring_centres()  # 3 * std = 0.06
    s = torch.tensor(
        [
            [2.0, 0.0],  # on mode 0: high quality
            [0.0, -2.04],  # 0.04 from mode 6: high quality
            [0.0, 2.1],  # 0.1 from mode 2: too far
            [0.0, 0.0],  # centre of the ring: too far
        ]
    )
    m = mode_metrics(s, c, RING_STD)
    assert m["high_quality_fraction"] == 0.5
    assert m["modes_covered"] == 2.0  # threshold max(1, 0.2 * 4 / 8) = 1
    assert m["mode_kl"] == pytest.approx(math.log(4))  # p = (1/2, 1/2) on 2 of 8 modes


def test_nearest_centre_assignment():
    c = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    # 0.3 from centre 0 and 0.7 from centre 1: with std 0.1 it is outside 3 std of its nearest
    # centre, so it must not count for either mode.
    m = mode_metrics(torch.tensor([[0.3, 0.0], [0.95, 0.0]]), c, 0.1)
    assert m["high_quality_fraction"] == 0.5
    assert m["modes_covered"] == 1.0
    assert m["mode_kl"] == pytest.approx(math.log(2))


@pytest.mark.parametrize(
    "samples, centres, std",
    [
        (torch.zeros(10, 3), torch.zeros(2, 2), 0.1),
        (torch.zeros(10), torch.zeros(2, 2), 0.1),
        (torch.zeros(10, 2), torch.zeros(2, 3), 0.1),
        (torch.zeros(0, 2), torch.zeros(2, 2), 0.1),
        (torch.zeros(10, 2), torch.zeros(0, 2), 0.1),
        (torch.zeros(10, 2), torch.zeros(2, 2), 0.0),
    ],
)
def test_rejects_bad_input(samples, centres, std):
    with pytest.raises(ValueError):
        mode_metrics(samples, centres, std)


def test_scatter_image_basic():
    c = ring_centres()
    real = draw(c, [250] * 8, RING_STD, seed=2)
    fake = draw(c, [250] * 8, RING_STD, seed=3)
    img = scatter_image(fake, real, c, RING_STD)
    assert img.dtype == torch.uint8
    assert img.shape == (3, 384, 384)
    assert img.reshape(3, -1).unique(dim=1).shape[1] > 2  # not one flat colour
    # deterministic: same input, same frame
    assert torch.equal(img, scatter_image(fake, real, c, RING_STD))
    moved = scatter_image(fake * 0.5, real, c, RING_STD)
    assert moved.shape == img.shape and not torch.equal(moved, img)


def test_scatter_image_options():
    c = grid_centres()
    fake = draw(c, [40] * 25, GRID_STD)
    img = scatter_image(fake, None, c, GRID_STD, size_px=200, title="step 100")
    assert img.shape == (3, 200, 200) and img.dtype == torch.uint8
    # no real points, no centres, even no fake points: still a valid frame
    assert scatter_image(fake, None, None, None).shape == (3, 384, 384)
    assert scatter_image(torch.zeros(0, 2), None, c, GRID_STD).shape == (3, 384, 384)
    with pytest.raises(ValueError):
        scatter_image(torch.zeros(5, 3), None, None, None)
