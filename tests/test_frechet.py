"""Tests for ganlab.metrics.frechet: closed forms, a scipy reference, and hand-built histograms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ganlab.metrics.frechet import (
    KL_EPS,
    class_metrics,
    feature_stats,
    frechet_distance,
    kernel_inception_distance,
    label_agreement,
)

pytestmark = pytest.mark.usefixtures("one_thread")




def random_psd(d: int, rng: np.random.Generator, rank: int | None = None) -> np.ndarray:
    a = rng.standard_normal((d, rank or d))
    return a @ a.T / d + (0.0 if rank else 0.1 * np.eye(d))


def correlated_features(n: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g) / math.sqrt(d)
    return torch.randn(n, d, generator=g) @ mix * 3.0 + torch.randn(d, generator=g)


# --- feature_stats -------------------------------------------------------------------------------


def test_feature_stats_matches_numpy():
    x = correlated_features(50, 5) + 1000.0  # large offset: the covariance must be centred first
    mu, sigma = feature_stats(x)
    ref = x.double().numpy()
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    assert mu.shape == (5,) and sigma.shape == (5, 5)
    np.testing.assert_allclose(mu, ref.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(ref, rowvar=False, ddof=1), rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(sigma, sigma.T)


def test_feature_stats_single_column():
    mu, sigma = feature_stats(torch.tensor([[1.0], [3.0]]))
    assert mu.shape == (1,) and sigma.shape == (1, 1)
    assert mu[0] == 2.0 and sigma[0, 0] == 2.0  # unbiased: ((1-2)^2 + (3-2)^2) / (2 - 1)


def test_feature_stats_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        feature_stats(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="shape"):
        feature_stats(torch.zeros(8))
    with pytest.raises(TypeError):
        feature_stats(np.zeros((8, 4)))  # type: ignore[arg-type]


# --- frechet_distance ----------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "d"), [(500, 16), (20, 64)])  # the second is rank-deficient
def test_fd_identical_sets_is_zero(n, d):
    mu, sigma = feature_stats(correlated_features(n, d))
    fd = frechet_distance(mu, sigma, mu, sigma)
    assert isinstance(fd, float)
    assert 0.0 <= fd < 1e-6
    assert np.trace(sigma) > 1.0  # the zero is not from a degenerate covariance


def test_fd_shifted_equal_covariance_is_mean_term():
    rng = np.random.default_rng(0)
    sigma = random_psd(12, rng)
    mu1, mu2 = rng.standard_normal(12), rng.standard_normal(12) + 2.0
    fd = frechet_distance(mu1, sigma, mu2, sigma)
    assert fd == pytest.approx(float(np.sum((mu1 - mu2) ** 2)), rel=1e-10, abs=1e-10)


def test_fd_diagonal_closed_form():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.1, 5.0, 10), rng.uniform(0.1, 5.0, 10)
    a[0] = 0.0  # a singular covariance is still fine
    mu1, mu2 = rng.standard_normal(10), rng.standard_normal(10)
    expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2) + np.sum((mu1 - mu2) ** 2)
    fd = frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert fd == pytest.approx(float(expected), rel=1e-10)


@pytest.mark.parametrize(("d", "seed"), [(3, 0), (8, 1), (32, 2)])
def test_fd_matches_scipy_sqrtm(d, seed):
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(seed)
    s1, s2 = random_psd(d, rng), random_psd(d, rng)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    covmean = linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(float(expected), rel=1e-8)


def test_fd_symmetric():
    rng = np.random.default_rng(3)
    s1, s2 = random_psd(20, rng), random_psd(20, rng, rank=5)
    mu1, mu2 = rng.standard_normal(20), rng.standard_normal(20)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(
        frechet_distance(mu2, s2, mu1, s1), rel=1e-9
    )


def test_fd_large_sample_approaches_mean_term():
    g = torch.Generator().manual_seed(0)
    shift = torch.tensor([1.0, -1.0, 0.5, 1.5])  # ||m||^2 = 4.5
    a = torch.randn(50_000, 4, generator=g, dtype=torch.float64)
    b = torch.randn(50_000, 4, generator=g, dtype=torch.float64) + shift
    fd = frechet_distance(*feature_stats(a), *feature_stats(b))
    assert abs(fd - 4.5) < 0.15  # sampling error is ~0.03 (std)


def test_fd_accepts_tensors_and_checks_shapes():
    rng = np.random.default_rng(4)
    s1, s2 = random_psd(4, rng), random_psd(4, rng)
    mu1, mu2 = rng.standard_normal(4), rng.standard_normal(4)
    as_np = frechet_distance(mu1, s1, mu2, s2)
    as_torch = frechet_distance(*(torch.from_numpy(v) for v in (mu1, s1, mu2, s2)))
    assert as_torch == pytest.approx(as_np, rel=1e-12)
    with pytest.raises(ValueError, match="shapes"):
        frechet_distance(mu1, s1, mu2[:3], s2[:3, :3])
    with pytest.raises(ValueError):
        frechet_distance(mu1[None], s1, mu2, s2)


def test_fd_non_finite_is_nan():
    rng = np.random.default_rng(5)
    s = random_psd(3, rng)
    assert math.isnan(frechet_distance(np.array([np.nan, 0.0, 0.0]), s, np.zeros(3), s))


# --- kernel_inception_distance -------------------------------------------------------------------


def naive_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic kernel, written out term by term."""
    d = x.shape[1]

    def k(a, b):
        return (float(a @ b) / d + 1.0) ** 3

    m = len(x)
    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    cross = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return within / (m * (m - 1)) - 2 * cross / (m * m)


def test_kid_matches_naive_formula():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 3, generator=g), torch.randn(7, 3, generator=g) + 0.5
    # subset_size above N: every subset is the whole set, so every subset gives the same value
    mean, std = kernel_inception_distance(x, y, subsets=3, subset_size=100, generator=g)
    assert isinstance(mean, float) and isinstance(std, float)
    assert mean == pytest.approx(naive_mmd2(x.double().numpy(), y.double().numpy()), rel=1e-12)
    assert std < 1e-12


def test_kid_identical_near_zero_shifted_positive():
    f = torch.randn(3000, 16, generator=torch.Generator().manual_seed(0))
    other = torch.randn(3000, 16, generator=torch.Generator().manual_seed(1))

    def kid(a, b):
        return kernel_inception_distance(
            a, b, subsets=10, subset_size=1000, generator=torch.Generator().manual_seed(2)
        )

    shifted, shifted_std = kid(f, f + 2.0)
    assert shifted > 20 * shifted_std > 0
    assert abs(kid(f, f)[0]) < 1e-3 * shifted
    assert abs(kid(f, other)[0]) < 1e-3 * shifted  # same distribution, different samples
    small, small_std = kid(f, f + 0.5)
    assert 10 * small_std < small < shifted


def test_kid_deterministic_and_leaves_global_rng_alone():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 8, generator=g), torch.randn(300, 8, generator=g) + 0.2
    state = torch.get_rng_state()
    first = kernel_inception_distance(x, y, 5, 100, generator=torch.Generator().manual_seed(7))
    again = kernel_inception_distance(x, y, 5, 100, generator=torch.Generator().manual_seed(7))
    assert torch.equal(state, torch.get_rng_state())
    assert first == again
    other = kernel_inception_distance(x, y, 5, 100, generator=torch.Generator().manual_seed(8))
    assert other != first  # the subsets really are drawn from the generator


def test_kid_subsets_are_consecutive_draws_and_std_is_population_std():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 8, generator=g), torch.randn(200, 8, generator=g) + 0.3
    g = torch.Generator().manual_seed(3)
    a, _ = kernel_inception_distance(x, y, subsets=1, subset_size=50, generator=g)
    b, _ = kernel_inception_distance(x, y, subsets=1, subset_size=50, generator=g)  # g moved on
    assert a != b
    mean, std = kernel_inception_distance(
        x, y, subsets=2, subset_size=50, generator=torch.Generator().manual_seed(3)
    )
    assert mean == pytest.approx((a + b) / 2, rel=1e-12)
    assert std == pytest.approx(abs(a - b) / 2, rel=1e-9)  # ddof=0, as in torch-fidelity


def test_kid_rejects_bad_input():
    x = torch.randn(10, 4)
    with pytest.raises(ValueError, match="dims"):
        kernel_inception_distance(x, torch.randn(10, 5))
    with pytest.raises(ValueError, match="subsets"):
        kernel_inception_distance(x, x, subsets=0)
    with pytest.raises(ValueError, match="at least 2"):
        kernel_inception_distance(x, torch.randn(1, 4))


# --- class_metrics -------------------------------------------------------------------------------


def probs_for(counts: list[int], conf: float = 0.9) -> torch.Tensor:
    """Softmax-like rows whose argmax histogram is ``counts``; every max probability is conf."""
    k = len(counts)
    labels = torch.repeat_interleave(torch.arange(k), torch.tensor(counts))
    probs = torch.full((len(labels), k), (1 - conf) / (k - 1), dtype=torch.float64)
    probs[torch.arange(len(labels)), labels] = conf
    return probs


def test_class_metrics_one_class_dataset():
    hist = torch.zeros(10)
    hist[2] = 500
    counts = [0] * 10
    counts[2] = 64
    m = class_metrics(probs_for(counts), hist, min_share=0.2)
    assert set(m) == {"class_coverage", "class_kl", "mean_confidence"}
    assert all(isinstance(v, float) for v in m.values())
    assert m["class_coverage"] == 1.0
    assert m["class_kl"] == pytest.approx(0.0, abs=1e-9)
    assert m["mean_confidence"] == pytest.approx(0.9, abs=1e-12)


def test_class_metrics_threshold_counts_present_classes_only():
    # one data class out of 10: the threshold is min_share * N / 1, not min_share * N / 10
    hist = torch.zeros(10)
    hist[0] = 1
    thin = class_metrics(probs_for([40] + [10] * 6 + [0] * 3), hist, min_share=0.5)
    assert thin["class_coverage"] == 0.0  # 40 < 0.5 * 100
    enough = class_metrics(probs_for([50] + [10] * 5 + [0] * 4), hist, min_share=0.5)
    assert enough["class_coverage"] == 1.0


def test_class_metrics_collapse_on_uniform_data():
    counts = [0] * 10
    counts[3] = 200
    m = class_metrics(probs_for(counts).float(), torch.full((10,), 6000), min_share=0.2)
    assert m["class_coverage"] == pytest.approx(0.1)
    assert m["class_kl"] == pytest.approx(math.log(10), abs=1e-6)


def test_class_metrics_balanced_on_uniform_data():
    m = class_metrics(probs_for([20] * 10), torch.ones(10), min_share=0.2)
    assert m["class_coverage"] == 1.0
    assert m["class_kl"] == pytest.approx(0.0, abs=1e-12)


def test_class_metrics_min_share_boundary():
    # N=100, K=10: threshold min_share * 10; a class with exactly the threshold counts as covered
    counts = [5, 4, 91, 0, 0, 0, 0, 0, 0, 0]
    assert class_metrics(probs_for(counts), torch.ones(10), 0.5)["class_coverage"] == 0.2
    assert class_metrics(probs_for(counts), torch.ones(10), 0.52)["class_coverage"] == 0.1
    assert class_metrics(probs_for(counts), torch.ones(10), 0.4)["class_coverage"] == 0.3
    # 0.07 * 100 / 7 is 1.0000000000000002 in floats: one prediction must still reach it
    counts7 = [1, 2, 0, 97, 0, 0, 0]
    assert class_metrics(probs_for(counts7), torch.ones(7), 0.07)["class_coverage"] == 3 / 7
    # min_share 0: a class with no predictions is still missing
    assert class_metrics(probs_for(counts7), torch.ones(7), 0.0)["class_coverage"] == 3 / 7


def test_class_metrics_kl_by_hand():
    m = class_metrics(probs_for([4, 3, 2, 1]), torch.tensor([1.0, 2.0, 3.0, 4.0]), 0.2)
    p, q = np.array([0.4, 0.3, 0.2, 0.1]), np.array([0.1, 0.2, 0.3, 0.4])
    assert m["class_kl"] == pytest.approx(float(np.sum(p * np.log(p / q))), rel=1e-12)
    # threshold 0.2 * 10 / 4 = 0.5: every predicted class is covered
    assert m["class_coverage"] == 1.0


def test_class_metrics_class_absent_from_data():
    # class 2 never occurs in the data: it does not count towards coverage, and predicting it
    # costs p * log(p / KL_EPS) instead of an infinite KL
    m = class_metrics(probs_for([5, 0, 5]), torch.tensor([3.0, 1.0, 0.0]), min_share=0.2)
    assert m["class_coverage"] == 0.5
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / KL_EPS)
    assert m["class_kl"] == pytest.approx(expected, rel=1e-12)
    assert math.isfinite(m["class_kl"])


def test_class_metrics_mean_confidence_exact():
    probs = torch.tensor(
        [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3], [0.5, 0.25, 0.25]],
        dtype=torch.float64,
    )
    m = class_metrics(probs, torch.ones(3), min_share=0.5)
    assert m["mean_confidence"] == pytest.approx(0.6, abs=1e-12)  # (0.7 + 0.8 + 0.4 + 0.5) / 4
    # argmax histogram [2, 1, 1] against uniform data; threshold 0.5 * 4 / 3 = 0.67
    assert m["class_coverage"] == 1.0
    p = np.array([0.5, 0.25, 0.25])
    assert m["class_kl"] == pytest.approx(float(np.sum(p * np.log(p * 3))), rel=1e-12)


def test_class_metrics_rejects_bad_input():
    probs = probs_for([2, 2])
    with pytest.raises(ValueError, match="sum to 1"):
        class_metrics(torch.tensor([[0.9, 0.9]]), torch.ones(2), 0.2)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        class_metrics(torch.tensor([[2.0, -1.0]]), torch.ones(2), 0.2)  # logits, not probs
    with pytest.raises(ValueError, match="shape"):
        class_metrics(probs, torch.ones(3), 0.2)
    with pytest.raises(ValueError, match="not all zero"):
        class_metrics(probs, torch.zeros(2), 0.2)
    with pytest.raises(ValueError, match="non-negative"):
        class_metrics(probs, torch.tensor([1.0, -1.0]), 0.2)
    with pytest.raises(ValueError, match="min_share"):
        class_metrics(probs, torch.ones(2), -0.1)


def test_label_agreement_per_requested_class_present_in_the_data():
    # asked for 0, 1, 2, 3 three times each; the classifier says: all 0s right, 1s twice
    # right, 2s never (they look like 0), 3 is absent from the data (not counted)
    labels = torch.tensor([0, 1, 2, 3] * 3)
    predicted = torch.tensor([0, 1, 0, 3, 0, 1, 0, 3, 0, 2, 0, 3])
    probs = torch.nn.functional.one_hot(predicted, 4).double()
    out = label_agreement(probs, labels, torch.tensor([5.0, 5.0, 5.0, 0.0]))
    assert out["label_agreement/0"] == 1.0
    assert out["label_agreement/1"] == pytest.approx(2 / 3)
    assert out["label_agreement/2"] == 0.0
    assert "label_agreement/3" not in out
    assert out["label_agreement"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert out["label_agreement_min"] == 0.0
    with pytest.raises(ValueError):
        label_agreement(probs, labels[:5], torch.ones(4))
