"""`dataset=gauss1d`: points on a line from a mixture of 1-D Gaussians, for the lectures'
picture of GAN training (Goodfellow et al. 2014, figure 1): the data density, the generator's
density and D(x) over x, drawn at every sample-grid step by the GAN family."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ganlab.config import ranged
from ganlab.data.base import DATASETS, DataSpec, InMemoryDataset
from ganlab.errors import UserError


@dataclass
class Gauss1dConfig:
    name: str = "gauss1d"
    n_samples: int = ranged(10_000, "[1, inf)")
    # centres of the mixture's components (equal weights); one: the lectures' single Gaussian
    means: list[float] = field(default_factory=lambda: [2.0])
    std: float = ranged(0.5, "(0, inf)")  # of every component


@DATASETS.register("gauss1d", Gauss1dConfig)
def build_gauss1d(cfg, data_dir: Path, seed: int) -> InMemoryDataset:
    means = torch.tensor([float(m) for m in cfg.means], dtype=torch.float32)
    if len(means) == 0:
        raise UserError("dataset.means needs at least one centre, e.g. dataset.means=[-2,2]")
    generator = torch.Generator().manual_seed(seed)
    component = torch.randint(len(means), (cfg.n_samples,), generator=generator)
    points = means[component] + cfg.std * torch.randn(cfg.n_samples, generator=generator)
    spec = DataSpec(cfg.name, kind="points", shape=(1,),
                    modes=tuple((m,) for m in means.tolist()), mode_std=float(cfg.std))
    source = (f"gauss1d: {cfg.n_samples:,} points from {len(means)} Gaussian(s) at "
              f"{[round(m, 3) for m in means.tolist()]} (std {cfg.std}), seed {seed}")
    return InMemoryDataset(spec, points[:, None], component.to(torch.int64), source=source)
