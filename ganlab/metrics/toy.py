"""Mode-collapse metrics and pictures for the Gaussian-mixture toys: scatter plots of the 2-D
ones (with D's surface under them), the lectures' density picture of the 1-D one.

The metrics follow the usual protocol of the mode-collapse benchmarks (Metz et al., unrolled
GANs; VEEGAN; PacGAN): every sample is assigned to its nearest mode centre and counts as
"high quality" only if it lies within 3 standard deviations of that centre.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from matplotlib.collections import EllipseCollection
from matplotlib.figure import Figure

from ganlab.images import figure_to_uint8

__all__ = ["density_image", "mode_metrics", "scatter_image"]

# A sample this many mixture standard deviations from its centre is still "high quality".
QUALITY_STDS = 3.0
SURFACE_STEPS = 96  # D's surface under a 2-D scatter plot: evaluated on a 96 x 96 grid
LINE_POINTS = 400  # the 1-D picture: densities and D(x) at 400 points of x


def _check_points(name: str, x: torch.Tensor, dims: int | None = 2) -> None:
    """x: (N, dims) points (any width when dims is None)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2 or (dims is not None and x.shape[1] != dims):
        raise ValueError(f"{name} must have shape (N, {dims or 'D'}), got {tuple(x.shape)}")


def mode_metrics(
    samples: torch.Tensor,
    centres: torch.Tensor,
    std: float,
    min_share: float = 0.2,
) -> dict[str, float]:
    """Mode coverage of samples (N, D) against a mixture of K Gaussians (centres (K, D)) with a
    shared std: the 2-D toys, and gauss1d.

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
    _check_points("samples", samples, None)
    _check_points("centres", centres, samples.shape[1])
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
    surface: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Scatter plot of 2-D samples as a uint8 ``(3, size_px, size_px)`` tensor (CHW, RGB).

    ``surface``: D as a function of (M, 2) points, returning (M,) probabilities of "real";
    drawn under the points as a heat map over the plot (red: D says real, blue: fake) with
    D's 0.5 contour.

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

    if surface is not None:
        xs = torch.linspace(x0, x1, SURFACE_STEPS)
        ys = torch.linspace(y0, y1, SURFACE_STEPS)
        gx, gy = torch.meshgrid(xs, ys, indexing="xy")
        values = surface(torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1))
        grid = values.detach().to("cpu", torch.float32).reshape(SURFACE_STEPS, SURFACE_STEPS)
        ax.imshow(grid.numpy(), extent=(x0, x1, y0, y1), origin="lower", cmap="coolwarm",
                  vmin=0.0, vmax=1.0, alpha=0.45, zorder=0, interpolation="bilinear")
        if float(grid.min()) < 0.5 < float(grid.max()):
            ax.contour(xs.numpy(), ys.numpy(), grid.numpy(), levels=[0.5], colors="0.3",
                       linewidths=0.6, zorder=1)
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


def density_image(
    fake: torch.Tensor,
    centres: torch.Tensor | None,
    std: float | None,
    d_of_x: Callable[[torch.Tensor], torch.Tensor] | None = None,
    d_label: str = "D(x)",
    size_px: tuple[int, int] = (512, 320),
    title: str | None = None,
) -> torch.Tensor:
    """The lectures' picture of GAN training on a line (Goodfellow et al. 2014, figure 1) as a
    uint8 (3, H, W) tensor: the data density (black dots: the mixture of Gaussians at
    ``centres`` (K, 1) with ``std``, equal weights), the generator's density (green: a
    histogram of the samples ``fake`` (N, 1), normalised) and D(x) (blue, dashed): ``d_of_x``
    maps (M, 1) points to (M,) probabilities of "real". The x range covers the data (4 std
    around the centres) and the samples' 1st to 99th percentile, so frames share their axes
    while G stays near the data (without centres: no data density)."""
    _check_points("fake", fake, 1)
    samples = fake.detach().to("cpu", torch.float64).flatten()
    if centres is not None:
        _check_points("centres", centres, 1)
        if std is None or not (math.isfinite(std) and std > 0):
            raise ValueError(f"std must be a positive finite number, got {std!r}")
        c = centres.detach().to("cpu", torch.float64).flatten()
        low, high = float(c.min()) - 4 * std, float(c.max()) + 4 * std
    finite = samples[torch.isfinite(samples)]
    if len(finite):  # G's samples stay in the picture wherever they are (1st-99th percentile)
        spread = torch.quantile(finite, torch.tensor([0.01, 0.99], dtype=torch.float64))
        if centres is None:
            low, high = float(spread[0]), float(spread[1])
        low, high = min(low, float(spread[0])), max(high, float(spread[1]))
    elif centres is None:
        low, high = -1.0, 1.0
    high = max(high, low + 1e-3)
    span = high - low
    low, high = low - 0.25 * span, high + 0.25 * span
    xs = torch.linspace(low, high, LINE_POINTS, dtype=torch.float64)
    pdf = None
    if centres is not None:
        pdf = torch.exp(-0.5 * ((xs[:, None] - c[None]) / std) ** 2).mean(dim=1)
        pdf = pdf / (std * math.sqrt(2 * math.pi))

    dpi = 100
    fig = Figure(figsize=(size_px[0] / dpi, size_px[1] / dpi), dpi=dpi)
    ax = fig.add_axes((0.08, 0.1, 0.9, 0.8 if title else 0.86))
    bins = 80
    inside = samples[(samples >= low) & (samples <= high)]
    if len(inside):
        # a density: normalised by all samples, so mass G puts outside the range is missing
        weights = torch.full_like(inside, bins / (len(samples) * (high - low)))
        heights, _, _ = ax.hist(inside.numpy(), bins=bins, range=(low, high),
                                weights=weights.numpy(), color="tab:green", alpha=0.5,
                                label="generator density")
        top = max(1.05, float(heights.max()) * 1.1)
    else:
        top = 1.05
    if pdf is not None:
        ax.plot(xs.numpy(), pdf.numpy(), ":", color="black", linewidth=1.6, label="data density")
        top = max(float(pdf.max()) * 1.3, top)
    if d_of_x is not None:
        d = d_of_x(xs[:, None].float()).detach().to("cpu", torch.float64).flatten()
        ax.plot(xs.numpy(), d.numpy(), "--", color="tab:blue", linewidth=1.4, label=d_label)
    ax.set_xlim(low, high)
    ax.set_ylim(0.0, top)
    ax.set_xlabel("x", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="upper right", frameon=False)
    if title is not None:
        fig.suptitle(title, fontsize=9, y=0.98)
    return figure_to_uint8(fig)
