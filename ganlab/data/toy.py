"""2-D Gaussian mixtures (ring, grid): the classic mode-collapse benchmarks, drawn from a seed."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ganlab.data.base import DATASETS, DataSpec, InMemoryDataset
from ganlab.errors import UserError


def mode_centres(cfg) -> torch.Tensor:
    """The (K, 2) float32 mode centres of a toy config: a ring of n_modes, or a centred grid."""
    if cfg.name == "ring":
        if cfg.n_modes < 1:
            raise UserError(f"dataset.n_modes must be at least 1 (got {cfg.n_modes})")
        angles = torch.arange(cfg.n_modes, dtype=torch.float64) * (2 * math.pi / cfg.n_modes)
        centres = cfg.radius * torch.stack([angles.cos(), angles.sin()], dim=1)
    elif cfg.name == "grid":
        if cfg.grid_size < 1:
            raise UserError(f"dataset.grid_size must be at least 1 (got {cfg.grid_size})")
        # centred on 0: grid_size 5, spacing 2 -> -4, -2, 0, 2, 4
        axis = (torch.arange(cfg.grid_size, dtype=torch.float64) - (cfg.grid_size - 1) / 2)
        axis = axis * cfg.spacing
        gx, gy = torch.meshgrid(axis, axis, indexing="ij")
        centres = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    else:
        raise UserError(f"unknown toy dataset {cfg.name!r}; choose ring or grid")
    return centres.to(torch.float32)


def _build(cfg, seed: int) -> InMemoryDataset:
    if cfg.n_samples < 1:
        raise UserError(f"dataset.n_samples must be at least 1 (got {cfg.n_samples})")
    if cfg.std <= 0:
        raise UserError(f"dataset.std must be positive (got {cfg.std})")
    centres = mode_centres(cfg)
    generator = torch.Generator().manual_seed(seed)
    # equal mode weights: each point picks its mode uniformly, then adds isotropic noise
    labels = torch.randint(len(centres), (cfg.n_samples,), generator=generator)
    noise = torch.randn(cfg.n_samples, 2, generator=generator)
    points = centres[labels] + cfg.std * noise
    # num_classes stays 0: the labels name modes for metrics, not classes to condition on
    spec = DataSpec(cfg.name, kind="points", shape=(2,), num_classes=0,
                    modes=tuple(tuple(c) for c in centres.tolist()), mode_std=float(cfg.std))
    source = (f"{cfg.name}: {cfg.n_samples:,} points from {len(centres)} Gaussians "
              f"(std {cfg.std}), seed {seed}")
    return InMemoryDataset(spec, points, labels.to(torch.int64), source=source)


@DATASETS.register("ring")
def build_ring(cfg, data_dir: Path, seed: int) -> InMemoryDataset:
    return _build(cfg, seed)


@DATASETS.register("grid")
def build_grid(cfg, data_dir: Path, seed: int) -> InMemoryDataset:
    return _build(cfg, seed)
