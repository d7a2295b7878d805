"""CIFAR-10 and CIFAR-100 as uint8 tensors in memory, from torchvision's folder layout.

torchvision downloads the python archive into data_dir and extracts it to
`data_dir/cifar-10-batches-py/` (data_batch_1..5, test_batch, batches.meta) or
`data_dir/cifar-100-python/` (train, test, meta). Loading through torchvision checks the MD5 of
every file, which a hand-made or re-pickled batch file fails; the batches are read here instead
(the same pickles torchvision reads: a dict with `data`, N x 3072 uint8 rows in R, G, B planes,
and `labels` or `fine_labels`), with the layout checked so a wrong file is one clear error.
"""

from __future__ import annotations

import logging
import pickle
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets

from ganlab.config import ranged
from ganlab.data.base import DATASETS, TEST_SPLITS, DataSpec, InMemoryDataset
from ganlab.errors import UserError
from ganlab.images import resize_uint8

log = logging.getLogger("ganlab")

DOWNLOAD_TIMEOUT_S = 10.0  # per socket operation: offline, fail fast instead of hanging
NATIVE_SIZE = 32
# ITU-R BT.601 luma, as PIL's convert("L"): dataset.channels=1 gives grayscale CIFAR
LUMA = (0.299, 0.587, 0.114)


@dataclass
class CifarConfig:
    name: str = "cifar10"
    image_size: int = ranged(32, "[1, inf)")  # resized once at load time from 32
    channels: int = 3  # 1: grayscale (BT.601 luma)
    classes: list[int] | None = None  # keep only these labels, e.g. [3] for cats
    download: bool = True  # torchvision's download when the files are missing


@dataclass(frozen=True)
class Layout:
    """Where one CIFAR variant's files live under data_dir and what their pickles hold."""

    cls: type[datasets.CIFAR10]
    label_key: str  # "labels" (CIFAR-10) or "fine_labels" (CIFAR-100's 100 classes)
    num_classes: int

    @property
    def folder(self) -> str:
        return self.cls.base_folder

    def files(self, split: str) -> list[str]:
        listed = self.cls.train_list if split == "train" else self.cls.test_list
        return [name for name, _md5 in listed]


LAYOUTS = {
    "cifar10": Layout(datasets.CIFAR10, "labels", 10),
    "cifar100": Layout(datasets.CIFAR100, "fine_labels", 100),
}


def _missing(root: Path, layout: Layout) -> list[str]:
    return [name for split in ("train", "test") for name in layout.files(split)
            if not (root / name).is_file()]


def _try_download(layout: Layout, data_dir: Path) -> None:
    """torchvision's download (MD5-checked) and extraction into data_dir; any failure just
    leaves the files missing."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        layout.cls(root=str(data_dir), train=True, download=True)
    except Exception as e:
        # network errors arrive as RuntimeError, URLError, OSError or timeouts: none is fatal here
        last_line = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        log.info("downloading %s failed: %s", layout.cls.__name__, last_line)
    finally:
        socket.setdefaulttimeout(previous)


def _locate(name: str, layout: Layout, data_dir: Path, download: bool) -> Path:
    root = data_dir / layout.folder
    if _missing(root, layout) and download:
        _try_download(layout, data_dir)
    missing = _missing(root, layout)
    if missing:
        cls, expected = layout.cls, ", ".join(layout.files("train") + layout.files("test"))
        why = "could not be downloaded" if download else "dataset.download=false"
        raise UserError(
            f"{name} is not complete in {root} (missing: {', '.join(missing)}) and {why}; "
            f"download {cls.filename} (md5 {cls.tgz_md5}) from {cls.url} and extract it in "
            f"{data_dir} so that {root}/ holds {expected}")
    return root


def _read_batch(path: Path, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch file as uint8 (N, 3, 32, 32) images and int64 (N,) labels."""
    bad = f"{path} is not a CIFAR batch file"
    try:
        with open(path, "rb") as f:
            # the files were pickled by Python 2: latin1 turns their byte strings into str keys
            entry = pickle.load(f, encoding="latin1")
    except Exception as e:  # truncated, not a pickle, a class that is not there
        raise UserError(f"{bad} ({type(e).__name__}: {e}); replace it with the original "
                        "file") from e
    if not isinstance(entry, dict) or "data" not in entry or layout.label_key not in entry:
        raise UserError(f"{bad} (no 'data' and '{layout.label_key}' entries); replace it with "
                        "the original file")
    data = np.asarray(entry["data"])
    labels = np.asarray(entry[layout.label_key], dtype=np.int64)
    pixels = 3 * NATIVE_SIZE * NATIVE_SIZE
    if (data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != pixels
            or labels.shape != (len(data),)
            or (len(labels) and not 0 <= labels.min() <= labels.max() < layout.num_classes)):
        raise UserError(f"{bad} (data {data.shape} {data.dtype}, {len(labels)} labels; expected "
                        f"N x {pixels} uint8 and N labels in 0..{layout.num_classes - 1}); "
                        "replace it with the original file")
    return data.reshape(-1, 3, NATIVE_SIZE, NATIVE_SIZE), labels


def _class_names(root: Path, layout: Layout) -> tuple[str, ...] | None:
    """The label names from the meta file (batches.meta / meta), when it is there and sane:
    they only label pictures, so a missing or odd file is no reason to stop."""
    try:
        with open(root / layout.cls.meta["filename"], "rb") as f:
            names = pickle.load(f, encoding="latin1")[layout.cls.meta["key"]]
    except Exception:
        return None
    names = tuple(str(n) for n in names)
    return names if len(names) == layout.num_classes else None


def _load(cfg, data_dir: Path, split: str) -> InMemoryDataset:
    name = cfg.name
    layout = LAYOUTS[name]
    if cfg.channels not in (1, 3):
        raise UserError(f"dataset.channels must be 3 (RGB) or 1 (grayscale) for {name} "
                        f"(got {cfg.channels})")
    root = _locate(name, layout, Path(data_dir), cfg.download)
    parts = [_read_batch(root / file, layout) for file in layout.files(split)]
    x = torch.from_numpy(np.concatenate([images for images, _ in parts]))
    y = torch.from_numpy(np.concatenate([labels for _, labels in parts]))
    what = "train split" if split == "train" else "official test split"
    origin = f"{name}: the {what}, {len(x):,} images from {root}"
    if cfg.classes is not None:
        wanted = [int(c) for c in cfg.classes]
        bad = [c for c in wanted if not 0 <= c < layout.num_classes]
        if bad:
            raise UserError(f"dataset.classes for {name} must be labels in "
                            f"0..{layout.num_classes - 1}; got {bad}")
        keep = torch.isin(y, torch.tensor(wanted))
        if not keep.any():
            raise UserError(f"dataset.classes={wanted} keeps no {name} images")
        x, y = x[keep], y[keep]
        origin += f"; classes {wanted}: {len(x):,} images"
    if cfg.channels == 1:
        luma = torch.tensor(LUMA).view(1, 3, 1, 1)
        x = (x.float() * luma).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
        origin += "; grayscale"
    x = resize_uint8(x, cfg.image_size)
    spec = DataSpec(name, kind="image", shape=(cfg.channels, cfg.image_size, cfg.image_size),
                    num_classes=layout.num_classes, class_names=_class_names(root, layout))
    return InMemoryDataset(spec, x.contiguous(), y.contiguous(), source=origin)


def build_cifar(cfg, data_dir: Path, seed: int) -> InMemoryDataset:
    return _load(cfg, Path(data_dir), "train")


def cifar_test_split(cfg, data_dir: Path) -> InMemoryDataset:
    return _load(cfg, Path(data_dir), "test")


for _name in LAYOUTS:  # one reader for both: the layout is chosen by dataset.name
    DATASETS.register(_name, CifarConfig)(build_cifar)
    TEST_SPLITS.register(_name)(cifar_test_split)
