"""Precision, recall, density and coverage of generated features against real ones (PRDC).

Fidelity and diversity as separate numbers, where FID folds both into one: each point gets a
k-nearest-neighbour ball, the union of a set's balls stands in for its manifold, and the four
numbers count who lands in whose balls. The definitions follow the reference implementation of
Naeem et al. (clovaai/generative-evaluation-prdc) exactly: the radius of a point is its
distance to its k-th nearest neighbour in its own set (the point itself not counted, duplicates
are), and "inside a ball" is strictly closer than the radius.

Distances are Euclidean, in float64 on the features' device, in row chunks with
``torch.cdist``: only per-row counts and minima are kept, never a whole N x M matrix, so 10,000
x 10,000 Inception features (2048-D) fit in a few hundred MB.
"""

from __future__ import annotations

import torch

from ganlab.metrics.frechet import _check_matrix, _float64

__all__ = ["prdc"]


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _kth_neighbour_radii(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """``(N,)`` distance from each row of x to its k-th nearest other row (float64).

    The self-distance is set to exactly 0 (cdist's matrix-product form can leave it a rounding
    step above), so the (k+1)-th smallest entry of a row is the k-th neighbour; an exact
    duplicate of a point counts as a neighbour at distance 0, as in the reference.
    """
    n = x.shape[0]
    radii = torch.empty(n, dtype=x.dtype, device=x.device)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        d = torch.cdist(x[start:stop], x)  # (c, N)
        rows = torch.arange(stop - start, device=x.device)
        d[rows, rows + start] = 0.0
        radii[start:stop] = d.kthvalue(k + 1, dim=1).values
    return radii


@torch.no_grad()
def prdc(
    real: torch.Tensor, fake: torch.Tensor, k: int = 5, chunk: int = 1000
) -> dict[str, float]:
    """Precision, recall, density and coverage of ``fake`` ``(M, D)`` against ``real`` ``(N, D)``.

    With ``r_i`` the distance from real point i to its k-th nearest other real point and ``s_j``
    the same for fake point j among the fakes ("inside a ball" means strictly closer than its
    radius):

    - ``precision`` (Kynkäänniemi et al. 2019, improved precision): share of fakes inside at
      least one real ball, i.e. on the estimated real manifold (fidelity).
    - ``recall`` (Kynkäänniemi et al. 2019, improved recall): share of reals inside at least one
      fake ball (diversity). Both are sensitive to outliers, whose balls are large.
    - ``density`` (Naeem et al. 2020): ``(1/k) *`` the mean over fakes of the number of real balls
      that contain the fake. A fidelity measure that, unlike precision, counts how many real
      neighbourhoods vouch for a fake; its expectation is 1 when both sets come from the same
      distribution, but it is not capped at 1 (it can reach N/k): fakes where many real balls
      overlap score above 1, e.g. fakes at the centre of a high-dimensional Gaussian, which
      lies inside nearly every real ball.
    - ``coverage`` (Naeem et al. 2020): share of reals whose nearest fake lies inside that real's
      own ball (diversity, robust to fake outliers). For identical distributions and N = M its
      expectation is about ``1 - 2^-k`` (0.97 for k = 5), not 1.

    Values are Python floats, as the reference computes them (its numpy code, one full distance
    matrix at a time). ``chunk`` rows are handled at a time: peak extra memory is about
    ``chunk * max(N, M)`` float64s; the result does not depend on it beyond rounding. ``fake``
    is moved to ``real``'s device (MPS, which has no float64, computes on the CPU).

    ``ValueError`` for inputs that are not 2-D, differing or zero feature dims, non-finite
    features, ``k < 1``, ``chunk < 1``, or a set with fewer than ``k + 1`` points (a point needs
    k neighbours besides itself).
    """
    _check_matrix("real", real)
    _check_matrix("fake", fake)
    if real.shape[1] != fake.shape[1] or real.shape[1] == 0:
        raise ValueError(
            f"feature dims differ or are 0: real {tuple(real.shape)} vs fake {tuple(fake.shape)}"
        )
    _check_int("k", k, 1)
    _check_int("chunk", chunk, 1)
    for name, x in (("real", real), ("fake", fake)):
        if x.shape[0] < k + 1:
            raise ValueError(
                f"{name} has {x.shape[0]} points; k={k} needs at least {k + 1} "
                "(each point's k nearest neighbours besides itself)"
            )

    x = _float64(real)
    y = _float64(fake).to(x.device)
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ValueError("real and fake features must be finite")

    real_radii = _kth_neighbour_radii(x, k, chunk)  # (N,)
    fake_radii = _kth_neighbour_radii(y, k, chunk)  # (M,)

    n, m = x.shape[0], y.shape[0]
    balls_per_fake = torch.zeros(m, dtype=torch.int64, device=x.device)  # real balls holding it
    real_in_fake_ball = torch.zeros(n, dtype=torch.bool, device=x.device)
    real_covered = torch.zeros(n, dtype=torch.bool, device=x.device)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        d = torch.cdist(x[start:stop], y)  # (c, M): real rows, fake columns
        r = real_radii[start:stop]
        balls_per_fake += (d < r[:, None]).sum(dim=0)
        real_in_fake_ball[start:stop] = (d < fake_radii[None, :]).any(dim=1)
        real_covered[start:stop] = d.min(dim=1).values < r

    return {
        "precision": float((balls_per_fake > 0).double().mean().item()),
        "recall": float(real_in_fake_ball.double().mean().item()),
        "density": float(balls_per_fake.double().mean().item() / k),
        "coverage": float(real_covered.double().mean().item()),
    }
