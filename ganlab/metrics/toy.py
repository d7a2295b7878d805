"""Mode-collapse metrics and scatter plots for the 2-D Gaussian-mixture toy datasets.

The metrics follow the usual protocol of the mode-collapse benchmarks (Metz et al., unrolled
GANs; VEEGAN; PacGAN): every sample is assigned to its nearest mode centre and counts as
"high quality" only if it lies within 3 standard deviations of that centre.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib.collections import EllipseCollection
from matplotlib.figure import Figure

from ganlab.images import figure_to_uint8

__all__ = ["mode_metrics", "scatter_image"]

# A sample this many mixture standard deviations from its centre is still "high quality".
QUALITY_STDS = 3.0


def _check_points(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2), got {tuple(x.shape)}")


def mode_metrics(
    samples: torch.Tensor,
    centres: torch.Tensor,
    std: float,
    min_share: float = 0.2,
) -> dict[str, float]:
    """Mode coverage of 2-D samples against a mixture of K Gaussians with a shared std.

    Returns a dict of Python floats:

    - ``modes_covered``: modes holding at least ``max(1, min_share * N / K)`` high-quality
      samples (N counts all samples, so a generator that spreads junk everywhere covers less).
    - ``modes_total``: K.
    - ``high_quality_fraction``: share of the N samples within ``3 * std`` of their nearest centre.
    - ``mode_kl``: KL(p || uniform) = sum_k p_k log(p_k K), where p is the histogram of the
      high-quality samples over modes, normalised; 0 for perfect balance, log K when everything
      sits in one mode. It is ``nan`` when there are no high-quality samples, because p is then
      undefined (neither 0 nor log K would be honest).

    Works on CPU or CUDA tensors; ``centres`` is moved to the device of ``samples``.
    Raises ``ValueError`` for wrong shapes, no samples/centres, or a non-positive ``std``
    (``TypeError`` if an argument is not a tensor).
    """
    _check_points("samples", samples)
    _check_points("centres", centres)
    n, k = samples.shape[0], centres.shape[0]
    if n == 0:
        raise ValueError("samples is empty")
    if k == 0:
        raise ValueError("centres is empty")
    if not (isinstance(std, (int, float)) and math.isfinite(std) and std > 0):
        raise ValueError(f"std must be a positive finite number, got {std!r}")
    if not (isinstance(min_share, (int, float)) and min_share >= 0):
        raise ValueError(f"min_share must be a non-negative number, got {min_share!r}")

    # float64 so that points exactly on the 3*std boundary are not decided by float32 rounding.
    x = samples.detach().to(torch.float64)
    c = centres.detach().to(device=x.device, dtype=torch.float64)
    dist, nearest = torch.cdist(x, c).min(dim=1)  # (N,), (N,)
    high = dist <= QUALITY_STDS * std  # NaN samples compare False: never high quality
    counts = torch.bincount(nearest[high], minlength=k).to(torch.float64)  # (K,)

    n_high = float(counts.sum().item())
    threshold = max(1.0, min_share * n / k)
    covered = float((counts >= threshold).sum().item())
    if n_high == 0:
        kl = float("nan")
    else:
        p = counts / n_high
        # 0 log 0 = 0: empty modes contribute nothing (xlogy handles it without NaNs).
        kl = float((torch.special.xlogy(p, p * k)).sum().item())
    return {
        "modes_covered": covered,
        "modes_total": float(k),
        "high_quality_fraction": n_high / n,
        "mode_kl": kl,
    }


def _limits(
    fake: torch.Tensor, real: torch.Tensor | None, centres: torch.Tensor | None, std: float | None
) -> tuple[float, float, float, float]:
    """Square axis limits. With centres they depend only on (centres, std), so frames logged over
    training share the same axes; otherwise they fall back to the real, then the fake points."""
    ref = centres if centres is not None and centres.shape[0] > 0 else real
    if ref is None or ref.shape[0] == 0:
        ref = fake
    pts = ref.detach().to("cpu", torch.float64)
    pts = pts[torch.isfinite(pts).all(dim=1)]
    if pts.shape[0] == 0:
        return -1.0, 1.0, -1.0, 1.0
    lo, hi = pts.min(dim=0).values, pts.max(dim=0).values
    mid = (lo + hi) / 2
    half = float((hi - lo).max()) / 2
    pad = QUALITY_STDS * std if (std is not None and ref is centres) else 0.0
    # 25% margin so a generator drifting slightly off the modes stays visible.
    half = max(half * 1.25 + pad, 1e-3 + pad)
    mx, my = float(mid[0]), float(mid[1])
    return mx - half, mx + half, my - half, my + half


def scatter_image(
    fake: torch.Tensor,
    real: torch.Tensor | None = None,
    centres: torch.Tensor | None = None,
    std: float | None = None,
    size_px: int = 384,
    title: str | None = None,
) -> torch.Tensor:
    """Scatter plot of 2-D samples as a uint8 ``(3, size_px, size_px)`` tensor (CHW, RGB).

    Real samples are small grey dots, fake samples small translucent blue dots, mode centres red
    crosses with a circle of radius ``3 * std`` (the high-quality region) when ``std`` is given.
    Drawn on a private ``Figure`` with the Agg canvas, never through ``pyplot``: no global state,
    no windows, safe from a logging thread. The result suits ``SummaryWriter.add_image`` and PNG.
    """
    _check_points("fake", fake)
    if real is not None:
        _check_points("real", real)
    if centres is not None:
        _check_points("centres", centres)
    if not isinstance(size_px, int) or size_px < 16:
        raise ValueError(f"size_px must be an int >= 16, got {size_px!r}")
    if std is not None and not (math.isfinite(std) and std > 0):
        raise ValueError(f"std must be a positive finite number, got {std!r}")

    dpi = 100
    fig = Figure(figsize=(size_px / dpi, size_px / dpi), dpi=dpi)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0)) if title is None else fig.add_axes((0, 0, 1, 0.92))
    x0, x1, y0, y1 = _limits(fake, real, centres, std)

    def np_points(t: torch.Tensor) -> np.ndarray:
        return t.detach().to("cpu", torch.float32).numpy()

    if real is not None and real.shape[0] > 0:
        r = np_points(real)
        ax.scatter(r[:, 0], r[:, 1], s=2, c="0.6", linewidths=0, zorder=2)
    if fake.shape[0] > 0:
        f = np_points(fake)
        ax.scatter(f[:, 0], f[:, 1], s=3, c="tab:blue", alpha=0.5, linewidths=0, zorder=4)
    if centres is not None and centres.shape[0] > 0:
        c = np_points(centres)
        if std is not None:
            d = 2 * QUALITY_STDS * std  # EllipseCollection takes diameters, in data units
            ax.add_collection(
                EllipseCollection(
                    widths=d,
                    heights=d,
                    angles=0,
                    units="xy",
                    offsets=c,
                    offset_transform=ax.transData,
                    facecolors="none",
                    edgecolors="red",
                    linewidths=0.6,
                    zorder=1,
                )
            )
        # Small and under the samples: the modes are only a few pixels wide at ring/grid scale.
        ax.scatter(c[:, 0], c[:, 1], s=10, c="red", marker="x", linewidths=0.6, zorder=3)

    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        fig.suptitle(title, fontsize=9, y=0.98)

    return figure_to_uint8(fig)
