"""`dataset=folder dataset.path=DIR`: any folder of images, flat or nested, as a dataset.

Every PNG/JPEG/WebP/BMP under DIR is decoded once (largest centred square, resized to
dataset.image_size, 1 or 3 channels) into the same uint8 cache file CelebA and the unpaired
folders use (ganlab.data.imagefiles), kept under data_dir/cache/folder so the user's folder is
never written to. With one sub-folder per class (DIR/cat/*.jpg, DIR/dog/*.jpg) the sub-folder
names become class labels in sorted order, for cGANs and classifiers. Unreadable files are
skipped and counted. A fixed 10% is held out for evaluation, as for every dataset without a
test split of its own.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import MISSING

from ganlab.config import one_of, ranged
from ganlab.data.base import DATASETS, DataSpec, InMemoryDataset
from ganlab.data.imagefiles import (
    CENTRE_SQUARE,
    IMAGE_SUFFIXES,
    count_unreadable,
    decode_all,
    list_images_recursive,
    read_cache,
    write_cache,
)
from ganlab.errors import UserError

log = logging.getLogger("ganlab")

# sub-folder names that mark splits, not classes: labels=auto refuses to read them as classes
SPLIT_NAMES = {"train", "test", "val", "valid", "validation"}


@dataclass
class FolderConfig:
    name: str = "folder"
    path: str = MISSING  # the folder of images (searched recursively)
    image_size: int = ranged(64, "[1, inf)")  # the largest centred square, resized to this
    channels: int = 3  # 3: RGB, 1: grayscale
    # auto: one class per sub-folder when every image sits in one and there are two or more;
    # subfolders: insist on that; none: no labels
    labels: str = one_of("auto", "auto", "none", "subfolders")
    max_images: int | None = ranged(None, "[1, inf)")  # the first N files (sorted), for quick runs
    cache: bool = True  # keep the decoded uint8 images in data_dir/cache/folder


def _class_of(name: str) -> str | None:
    """The first-level sub-folder a relative image path sits in (None: directly in DIR)."""
    parts = name.split("/")
    return parts[0] if len(parts) > 1 else None


def _labels(names: list[str], mode: str, root: Path) -> tuple[list[str] | None, str]:
    """The class names (None: unlabelled) and one phrase saying how they were chosen."""
    if mode == "none":
        return None, "no labels (dataset.labels=none)"
    folders = sorted({_class_of(n) for n in names} - {None})
    loose = [n for n in names if _class_of(n) is None]
    if mode == "subfolders":
        if loose:
            raise UserError(f"dataset.labels=subfolders needs every image in a class sub-folder "
                            f"of {root}; {len(loose):,} sit directly in it (first: {loose[0]})")
        if len(folders) < 2:
            raise UserError(f"dataset.labels=subfolders needs two or more class sub-folders in "
                            f"{root}; found {len(folders)}")
        return folders, f"{len(folders)} classes, one per sub-folder"
    if loose or len(folders) < 2:
        why = "images directly in the folder" if loose else "fewer than two sub-folders"
        return None, f"no labels ({why}; dataset.labels=auto)"
    if set(folders) <= SPLIT_NAMES:
        raise UserError(f"the sub-folders of {root} ({', '.join(folders)}) look like splits, "
                        f"not classes; point dataset.path at one of them (e.g. "
                        f"{root / folders[0]}), or set dataset.labels=subfolders to use them "
                        "as classes, or dataset.labels=none")
    return folders, f"{len(folders)} classes, one per sub-folder (dataset.labels=auto)"


def _fingerprint(root: Path, names: list[str]) -> str:
    """Changes when a file is added, removed, replaced or edited: the cache is then rebuilt."""
    digest = hashlib.sha1()
    for name in names:
        stat = os.stat(root / name)
        digest.update(f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _cache_path(cfg, root: Path, data_dir: Path) -> Path:
    where = hashlib.sha1(str(root).encode()).hexdigest()[:12]
    first = f"_first{cfg.max_images}" if cfg.max_images is not None else ""
    return (data_dir / "cache" / "folder"
            / f"{root.name}-{where}_{cfg.image_size}px_{cfg.channels}ch{first}.pt")


def _decode(cfg, root: Path, names: list[str], classes: list[str] | None,
            fingerprint: str) -> dict:
    x, ok = decode_all(root, names, cfg.image_size, crop=CENTRE_SQUARE, channels=cfg.channels,
                       what=f"folder {root.name}")
    skipped = count_unreadable(names, ok, root, f"folder {root.name}",
                               "replace them with readable image files")
    y = None
    if classes is not None:
        index = {c: k for k, c in enumerate(classes)}
        y = torch.tensor([index[_class_of(n)] for n in names], dtype=torch.int64)[ok]
    return {"fingerprint": fingerprint, "x": x[ok].contiguous(), "y": y,
            "classes": classes, "skipped": skipped}


def _check_blob(blob: object, cfg, fingerprint: str, classes: list[str] | None) -> None:
    size = cfg.image_size
    if not (isinstance(blob, dict) and blob.get("fingerprint") == fingerprint
            and blob.get("classes") == classes and isinstance(blob.get("x"), torch.Tensor)
            and blob["x"].dtype == torch.uint8
            and tuple(blob["x"].shape[1:]) == (cfg.channels, size, size)):
        raise ValueError("made from other files, settings or an old format")


@DATASETS.register("folder", FolderConfig)
def build_folder(cfg, data_dir: Path, seed: int) -> InMemoryDataset:
    if cfg.channels not in (1, 3):
        raise UserError(f"dataset.channels must be 1 or 3 (got {cfg.channels})")
    root = Path(cfg.path).expanduser().resolve()
    if not root.is_dir():
        raise UserError(f"dataset.path={cfg.path} is not a folder (it does not exist or is a "
                        "file); give the folder that holds your images")
    names = list_images_recursive(root)[: cfg.max_images]
    if not names:
        raise UserError(f"{root} holds no images ({', '.join(IMAGE_SUFFIXES)}, searched "
                        "recursively)")
    classes, how = _labels(names, cfg.labels, root)
    fingerprint = _fingerprint(root, names)
    cache = _cache_path(cfg, root, Path(data_dir))
    blob = None
    if cfg.cache:
        blob = read_cache(cache, f"folder {root.name}",
                          lambda b: _check_blob(b, cfg, fingerprint, classes))
    if blob is None:
        blob = _decode(cfg, root, names, classes, fingerprint)
        if cfg.cache:
            write_cache(cache, blob, f"folder {root.name}")
            # read back as a memory map: the decoded copy is freed, so a dataset larger than
            # memory can be streamed from its first run on
            blob = read_cache(cache, f"folder {root.name}",
                              lambda b: _check_blob(b, cfg, fingerprint, classes)) or blob
    mapped = cfg.cache and cache.is_file()

    x, y = blob["x"], blob["y"]
    source = (f"folder: {len(x):,} images from {root}, {how}, centre square resized to "
              f"{cfg.image_size} px, {'RGB' if cfg.channels == 3 else 'grayscale'}")
    if classes is not None:
        shown = ", ".join(f"{k}={c}" for k, c in enumerate(classes[:20]))
        source += f" ({shown}{', ...' if len(classes) > 20 else ''})"
    if blob["skipped"]:
        source += f"; {blob['skipped']:,} unreadable skipped"
    source += f"; cache {cache}" if cfg.cache else "; no cache (dataset.cache=false)"
    spec = DataSpec("folder", kind="image", shape=(cfg.channels, cfg.image_size, cfg.image_size),
                    num_classes=len(classes) if classes is not None else 0,
                    class_names=tuple(classes) if classes is not None else None)
    return InMemoryDataset(spec, x, y, source=source, mapped=mapped)
