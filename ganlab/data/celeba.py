"""CelebA aligned faces as uint8 tensors in memory, read from torchvision's folder layout.

torchvision's CelebA checks the MD5 of every text file and wants three lists we never use, so
the two we need (attributes, official partition) are parsed here and the JPEGs decoded with PIL.
torchvision is only asked to download, which needs gdown and Google Drive and usually fails.
Decoding all 202,599 faces takes minutes, so the resized images are cached in one file.
"""

from __future__ import annotations

import io
import logging
import socket
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets

from ganlab.data.base import DATASETS, TEST_SPLITS, DataSpec, InMemoryDataset
from ganlab.data.imagefiles import (
    count_unreadable,
    decode_all,
    list_images,
    read_cache,
    write_cache,
)
from ganlab.errors import UserError

log = logging.getLogger("ganlab")

FOLDER = "celeba"  # torchvision's CelebA.base_folder, under data_dir
IMAGES = "img_align_celeba"
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
SPLITS = {"train": 0, "valid": 1, "test": 2, "all": None}  # the ids in list_eval_partition.txt
DOWNLOAD_TIMEOUT_S = 10.0  # per socket operation: offline, fail fast instead of hanging


def _check_cfg(cfg) -> None:
    if cfg.channels != 3:
        raise UserError(f"CelebA images are 3-channel (RGB); set dataset.channels=3 "
                        f"(got {cfg.channels})")
    for key in ("image_size", "crop"):
        if cfg[key] < 1:
            raise UserError(f"dataset.{key} must be positive (got {cfg[key]})")
    if cfg.max_images is not None and cfg.max_images < 1:
        raise UserError(f"dataset.max_images must be positive or null (got {cfg.max_images})")
    if cfg.split not in SPLITS:
        raise UserError(f"unknown dataset.split {cfg.split!r} for celeba; choose one of: "
                        f"{', '.join(SPLITS)}")


def _missing(root: Path, attributes: bool) -> list[str]:
    missing = [] if list_images(root / IMAGES) else [f"{IMAGES}/"]
    if attributes:
        missing += [name for name in (ATTR_FILE, PARTITION_FILE) if not (root / name).is_file()]
    return missing


def _try_download(data_dir: Path) -> None:
    """torchvision's download into data_dir/celeba; any failure just leaves the files missing."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        datasets.CelebA(root=str(data_dir), split="all", target_type=[], download=True)
    except Exception as e:
        # no gdown, Google Drive quota pages, network errors, MD5 mismatches: none is fatal here
        last_line = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        log.info("downloading CelebA failed: %s", last_line)
    finally:
        socket.setdefaulttimeout(previous)


def _missing_message(root: Path, missing: list[str]) -> str:
    folder = root / IMAGES
    return (
        f"CelebA is incomplete in {root} (missing: {', '.join(missing)}) and could not be "
        f"downloaded (torchvision downloads it from Google Drive with gdown); place the 202,599 "
        f"JPEGs from img_align_celeba.zip in {folder}/, and {root / ATTR_FILE} and "
        f"{root / PARTITION_FILE} beside that folder; or set dataset.attributes=false to train "
        f"on a plain folder of face images (*.jpg, *.jpeg, *.png) in {folder}/ without them"
    )


def _locate(data_dir: Path, attributes: bool) -> list[str]:
    """The image names in the folder, after one download attempt if anything is missing."""
    root = data_dir / FOLDER
    missing = _missing(root, attributes)
    if missing:
        _try_download(data_dir)
        missing = _missing(root, attributes)
    if missing:
        raise UserError(_missing_message(root, missing))
    return list_images(root / IMAGES)


def _read_text(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path} could not be read ({e}); replace it with the original "
                        "file") from e


def _read_partition(path: Path) -> dict[str, int]:
    """list_eval_partition.txt: `<file> 0|1|2` per line, for train, valid and test."""
    partition: dict[str, int] = {}
    for number, line in enumerate(_read_text(path), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise UserError(f"{path} line {number} is not `<file> 0|1|2` "
                            f"({line.strip()[:60]!r}); replace it with the original file")
        partition[parts[0]] = int(parts[1])
    return partition


def _read_attributes(path: Path, names: list[str]) -> tuple[list[str], torch.Tensor]:
    """The attribute names and a 0/1 int64 (len(names), n_attributes) matrix for `names`.

    The file: a count line, a line of names, then `<file> v1 .. vK` with values -1 or 1,
    padded with extra spaces. Only the rows asked for are converted (a few seconds saved).
    """
    lines = _read_text(path)
    attr_names = lines[1].split() if len(lines) > 1 else []
    if not attr_names:
        raise UserError(f"{path} has no attribute names on its second line; replace it with "
                        "the original file")
    rows: dict[str, str] = {}
    for line in lines[2:]:
        parts = line.split(None, 1)
        if parts:
            rows[parts[0]] = parts[1] if len(parts) > 1 else ""
    absent = [name for name in names if name not in rows]
    if absent:
        raise UserError(f"{path} has no row for {len(absent):,} of the selected images "
                        f"(first: {absent[0]}); replace it with the original file")
    bad = f"{path}: each row must be a file name and {len(attr_names)} values of -1 or 1"
    try:
        values = np.loadtxt(io.StringIO("\n".join(rows[name] for name in names)),
                            dtype=np.int64, ndmin=2)
    except ValueError as e:
        raise UserError(f"{bad} ({e})") from e
    if values.shape != (len(names), len(attr_names)) or not np.isin(values, (-1, 1)).all():
        raise UserError(bad)
    return attr_names, torch.from_numpy((values + 1) // 2)  # -1 -> 0, 1 -> 1


def _build_blob(cfg, root: Path, split: str, n_files: int, listing: list[str]) -> dict:
    """Select the split's files, decode them, attach the attributes: what the cache holds."""
    folder = root / IMAGES
    if cfg.attributes:
        partition = _read_partition(root / PARTITION_FILE)
        wanted = SPLITS[split]
        names = sorted(name for name, part in partition.items() if wanted in (None, part))
        where = f"the {split} split of {root / PARTITION_FILE}"
    else:
        names, where = listing, str(folder)
    if cfg.max_images is not None:
        names = names[: cfg.max_images]
    if not names:
        raise UserError(f"{where} lists no images")
    attr_names, y = _read_attributes(root / ATTR_FILE, names) if cfg.attributes else ([], None)

    x, ok = decode_all(folder, names, cfg.image_size, crop=cfg.crop, what="celeba")
    skipped = count_unreadable(names, ok, folder, "celeba",
                               f"replace them with the original files ({where})")
    if skipped:
        x = x[ok]
        y = y[ok] if y is not None else None
    return {"x": x.contiguous(), "y": y, "attributes": attr_names, "files": n_files,
            "skipped": skipped}


def _cache_path(cfg, root: Path, split: str) -> Path:
    name = f"{split}_{cfg.image_size}px_crop{cfg.crop}"
    if cfg.max_images is not None:
        name += f"_first{cfg.max_images}"
    if not cfg.attributes:
        name += "_noattr"
    return root / "cache" / f"{name}.pt"


def _check_blob(blob: object, cfg) -> None:
    """Raise ValueError unless `blob` is what _build_blob returns for this config."""
    size = cfg.image_size
    if not (isinstance(blob, dict) and isinstance(blob.get("x"), torch.Tensor)
            and blob["x"].dtype == torch.uint8 and blob["x"].ndim == 4
            and tuple(blob["x"].shape[1:]) == (3, size, size) and len(blob["x"]) > 0
            and isinstance(blob.get("attributes"), list)
            and isinstance(blob.get("files"), int) and isinstance(blob.get("skipped"), int)):
        raise ValueError("unexpected contents")
    y = blob.get("y")
    if cfg.attributes:
        if not (isinstance(y, torch.Tensor) and y.dtype == torch.int64
                and tuple(y.shape) == (len(blob["x"]), len(blob["attributes"]))):
            raise ValueError("unexpected attribute matrix")
    elif y is not None:
        raise ValueError("unexpected attribute matrix")


def _read_cache(path: Path, cfg, n_files: int) -> dict | None:
    """The cached blob, or None when absent, stale or unreadable (a bad one is deleted)."""
    blob = read_cache(path, "celeba", lambda blob: _check_blob(blob, cfg))
    if blob is None:
        return None
    if blob["files"] != n_files:
        log.info("celeba: %s was made from %s images, the folder now holds %s; rebuilding it",
                 path, f"{blob['files']:,}", f"{n_files:,}")
        return None
    return blob


def _load(cfg, data_dir: Path, split: str) -> InMemoryDataset:
    root = Path(data_dir) / FOLDER
    listing = _locate(Path(data_dir), cfg.attributes)
    split = split if cfg.attributes else "all"  # a plain folder has no partition
    cache = _cache_path(cfg, root, split)
    blob = _read_cache(cache, cfg, len(listing)) if cfg.cache else None
    mapped = blob is not None
    if blob is None:
        blob = _build_blob(cfg, root, split, len(listing), listing)
        if cfg.cache:
            write_cache(cache, blob, "celeba")

    x, size, n = blob["x"], cfg.image_size, len(blob["x"])
    first = f" (first {cfg.max_images:,})" if cfg.max_images is not None else ""
    if cfg.attributes:
        what = f"{n:,} aligned faces, split {split}{first}"
    else:
        what = (f"{n:,} face images{first}, every image in the folder "
                "(dataset.attributes=false: no attributes, split ignored)")
    source = f"celeba: {what}, {size} px (centre crop {cfg.crop}), from {root / IMAGES}"
    if blob["skipped"]:
        source += f"; {blob['skipped']:,} unreadable skipped"
    source += f"; cache {cache}" if cfg.cache else "; no cache (dataset.cache=false)"
    spec = DataSpec("celeba", kind="image", shape=(3, size, size), num_classes=0,
                    attributes=tuple(blob["attributes"]) if cfg.attributes else None)
    return InMemoryDataset(spec, x, blob["y"], source=source, mapped=mapped)


@DATASETS.register("celeba")
def build_celeba(cfg, data_dir: Path, seed: int) -> InMemoryDataset:
    _check_cfg(cfg)
    return _load(cfg, Path(data_dir), cfg.split)


@TEST_SPLITS.register("celeba")
def celeba_test_split(cfg, data_dir: Path) -> InMemoryDataset | None:
    """The official test partition, processed like the training split; None (so a slice of the
    training data is held out instead) for a plain folder, a missing partition file, or when
    the training split already contains the test partition (split test or all)."""
    _check_cfg(cfg)
    if not cfg.attributes or cfg.split in ("test", "all"):
        return None
    if not (Path(data_dir) / FOLDER / PARTITION_FILE).is_file():
        return None
    return _load(cfg, Path(data_dir), "test")
