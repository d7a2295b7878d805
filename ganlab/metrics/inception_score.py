"""Inception Score (Salimans et al., 2016) from a classifier's softmax outputs.

A pure function of the ``(N, K)`` class probabilities, so it scores Inception's 1008-way (or
1000-way) softmax as well as a digit classifier's 10 classes. Conventions follow the OpenAI
reference code and torch-fidelity: contiguous splits, each with its own marginal, and the
population std over splits.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ganlab.metrics.frechet import _check_matrix, _float64

__all__ = ["inception_score"]


def inception_score(probs: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """``(mean, std)`` over ``splits`` of ``exp(E_x KL(p(y|x) || p(y)))``.

    ``probs`` holds one softmax row ``p(y|x)`` per sample. The N rows are cut, in the order given,
    into ``splits`` contiguous parts ``[i*N//splits, (i+1)*N//splits)`` (sizes differ by at most
    one, every row used), and ``p(y)`` is each part's own mean row, as in Salimans et al.'s
    reference code and torch-fidelity's ``isc``. It is high (at most K, reached by confident
    predictions spread evenly over the K classes within every part) when each sample is
    classified confidently and the classes are varied, and 1 when every sample gets the same
    distribution (one class for all, or uniform rows).

    ``std`` is the population std over the splits (``np.std``, ddof=0; 0 for one split), as both
    references report it. torch-fidelity shuffles the samples first (a fixed permutation, seed
    2020) and takes logits; this function keeps the caller's order, so permute rows beforehand to
    reproduce its per-split numbers (the score of a part does not depend on the order within
    it). Zero probabilities are fine: ``0 * log 0`` counts as 0. Computed in float64 on the
    input's device; Python floats come back.

    ``ValueError`` for a non-2-D or empty ``probs``, entries that are not finite or outside
    [0, 1], rows that do not sum to 1 (logits, say), or ``splits`` not an int in ``[1, N]``.
    """
    _check_matrix("probs", probs)
    n, k = probs.shape
    if n == 0 or k == 0:
        raise ValueError(f"probs is empty: {tuple(probs.shape)}")
    if isinstance(splits, bool) or not isinstance(splits, int) or splits < 1:
        raise ValueError(f"splits must be an int >= 1, got {splits!r}")
    if splits > n:
        raise ValueError(f"splits={splits} needs at least {splits} samples, got {n}")

    p = _float64(probs)
    if not torch.isfinite(p).all() or p.min() < 0 or p.max() > 1:
        raise ValueError("probs must be finite probabilities in [0, 1] (softmax outputs)")
    if (p.sum(dim=1) - 1).abs().max() > 1e-3:
        raise ValueError("probs rows must sum to 1 (softmax outputs, not logits)")

    scores = []
    for i in range(splits):
        part = p[i * n // splits : (i + 1) * n // splits]
        marginal = part.mean(dim=0, keepdim=True)
        # KL(p(y|x) || p(y)) per row; xlogy makes 0 log 0 = 0, and p(y) > 0 wherever p(y|x) > 0.
        kl = (torch.special.xlogy(part, part) - torch.special.xlogy(part, marginal)).sum(dim=1)
        scores.append(math.exp(float(kl.mean().item())))
    arr = np.asarray(scores, dtype=np.float64)
    return float(arr.mean()), float(arr.std())
