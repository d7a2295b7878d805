"""Tests for ganlab.metrics.prdc and ganlab.metrics.inception_score: limiting cases with known
answers, and brute-force numpy/scipy versions of the reference formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from ganlab.metrics.inception_score import inception_score
from ganlab.metrics.prdc import prdc

pytestmark = pytest.mark.usefixtures("one_thread")

KEYS = {"precision", "recall", "density", "coverage"}


def gaussian(n: int, d: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) * scale + shift


# --- prdc: limiting cases ------------------------------------------------------------------------


def test_identical_sets_are_perfect():
    x = gaussian(500, 16, seed=0)
    out = prdc(x, x, k=5)
    assert set(out) == KEYS
    assert all(isinstance(v, float) for v in out.values())
    assert out["precision"] == 1.0
    assert out["recall"] == 1.0
    assert out["coverage"] == 1.0
    # each point lies in its own ball and in the balls of the points it is one of the k - 1
    # strictly nearer neighbours of: k per point on average, so exactly 1 barring ties
    assert out["density"] == pytest.approx(1.0, abs=0.1)


def test_two_draws_of_one_gaussian_score_near_one():
    real, fake = gaussian(2000, 8, seed=1), gaussian(2000, 8, seed=2)
    out = prdc(real, fake, k=5)
    for key in ("precision", "recall", "coverage"):
        assert out[key] == pytest.approx(1.0, abs=0.1), (key, out)
    assert out["density"] == pytest.approx(1.0, abs=0.2), out


def test_collapsed_fakes_are_precise_but_not_diverse():
    real = gaussian(1000, 16, seed=3)
    g = torch.Generator().manual_seed(4)
    fake = real[:5].repeat(100, 1) + 1e-4 * torch.randn(500, 16, generator=g, dtype=torch.float64)
    out = prdc(real, fake, k=5)
    assert out["precision"] > 0.9, out
    assert out["recall"] < 0.1, out
    assert out["coverage"] < 0.1, out


def test_shifted_fakes_score_zero():
    real = gaussian(1000, 16, seed=5)
    fake = gaussian(1000, 16, seed=6, shift=10.0)  # the mean moved by 10 std in every dim
    out = prdc(real, fake, k=5)
    for key in KEYS:
        assert out[key] < 0.05, (key, out)


def test_density_can_exceed_one():
    # In 64-D the real points lie about 8 from their mean and about 11 from each other, so their
    # k-NN balls all reach the mean: fakes crowded there sit in every one of the 500 real balls.
    real = gaussian(500, 64, seed=7)
    fake = gaussian(100, 64, seed=8, scale=0.1)
    out = prdc(real, fake, k=5)
    assert out["density"] == pytest.approx(500 / 5)
    assert out["precision"] == 1.0
    assert out["recall"] == 0.0


# --- prdc: against a brute-force reference -------------------------------------------------------


def brute_force_prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """The reference formulas on full distance matrices (scipy), radii by np.partition."""
    d_rr, d_ff, d_rf = cdist(real, real), cdist(fake, fake), cdist(real, fake)
    # the (k+1)-th smallest of a row: the point itself (distance 0) comes first
    r_real = np.partition(d_rr, k, axis=1)[:, k]
    r_fake = np.partition(d_ff, k, axis=1)[:, k]
    inside_real_ball = d_rf < r_real[:, None]  # (N, M)
    return {
        "precision": float(inside_real_ball.any(axis=0).mean()),
        "recall": float((d_rf < r_fake[None, :]).any(axis=1).mean()),
        "density": float(inside_real_ball.sum(axis=0).mean() / k),
        "coverage": float((d_rf.min(axis=1) < r_real).mean()),
    }


@pytest.mark.parametrize(("k", "chunk"), [(1, 7), (3, 64), (5, 1000), (4, 299)])
def test_matches_brute_force(k, chunk):
    real = gaussian(300, 6, seed=10)
    fake = gaussian(230, 6, seed=11, shift=0.4, scale=0.8)  # partly overlapping, N != M
    got = prdc(real.float(), fake.float(), k=k, chunk=chunk)
    # the same float32 values, widened, as prdc sees them
    want = brute_force_prdc(real.float().double().numpy(), fake.float().double().numpy(), k)
    for key in KEYS:
        assert got[key] == pytest.approx(want[key], abs=1e-12), (key, got, want)
    # the data are chosen so no metric is trivially 0 or 1
    assert all(0.0 < want[key] < 1.0 for key in ("precision", "recall", "coverage")), want


def test_chunk_size_does_not_matter():
    real, fake = gaussian(120, 5, seed=12), gaussian(90, 5, seed=13, shift=0.5)
    ref = prdc(real, fake, k=3, chunk=1000)
    for chunk in (1, 13, 119, 120):
        assert prdc(real, fake, k=3, chunk=chunk) == ref


# --- prdc: bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("real", "fake", "kwargs", "match"),
    [
        (torch.randn(20), torch.randn(20, 3), {}, "shape"),
        (torch.randn(20, 3), torch.randn(20, 3, 1), {}, "shape"),
        (torch.randn(20, 3), torch.randn(20, 4), {}, "feature dims"),
        (torch.randn(20, 0), torch.randn(20, 0), {}, "feature dims"),
        (torch.randn(20, 3), torch.randn(20, 3), {"k": 0}, "k must be"),
        (torch.randn(20, 3), torch.randn(20, 3), {"chunk": 0}, "chunk must be"),
        (torch.randn(5, 3), torch.randn(20, 3), {"k": 5}, "real has 5 points.*at least 6"),
        (torch.randn(20, 3), torch.randn(3, 3), {"k": 3}, "fake has 3 points.*at least 4"),
        (torch.full((20, 3), float("nan")), torch.randn(20, 3), {}, "finite"),
    ],
)
def test_prdc_rejects_bad_input(real, fake, kwargs, match):
    with pytest.raises(ValueError, match=match):
        prdc(real, fake, **kwargs)


# --- inception score -----------------------------------------------------------------------------


def one_hot(labels: torch.Tensor, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, k).to(torch.float32)


def test_confident_balanced_predictions_score_k():
    k = 10
    probs = one_hot(torch.arange(1000) % k, k)  # every split of 100 holds each class 10 times
    mean, std = inception_score(probs, splits=10)
    assert mean == pytest.approx(k, abs=1e-10)
    assert std == pytest.approx(0.0, abs=1e-10)


def test_confident_random_classes_score_about_k():
    k = 10
    g = torch.Generator().manual_seed(0)
    probs = one_hot(torch.randint(0, k, (5000,), generator=g), k)
    mean, std = inception_score(probs, splits=10)
    assert mean == pytest.approx(k, rel=0.02)
    assert mean <= k
    assert 0.0 < std < 0.1


def test_one_class_for_all_scores_one():
    probs = one_hot(torch.full((200,), 3), 10)
    assert inception_score(probs, splits=4) == pytest.approx((1.0, 0.0), abs=1e-12)


def test_uniform_rows_score_one():
    probs = torch.full((200, 10), 0.1)
    assert inception_score(probs, splits=4) == pytest.approx((1.0, 0.0), abs=1e-12)


def numpy_inception_score(p: np.ndarray, splits: int) -> tuple[float, float]:
    """Salimans et al.'s formula: contiguous splits, per-split marginal, population std."""
    n = p.shape[0]
    scores = []
    for i in range(splits):
        part = p[i * n // splits : (i + 1) * n // splits]
        kl = part * (np.log(part) - np.log(part.mean(axis=0, keepdims=True)))
        scores.append(math.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


@pytest.mark.parametrize(("n", "splits"), [(1000, 10), (1003, 7), (50, 1), (12, 12)])
def test_inception_score_matches_numpy(n, splits):
    g = torch.Generator().manual_seed(n + splits)
    logits = 3.0 * torch.randn(n, 20, generator=g, dtype=torch.float64)
    probs = logits.softmax(dim=1)
    got = inception_score(probs, splits=splits)
    want = numpy_inception_score(probs.numpy(), splits)
    assert got[0] == pytest.approx(want[0], abs=1e-10)
    assert got[1] == pytest.approx(want[1], abs=1e-10)
    if n <= splits:  # one row per split: p(y) is that row, KL 0
        assert got == pytest.approx((1.0, 0.0), abs=1e-12)
    if splits == 1:
        assert got[1] == 0.0


def test_inception_score_std_is_population_std():
    # two splits with scores 1 (one class) and 2 (two classes, confident): population std 0.5
    one_class = one_hot(torch.zeros(4, dtype=torch.long), 2)
    two_classes = one_hot(torch.arange(4) % 2, 2)
    probs = torch.cat([one_class, two_classes])
    mean, std = inception_score(probs, splits=2)
    assert mean == pytest.approx(1.5, abs=1e-12)
    assert std == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize(
    ("probs", "splits", "match"),
    [
        (torch.randn(100, 10), 10, "probabilities"),  # logits: negative entries
        (0.5 * torch.rand(100, 10) + 0.01, 10, "sum to 1"),  # positive, but not normalised
        (torch.full((100, 10), float("nan")), 10, "finite"),
        (torch.full((100,), 0.1), 10, "shape"),
        (torch.full((10, 10, 10), 0.1), 10, "shape"),
        (torch.full((0, 10), 0.1), 1, "empty"),
        (torch.full((5, 10), 0.1), 6, "splits=6 needs at least 6"),
        (torch.full((5, 10), 0.1), 0, "splits must be"),
    ],
)
def test_inception_score_rejects_bad_input(probs, splits, match):
    with pytest.raises(ValueError, match=match):
        inception_score(probs, splits=splits)
