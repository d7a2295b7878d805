"""Datasets: each module registers its builders in DATASETS on import (ganlab.plugins imports
every module of this package)."""

from __future__ import annotations

from pathlib import Path

from ganlab.data.base import (
    DATASETS,
    TEST_SPLITS,
    Batches,
    DataSpec,
    InMemoryDataset,
    split_off_heldout,
)
from ganlab.data.paired import PAIRED_BUILDERS
from ganlab.data.toy import mode_centres
from ganlab.data.unpaired import UNPAIRED_BUILDERS
from ganlab.data.voxels import VOXEL_BUILDERS

__all__ = ["DATASETS", "Batches", "DataSpec", "InMemoryDataset", "build_dataset", "mode_centres"]


def dataset_builder(cfg_dataset) -> str:
    """The DATASETS entry of a dataset config: its name, or its `loader` when the name is a
    folder (unpaired, paired)."""
    return cfg_dataset.get("loader") or cfg_dataset.name


def is_unpaired(cfg_dataset) -> bool:
    """Whether the dataset holds two unpaired image domains (CycleGAN's data)."""
    return dataset_builder(cfg_dataset) in UNPAIRED_BUILDERS


def is_paired(cfg_dataset) -> bool:
    """Whether the dataset holds (A, B) image pairs (pix2pix's data)."""
    return dataset_builder(cfg_dataset) in PAIRED_BUILDERS


def is_voxels(cfg_dataset) -> bool:
    """Whether the dataset holds 3-D voxel grids (3D-GAN's data)."""
    return dataset_builder(cfg_dataset) in VOXEL_BUILDERS


def build_dataset(cfg_dataset, data_dir: str | Path, seed: int, heldout: bool = False,
                  mapped: bool = False) -> InMemoryDataset:
    """Build the dataset named by cfg_dataset.name (an unknown name is a UserError).

    heldout=True guarantees `.heldout`: the dataset's own test split when it has one (MNIST's
    t10k files), otherwise a fixed slice split off the training data. mapped=True leaves
    training images read from a cache file as a memory map (for the streamed batches); by
    default every example is in memory. The held-out split always is.
    """
    data = DATASETS.get(dataset_builder(cfg_dataset))(cfg_dataset, Path(data_dir), seed)
    if heldout and data.heldout is None and cfg_dataset.name in TEST_SPLITS:
        data.heldout = TEST_SPLITS.get(cfg_dataset.name)(cfg_dataset, Path(data_dir))
    if heldout and data.heldout is None:
        data = split_off_heldout(data)
    if not isinstance(data, InMemoryDataset):  # two-domain and paired data are never mapped
        return data
    if data.heldout is not None:
        data.heldout = data.heldout.materialized()
    return data if mapped else data.materialized()
