"""Feature-space sample-quality metrics: Fréchet distance (FID), kernel distance (KID) and
class coverage/balance under a reference classifier.

Pure functions of features or probabilities, so the same code scores Inception features, a digit
classifier's penultimate layer or anything else. Everything numerically delicate runs in float64,
and nothing here needs scipy: the matrix square root comes from symmetric eigendecompositions.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["class_metrics", "feature_stats", "frechet_distance", "kernel_inception_distance",
           "label_agreement"]

# Stands in for a zero data-histogram entry in class_kl, so a predicted class that the data never
# contains costs a large but finite p * log(p / 1e-10) instead of infinity.
KL_EPS = 1e-10

# Relative slack on the coverage threshold: counts are integers, and min_share * N / K can land a
# rounding step above an integer (0.07 * 100 / 7 == 1.0000000000000002).
_THRESHOLD_RTOL = 1e-9


def _check_matrix(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape (N, D), got {tuple(x.shape)}")


def _float64(x: torch.Tensor) -> torch.Tensor:
    """Detached float64 copy on a device that has float64 (MPS has none)."""
    x = x.detach()
    if x.device.type == "mps":
        x = x.cpu()
    return x.to(torch.float64)


def feature_stats(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` of ``(N, D)`` features, as float64 arrays.

    Computed on the features' device in float64 and centred before the product, so large feature
    means do not cancel away the covariance. Needs N >= 2 (``ValueError`` otherwise).
    """
    _check_matrix("features", features)
    n, d = features.shape
    if n < 2:
        raise ValueError(f"features needs at least 2 rows for a covariance, got {n}")
    if d == 0:
        raise ValueError("features has no columns")
    x = _float64(features)
    mu = x.mean(dim=0)
    xc = x - mu
    sigma = xc.T @ xc / (n - 1)
    sigma = (sigma + sigma.T) / 2  # exactly symmetric, as eigh assumes
    return mu.cpu().numpy(), sigma.cpu().numpy()


def _as_array(name: str, x: object, ndim: int) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    return a


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix; eigenvalues a rounding step below 0 become 0."""
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(
    mu1: np.ndarray | torch.Tensor,
    sigma1: np.ndarray | torch.Tensor,
    mu2: np.ndarray | torch.Tensor,
    sigma2: np.ndarray | torch.Tensor,
) -> float:
    """Fréchet distance ``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))`` between two Gaussians.

    ``Tr((S1 S2)^(1/2))`` is the sum of the square roots of the eigenvalues of the symmetric PSD
    matrix ``S1^(1/2) S2 S1^(1/2)``, which has the same spectrum as ``S1 S2`` but, unlike the
    product, can be handed to ``eigh``: no complex parts to discard, no scipy, and singular
    covariances (fewer samples than dimensions) are fine. The result is clipped at 0 (rounding can
    push identical inputs a hair below) and is ``nan`` if any input is not finite.
    Accepts numpy arrays or tensors; ``ValueError`` for mismatched shapes.
    """
    m1, m2 = _as_array("mu1", mu1, 1), _as_array("mu2", mu2, 1)
    s1, s2 = _as_array("sigma1", sigma1, 2), _as_array("sigma2", sigma2, 2)
    d = m1.shape[0]
    if m2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(
            f"shapes do not match: mu1 {m1.shape}, sigma1 {s1.shape}, "
            f"mu2 {m2.shape}, sigma2 {s2.shape}"
        )
    if not all(np.isfinite(a).all() for a in (m1, m2, s1, s2)):
        return float("nan")

    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    root1 = _sqrt_psd(s1)
    inner = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(eig, 0.0, None)).sum())

    diff = m1 - m2
    fd = float(diff @ diff) + float(np.trace(s1)) + float(np.trace(s2)) - 2.0 * tr_covmean
    return max(fd, 0.0)


def _poly_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def kernel_inception_distance(
    f1: torch.Tensor,
    f2: torch.Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al., 2018): ``(mean, std)`` over random subsets of
    the unbiased MMD^2 estimate with the cubic kernel ``k(x, y) = (x.y / d + 1)^3``.

    Unlike FID it is unbiased, so values from different sample sizes compare, and it can come out
    slightly negative when the sets match. Each subset draws ``min(subset_size, N1, N2)`` rows of
    each set without replacement with ``torch.randperm``; with ``generator`` the result is
    reproducible and the global RNG is left alone (without it, the global RNG is used).
    ``std`` is the population std over subsets (0 for one subset), as in torch-fidelity.
    Kernel sums run in float64 on the features' device. ``ValueError`` for bad shapes or sizes.
    """
    _check_matrix("f1", f1)
    _check_matrix("f2", f2)
    if f1.shape[1] != f2.shape[1] or f1.shape[1] == 0:
        raise ValueError(f"feature dims differ or are 0: {tuple(f1.shape)} vs {tuple(f2.shape)}")
    if not (isinstance(subsets, int) and subsets >= 1):
        raise ValueError(f"subsets must be an int >= 1, got {subsets!r}")
    if not (isinstance(subset_size, int) and subset_size >= 2):
        raise ValueError(f"subset_size must be an int >= 2, got {subset_size!r}")
    n1, n2 = f1.shape[0], f2.shape[0]
    m = min(subset_size, n1, n2)
    if m < 2:
        raise ValueError(f"both sets need at least 2 rows, got {n1} and {n2}")

    x_all = _float64(f1)
    y_all = _float64(f2).to(x_all.device)
    rng_device = generator.device if generator is not None else torch.device("cpu")
    values = []
    for _ in range(subsets):
        i1 = torch.randperm(n1, generator=generator, device=rng_device)[:m]
        i2 = torch.randperm(n2, generator=generator, device=rng_device)[:m]
        x, y = x_all[i1.to(x_all.device)], y_all[i2.to(x_all.device)]
        kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
        # Unbiased: the within-set means leave out the diagonal k(x_i, x_i).
        within = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (
            m * (m - 1)
        )
        values.append(float(within - 2.0 * kxy.sum() / (m * m)))
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std())


def class_metrics(
    probs: torch.Tensor, data_histogram: torch.Tensor, min_share: float
) -> dict[str, float]:
    """Class coverage and balance of N generated images under a reference classifier.

    ``probs`` is the classifier's ``(N, K)`` softmax output, ``data_histogram`` the ``(K,)`` class
    counts (or shares) of the training data. Returns a dict of Python floats:

    - ``class_coverage``: share of the K_present data classes (histogram > 0) that receive at
      least ``max(1, min_share * N / K_present)`` argmax predictions; the floor of 1 only matters
      for ``min_share == 0``, where an unpredicted class should still count as missing. Relative
      to the classes present, so a one-class dataset reproduced perfectly scores 1.
    - ``class_kl``: KL(predicted-class histogram || data histogram), in nats; data-absent classes
      get probability ``KL_EPS`` so predictions there cost a lot but stay finite.
    - ``mean_confidence``: mean max probability, a cue for ambiguous (blurry, off-manifold) fakes.

    ``ValueError`` for bad shapes, probabilities that are not a softmax (entries outside [0, 1]
    or rows not summing to 1), an empty or negative histogram, or a negative ``min_share``.
    """
    _check_matrix("probs", probs)
    if not isinstance(data_histogram, torch.Tensor):
        raise TypeError(f"data_histogram must be a torch.Tensor, got {type(data_histogram)}")
    n, k = probs.shape
    if n == 0 or k == 0:
        raise ValueError(f"probs is empty: {tuple(probs.shape)}")
    if data_histogram.shape != (k,):
        raise ValueError(
            f"data_histogram must have shape ({k},), got {tuple(data_histogram.shape)}"
        )
    if not (isinstance(min_share, (int, float)) and math.isfinite(min_share) and min_share >= 0):
        raise ValueError(f"min_share must be a non-negative number, got {min_share!r}")

    p64 = _float64(probs)
    if not torch.isfinite(p64).all() or p64.min() < 0 or p64.max() > 1:
        raise ValueError("probs must be finite probabilities in [0, 1] (softmax outputs)")
    if (p64.sum(dim=1) - 1).abs().max() > 1e-3:
        raise ValueError("probs rows must sum to 1 (softmax outputs, not logits)")
    hist = _float64(data_histogram).cpu()
    if not torch.isfinite(hist).all() or (hist < 0).any() or hist.sum() <= 0:
        raise ValueError("data_histogram must be finite, non-negative and not all zero")

    max_prob, pred = p64.max(dim=1)
    counts = torch.bincount(pred.cpu(), minlength=k).to(torch.float64)  # (K,)

    present = hist > 0
    k_present = int(present.sum().item())
    threshold = max(1.0, min_share * n / k_present) * (1 - _THRESHOLD_RTOL)
    covered = int((present & (counts >= threshold)).sum().item())

    p = counts / n
    q = torch.where(present, hist / hist.sum(), torch.full_like(hist, KL_EPS))
    kl = float(torch.special.xlogy(p, p / q).sum().item())  # 0 log 0 = 0 for unpredicted classes
    kl = max(kl, 0.0)  # rounding (and the eps mass) can land a hair below 0 for a perfect match
    return {
        "class_coverage": covered / k_present,
        "class_kl": kl,
        "mean_confidence": float(max_prob.mean().item()),
    }


def label_agreement(probs: torch.Tensor, labels: torch.Tensor,
                    data_histogram: torch.Tensor) -> dict[str, float]:
    """How often a conditional generator draws the class it was asked for: the share of the
    samples of requested label K that the reference classifier (``probs``, ``(N, K)``)
    assigns to K, for each class present in the data (``data_histogram`` > 0) and requested
    at least once. Returns ``label_agreement/K`` per class, their mean ``label_agreement`` and
    their minimum ``label_agreement_min`` (a label the generator ignores shows there)."""
    _check_matrix("probs", probs)
    if labels.shape != (probs.shape[0],):
        raise ValueError(f"labels must have shape ({probs.shape[0]},), got {tuple(labels.shape)}")
    labels = labels.cpu()
    correct = probs.argmax(dim=1).cpu() == labels
    present = data_histogram.cpu() > 0
    per_class = {f"label_agreement/{k}": float(correct[labels == k].double().mean())
                 for k in torch.unique(labels).tolist() if 0 <= k < len(present) and present[k]}
    if not per_class:
        return {}
    shares = list(per_class.values())
    return {"label_agreement": sum(shares) / len(shares), "label_agreement_min": min(shares),
            **per_class}
