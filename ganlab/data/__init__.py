"""Datasets: each module registers its builders in DATASETS on import."""

from __future__ import annotations

from pathlib import Path

from ganlab.data import mnist, synthetic, toy  # noqa: F401  (imported to register)
from ganlab.data.base import DATASETS, Batches, DataSpec, InMemoryDataset
from ganlab.data.toy import mode_centres

__all__ = ["DATASETS", "Batches", "DataSpec", "InMemoryDataset", "build_dataset", "mode_centres"]


def build_dataset(cfg_dataset, data_dir: str | Path, seed: int) -> InMemoryDataset:
    """Build the dataset named by cfg_dataset.name (an unknown name is a UserError)."""
    return DATASETS.get(cfg_dataset.name)(cfg_dataset, Path(data_dir), seed)
