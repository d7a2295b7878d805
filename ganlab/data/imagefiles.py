"""Folders of image files decoded once into uint8 tensors, and the cache file that keeps them.

Used by the datasets that read JPEG/PNG folders (CelebA, unpaired two-domain folders). A
corrupt or unreadable file is skipped and counted, never a crash mid-epoch.
"""

from __future__ import annotations

import contextlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

log = logging.getLogger("ganlab")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
PROGRESS_EVERY = 10_000
DECODE_THREADS = min(8, os.cpu_count() or 1)  # PIL releases the GIL while decoding and resizing


def list_images(folder: Path) -> list[str]:
    """The image file names in `folder`, sorted; [] when it is not there."""
    try:
        with os.scandir(folder) as entries:
            return sorted(e.name for e in entries
                          if e.name.lower().endswith(IMAGE_SUFFIXES) and e.is_file())
    except OSError:
        return []


def list_images_recursive(folder: Path) -> list[str]:
    """The image files under `folder` and its sub-folders, as sorted POSIX paths relative to
    it; hidden files and folders (".git", ".cache") are left out."""
    found = []
    for parent, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        base = Path(parent).relative_to(folder)
        found += [(base / f).as_posix() for f in files
                  if f.lower().endswith(IMAGE_SUFFIXES) and not f.startswith(".")]
    return sorted(found)


# a `crop` for decode(): the largest centred square (torchvision's Resize(size) followed by
# CenterCrop(size), with the crop taken first so the resize never sees the cut-off sides)
CENTRE_SQUARE = 1 << 30


def decode(path: Path, size: int, crop: int | None = None, channels: int = 3,
           resample: int = Image.BILINEAR) -> np.ndarray | None:
    """One image as uint8 (size, size, channels), or None if it cannot be read.

    crop: centre-crop a square of this side first (the whole image when None, which is then
    resized to a square whatever its aspect, as the CycleGAN reference does)."""
    try:
        with Image.open(path) as image:
            picture = image.convert("RGB" if channels == 3 else "L")
        if crop is not None:
            width, height = picture.size
            side = min(crop, width, height)  # a crop larger than the image takes its smaller side
            left, top = round((width - side) / 2), round((height - side) / 2)  # as CenterCrop
            # crop first: resize(box=...) would let the filter reach pixels outside the box
            picture = picture.crop((left, top, left + side, top + side))
        # PIL's filters widen their kernel when shrinking, so this is antialiased
        out = np.array(picture.resize((size, size), resample), dtype=np.uint8)
        return out if out.ndim == 3 else out[:, :, None]
    except Exception:  # corrupt, truncated, missing or a decompression bomb: skipped and counted
        return None


def decode_all(folder: Path, names: list[str], size: int, crop: int | None = None,
               channels: int = 3, resample: int = Image.BILINEAR,
               what: str = "images") -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (n, channels, size, size) images and a bool mask of those that could be read."""
    n = len(names)
    x = torch.zeros((n, channels, size, size), dtype=torch.uint8)
    ok = torch.zeros(n, dtype=torch.bool)

    def work(i: int) -> None:
        array = decode(folder / names[i], size, crop, channels, resample)
        if array is not None and array.shape == (size, size, channels):
            x[i] = torch.from_numpy(array).permute(2, 0, 1)  # disjoint rows: thread-safe
            ok[i] = True

    log.info("%s: decoding %s images from %s (%d threads)", what, f"{n:,}", folder,
             DECODE_THREADS)
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        for start in range(0, n, PROGRESS_EVERY):  # chunks: bounded queue, regular progress
            stop = min(n, start + PROGRESS_EVERY)
            list(pool.map(work, range(start, stop)))
            if n > PROGRESS_EVERY:
                log.info("%s: decoded %s / %s images", what, f"{stop:,}", f"{n:,}")
    return x, ok


def count_unreadable(names: list[str], ok: torch.Tensor, folder: Path, what: str,
                     remedy: str) -> int:
    """How many of `names` could not be decoded (logged with the first one); none readable
    at all is a UserError ending in `remedy`."""
    from ganlab.errors import UserError

    skipped = len(names) - int(ok.sum())
    if skipped == len(names):
        raise UserError(f"none of the {len(names):,} images in {folder} could be read "
                        f"(first: {names[0]}); {remedy}")
    if skipped:
        first = names[int((~ok).nonzero()[0, 0])]
        log.warning("%s: skipped %s of %s images in %s that are missing or unreadable "
                    "(first: %s)", what, f"{skipped:,}", f"{len(names):,}", folder, first)
    return skipped


def write_cache(path: Path, blob: dict[str, Any], what: str) -> None:
    """Atomic: a crash mid-write leaves no truncated cache; a failure only costs time later."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(blob, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # read-only data folder, full disk
        with contextlib.suppress(OSError):
            tmp.unlink()
        log.warning("%s: could not write the cache %s (%s); it is built again next time",
                    what, path, e)


def read_cache(path: Path, what: str, check) -> dict[str, Any] | None:
    """The cached blob, or None when absent or unreadable (a bad one is deleted). Its tensors
    are memory maps of the file: rows are read from disk as they are indexed, so opening a
    cache larger than memory is instant and costs no memory (the caller copies what it keeps).

    check(blob) raises ValueError unless the blob has the expected contents."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        check(blob)
    except Exception as e:  # truncated, garbage, an old format: rebuild rather than crash
        reason = (str(e).strip().splitlines() or [""])[0][:200]
        log.warning("%s: the cache %s could not be read (%s: %s); deleting it and decoding "
                    "the images again", what, path, type(e).__name__, reason)
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    return blob
