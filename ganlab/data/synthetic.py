"""Random uint8 images of any shape: no files, no network; for tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

import torch

from ganlab.data.base import DATASETS, DataSpec, InMemoryDataset
from ganlab.errors import UserError


@DATASETS.register("synthetic")
def build_synthetic(cfg, data_dir: Path, seed: int) -> InMemoryDataset:
    for key in ("n_samples", "image_size", "channels", "num_classes"):
        if cfg[key] < 1:
            raise UserError(f"dataset.{key} must be at least 1 (got {cfg[key]})")
    generator = torch.Generator().manual_seed(seed)
    shape = (cfg.channels, cfg.image_size, cfg.image_size)
    x = torch.randint(0, 256, (cfg.n_samples, *shape), generator=generator, dtype=torch.uint8)
    y = torch.randint(0, cfg.num_classes, (cfg.n_samples,), generator=generator, dtype=torch.int64)
    spec = DataSpec(cfg.name, kind="image", shape=shape, num_classes=cfg.num_classes)
    source = f"{cfg.name}: {cfg.n_samples:,} random {'x'.join(map(str, shape))} images, seed {seed}"
    return InMemoryDataset(spec, x, y, source=source)
