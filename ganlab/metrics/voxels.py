"""Shape metrics of generated voxel grids against real held-out grids (0/1, (N, 1, S, S, S)).

- occupancy / occupancy_real: the mean share of filled voxels (a generator that fills too
  much or too little shows here first).
- iou_fidelity: for each sample, the IoU with its nearest real shape, averaged: are samples
  close to some real shape? (1: every sample is a real shape.)
- iou_coverage: for each real shape, the IoU with its nearest sample, averaged: is every
  real shape near some sample? Mode collapse lowers it; it rises with the number of
  samples, so compare runs at the same eval.n_samples. The primary metric of voxel runs.
- covered: the share of real shapes whose nearest sample has IoU >= 0.5.
- iou_coverage_<class>: iou_coverage over the real shapes of one class (procedural data and
  folders with class sub-folders): a generator that only makes blobs covers spheres and
  boxes, not tori or chairs (fresh procedural shapes score 0.79 sphere, 0.61 box, 0.60
  cylinder, 0.42 torus, 0.50 chair at 16^3 with 1,000 samples; spheres alone 0.85, 0.59,
  0.58, 0.25, 0.26).
- connected / connected_real: the share of non-empty shapes in one piece (26-connected):
  every procedural shape is; fragments and floating voxels are a generator's failure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch

CHUNK = 512  # samples compared with all reals at once


def nearest_iou(a: torch.Tensor, b: torch.Tensor,
                progress: Callable[[Iterable], Iterable] = iter) -> tuple[torch.Tensor,
                                                                          torch.Tensor]:
    """For 0/1 grids a (n, ...) and b (m, ...): each a's largest IoU with any b (n,), and
    each b's largest IoU with any a (m,). Two empty grids have IoU 1."""
    b_flat = b.flatten(1).float()
    b_count = b_flat.sum(1)
    best_a = torch.empty(len(a))
    best_b = torch.zeros(len(b))
    for i in progress(range(0, len(a), CHUNK)):
        a_flat = a[i : i + CHUNK].flatten(1).float().to(b_flat.device)
        inter = a_flat @ b_flat.T  # (chunk, m)
        union = a_flat.sum(1)[:, None] + b_count[None] - inter
        iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))
        best_a[i : i + CHUNK] = iou.amax(1).cpu()
        best_b = torch.maximum(best_b, iou.amax(0).cpu())
    return best_a, best_b


def connected_share(grids: torch.Tensor) -> float:
    """The share of non-empty grids whose filled voxels form one 26-connected piece."""
    from scipy import ndimage

    structure = np.ones((3, 3, 3), dtype=bool)
    pieces = [ndimage.label(g, structure=structure)[1]
              for g in grids.flatten(0, 1).cpu().numpy().astype(bool) if g.any()]
    return float(np.mean([p == 1 for p in pieces])) if pieces else 0.0


COVERED_IOU = 0.5  # a real shape counts as covered when a sample is at least this close


def shape_metrics(fakes: torch.Tensor, reals: torch.Tensor,
                  progress: Callable[[Iterable], Iterable] = iter,
                  labels: torch.Tensor | None = None,
                  class_names: tuple[str, ...] | None = None) -> dict[str, float]:
    """The metrics above for uint8 0/1 grids, samples `fakes` and held-out `reals` (with
    their class labels and names, per class coverage too)."""
    fidelity, coverage = nearest_iou(fakes, reals, progress)
    per_class = {}
    if labels is not None and class_names:
        labels = labels.cpu()
        per_class = {f"iou_coverage_{name}": float(coverage[labels == k].mean())
                     for k, name in enumerate(class_names) if (labels == k).any()}
    return {
        "iou_fidelity": float(fidelity.mean()),
        "iou_coverage": float(coverage.mean()),
        "covered": float((coverage >= COVERED_IOU).float().mean()),
        **per_class,
        "occupancy": float(fakes.float().mean()),
        "occupancy_real": float(reals.float().mean()),
        "connected": connected_share(fakes),
        "connected_real": connected_share(reals),
    }
