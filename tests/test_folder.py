"""`dataset=folder`: any folder of images, flat or nested, with or without class sub-folders,
built from tiny hand-made PNG/JPEG/WebP files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, assert_bad_input, train_in_process, train_refused_in_process
from omegaconf import OmegaConf
from PIL import Image

from ganlab.data import build_dataset
from ganlab.data.folder import FolderConfig
from ganlab.errors import UserError

COLOURS = {"cats": (220, 40, 40), "dogs": (40, 40, 220)}


def write_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 24),
                border: bool = False) -> None:
    """A solid image; with border, its outer columns black, which a centre crop cuts off."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.empty((size[1], size[0], 3), dtype=np.uint8)
    pixels[:] = colour
    if border:
        pixels[:, :8] = 0
        pixels[:, -8:] = 0
    Image.fromarray(pixels).save(path)


def make_classes(root: Path, per_class: int = 3) -> None:
    """root/cats/*.png (one nested deeper, one JPEG) and root/dogs/*.webp."""
    for i in range(per_class):
        write_image(root / "cats" / ("2019" if i == 0 else "") / f"c{i}.png", COLOURS["cats"],
                    border=True)
        write_image(root / "dogs" / f"d{i}.webp", COLOURS["dogs"])
    write_image(root / "cats" / "extra.jpg", COLOURS["cats"])


def folder_cfg(path: Path, **kw):
    return OmegaConf.structured(FolderConfig(path=str(path), **kw))


def test_class_subfolders_become_labels(tmp_path: Path) -> None:
    make_classes(tmp_path / "pets")
    data = build_dataset(folder_cfg(tmp_path / "pets", image_size=16), tmp_path / "data", seed=0)
    assert data.x.shape == (7, 3, 16, 16) and data.spec.num_classes == 2
    assert data.spec.class_names == ("cats", "dogs")
    assert data.y.tolist() == [0, 0, 0, 0, 1, 1, 1]  # sorted paths; cats/2019/c0 nested deeper
    # the centre square of a 40x24 image is its middle 24 columns: the black borders are gone
    for image, label in zip(data.x, data.y.tolist(), strict=True):
        colour = COLOURS[data.spec.class_names[label]]
        mean = image.float().mean((1, 2))
        assert (mean - torch.tensor(colour, dtype=torch.float32)).abs().max() < 3
    assert "2 classes, one per sub-folder" in data.source and "0=cats, 1=dogs" in data.source


def test_flat_folder_is_unlabelled_and_grayscale(tmp_path: Path) -> None:
    for i in range(4):
        write_image(tmp_path / "flat" / f"{i}.png", (100, 100, 100))
    data = build_dataset(folder_cfg(tmp_path / "flat", image_size=8, channels=1),
                         tmp_path / "data", seed=0)
    assert data.x.shape == (4, 1, 8, 8) and data.y is None and data.spec.num_classes == 0
    assert "no labels (images directly in the folder" in data.source


def test_labels_none_and_subfolders(tmp_path: Path) -> None:
    make_classes(tmp_path / "pets")
    data = build_dataset(folder_cfg(tmp_path / "pets", labels="none"), tmp_path / "d", seed=0)
    assert data.y is None and len(data) == 7
    write_image(tmp_path / "pets" / "loose.png", (0, 0, 0))
    with pytest.raises(UserError, match=r"1 sit directly in it \(first: loose\.png\)"):
        build_dataset(folder_cfg(tmp_path / "pets", labels="subfolders"), tmp_path / "d", seed=0)
    # auto: a loose image means no labels, said in the source line
    data = build_dataset(folder_cfg(tmp_path / "pets"), tmp_path / "d", seed=0)
    assert data.y is None and "images directly in the folder" in data.source


def test_split_folders_are_not_read_as_classes(tmp_path: Path) -> None:
    for split in ("train", "test"):
        write_image(tmp_path / "set" / split / "a.png", (1, 2, 3))
    with pytest.raises(UserError, match="look like splits, not classes"):
        build_dataset(folder_cfg(tmp_path / "set"), tmp_path / "d", seed=0)


def test_unreadable_files_are_skipped_and_counted(tmp_path: Path, caplog) -> None:
    make_classes(tmp_path / "pets")
    (tmp_path / "pets" / "dogs" / "broken.png").write_bytes(b"not a png")
    with caplog.at_level(logging.WARNING, logger="ganlab"):
        data = build_dataset(folder_cfg(tmp_path / "pets"), tmp_path / "d", seed=0)
    assert len(data) == 7 and "1 unreadable skipped" in data.source
    assert "skipped 1 of 8 images" in caplog.text and "broken.png" in caplog.text


def test_cache_is_reused_and_rebuilt_when_files_change(tmp_path: Path, caplog) -> None:
    make_classes(tmp_path / "pets")
    cfg = folder_cfg(tmp_path / "pets", image_size=8)
    with caplog.at_level(logging.INFO, logger="ganlab"):
        first = build_dataset(cfg, tmp_path / "d", seed=0)
        caches = list((tmp_path / "d" / "cache" / "folder").glob("pets-*_8px_3ch.pt"))
        assert len(caches) == 1
        caplog.clear()
        again = build_dataset(cfg, tmp_path / "d", seed=0)
        assert "decoding" not in caplog.text  # read from the cache
        assert (again.x == first.x).all()
        write_image(tmp_path / "pets" / "dogs" / "new.png", COLOURS["dogs"])
        caplog.clear()
        grown = build_dataset(cfg, tmp_path / "d", seed=0)
    assert len(grown) == 8 and "decoding 8" in caplog.text
    # the user's folder is never written to
    assert not [p for p in (tmp_path / "pets").rglob("*") if p.suffix in (".pt", ".tmp")]


@pytest.mark.parametrize("setup, message", [
    (lambda root: None, "is not a folder"),
    (lambda root: (root / "notes").mkdir(parents=True), "holds no images"),
    (lambda root: [write_image(root / f"{i}.png", (9, 9, 9)) for i in range(3)],
     "trainer.batch_size=16 is larger than the dataset"),
], ids=["missing", "empty", "fewer-than-a-batch"])
def test_bad_folders_are_one_line_before_training(tmp_path: Path, setup, message,
                                                  capsys) -> None:
    setup(tmp_path / "imgs")
    result = train_refused_in_process(["dataset=folder", f"dataset.path={tmp_path / 'imgs'}",
                                       "trainer.batch_size=16", "device=cpu"], tmp_path, capsys)
    assert_bad_input(result, message)


def test_cgan_trains_on_class_subfolders(tmp_path: Path) -> None:
    make_classes(tmp_path / "pets", per_class=10)
    run = [t for t in TINY if not t.startswith("dataset")]
    train_in_process([*run, "dataset=folder", f"dataset.path={tmp_path / 'pets'}",
                      "dataset.image_size=32", "model=cgan", "model.g_features=8",
                      "model.d_features=8", "eval.every=0", "hydra.run.dir=run"], tmp_path)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["step"] == 4 and "D/wrong_label" in metrics  # trained on the labels
