"""Unpaired two-domain image datasets (horse2zebra and any trainA/ trainB/ folder), for CycleGAN.

The layout is Zhu et al.'s: `data_dir/<name>/trainA`, `trainB` and optionally `testA`, `testB`.
Both domains are decoded once into uint8 tensors at the load size (1.12x the training size, 286
for 256 as in the reference) and live on the training device; each batch is a random crop and
a horizontal flip drawn on the device, so no per-item PIL work runs in the training loop. The
test split is resized straight to the training size (no augmentation). A folder without
testA/testB gets a fixed random 10% of each domain held out instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from ganlab.data.base import DATASETS, HELDOUT_FRACTION, HELDOUT_SEED, DataSpec
from ganlab.data.download import Archive, DownloadError, extract_zip, fetch
from ganlab.data.imagefiles import (
    count_unreadable,
    decode_all,
    list_images,
    read_cache,
    write_cache,
)
from ganlab.errors import UserError
from ganlab.images import resize_uint8

log = logging.getLogger("ganlab")

DOMAINS = ("A", "B")
UNPAIRED_BUILDERS = ("unpaired", "red2blue", "horse2zebra_mini")  # the two-domain DATASETS
LOAD_SCALE = 1.12  # the reference's load size over crop size: 286 / 256
# archives ganlab knows how to fetch; any other folder in the same layout works when placed
ARCHIVES = {
    "horse2zebra": Archive(
        name="horse2zebra.zip",
        mirrors=(
            "https://efrosgans.eecs.berkeley.edu/cyclegan/datasets/horse2zebra.zip",
            "http://efrosgans.eecs.berkeley.edu/cyclegan/datasets/horse2zebra.zip",
            # the address most scripts still use; dead since 2023, kept in case it returns
            "https://people.eecs.berkeley.edu/~taesung_park/CycleGAN/datasets/horse2zebra.zip",
        ),
        sha256="a74d9d392eecca9966b51287a76ca126af473d9de4f3e8fc0e9cda08fa1730a1",
        size=116_867_962,
    ),
}


def load_size(image_size: int, configured: int | None) -> int:
    size = configured if configured is not None else round(LOAD_SCALE * image_size)
    if size < image_size:
        raise UserError(f"dataset.load_size={size} is smaller than dataset.image_size="
                        f"{image_size}: the random crop is taken from the loaded image")
    return size


@dataclass
class UnpairedDataset:
    """Two unpaired image domains as uint8 (N, C, L, L) tensors; batches are random
    `spec.shape[-1]`-pixel crops (and flips) of them."""

    spec: DataSpec  # kind "unpaired", shape (C, S, S): what the networks see
    a: torch.Tensor
    b: torch.Tensor
    flip: bool = True
    source: str = ""
    notes: list[str] = field(default_factory=list)
    heldout: UnpairedDataset | None = None

    def __len__(self) -> int:
        return max(len(self.a), len(self.b))  # an epoch, as in the reference: the larger domain

    def to(self, device: torch.device) -> UnpairedDataset:
        heldout = self.heldout.to(device) if self.heldout is not None else None
        return UnpairedDataset(self.spec, self.a.to(device), self.b.to(device), self.flip,
                               self.source, self.notes, heldout)

    def batches(self, batch_size: int, seed: int) -> UnpairedBatches:
        return UnpairedBatches(self, batch_size, seed)


class UnpairedBatches:
    """(a, b) uint8 batches: each domain shuffled on its own (so pairs are never fixed), each
    image randomly cropped to the training size and flipped with probability 1/2.

    All randomness comes from one generator of its own: the batches depend only on the seed,
    and state_dict() lets a resumed run see the same ones."""

    def __init__(self, data: UnpairedDataset, batch_size: int, seed: int) -> None:
        smallest = min(len(data.a), len(data.b))
        if batch_size > smallest:
            raise UserError(f"trainer.batch_size={batch_size} is larger than the smaller domain "
                            f"({smallest:,} images)")
        self.data = data
        self.batch_size = batch_size
        self.size = data.spec.shape[-1]
        self.batches_per_epoch = len(data) // batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.orders = [self._permutation(len(data.a)), self._permutation(len(data.b))]
        self.positions = [0, 0]

    def _permutation(self, n: int) -> torch.Tensor:
        return torch.randperm(n, generator=self.generator)

    def _indices(self, domain: int, n: int) -> torch.Tensor:
        if self.positions[domain] + self.batch_size > n:  # this domain's epoch is over
            self.orders[domain] = self._permutation(n)
            self.positions[domain] = 0
        start = self.positions[domain]
        self.positions[domain] += self.batch_size
        return self.orders[domain][start : start + self.batch_size]

    def _augment(self, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        room = images.shape[-1] - self.size
        # drawn on the CPU: python ints for slicing without a device sync
        corners = torch.randint(0, room + 1, (len(index), 2), generator=self.generator).tolist()
        flips = (torch.rand(len(index), generator=self.generator) < 0.5).tolist()
        flips = flips if self.data.flip else [False] * len(index)
        out = []
        for i, (top, left), flip in zip(index.tolist(), corners, flips, strict=True):
            crop = images[i, :, top : top + self.size, left : left + self.size]
            out.append(crop.flip(-1) if flip else crop)
        return torch.stack(out)

    def __iter__(self) -> UnpairedBatches:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        a = self._augment(self.data.a, self._indices(0, len(self.data.a)))
        b = self._augment(self.data.b, self._indices(1, len(self.data.b)))
        return a, b

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "orders": list(self.orders),
                "positions": list(self.positions)}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.orders = list(state["orders"])
        self.positions = list(state["positions"])


# --- folders on disk -------------------------------------------------------------------------


def _missing(root: Path) -> list[str]:
    return [f"train{d}/" for d in DOMAINS if not list_images(root / f"train{d}")]


def _download(cfg, data_dir: Path) -> str | None:
    """Fetch and unzip a known archive into data_dir; the reason when that failed."""
    archive = ARCHIVES[cfg.name]
    try:
        path = fetch(archive, data_dir)
    except (DownloadError, OSError) as e:
        return str(e)
    extract_zip(path, data_dir)
    path.unlink()  # 117 MB that would only duplicate the extracted folders
    return None


def _locate(cfg, data_dir: Path) -> Path:
    """The dataset's folder with trainA/ and trainB/, after a download if it is a known one."""
    root = data_dir / cfg.name
    missing = _missing(root)
    if not missing:
        return root
    failure = "no download address is known for it"
    if cfg.name in ARCHIVES and cfg.download:
        log.info("%s: %s missing in %s; downloading", cfg.name, ", ".join(missing), root)
        failure = _download(cfg, data_dir)
        if failure is None and not _missing(root):
            return root
        failure = failure or "the archive did not contain the expected folders"
    elif cfg.name in ARCHIVES:
        failure = "dataset.download=false"
    if cfg.name in ARCHIVES:
        archive = ARCHIVES[cfg.name]
        where = (f"download {archive.name} ({archive.size:,} bytes, sha256 {archive.sha256}) "
                 f"from {archive.mirrors[0]} and unzip it in {data_dir} so that {root}/trainA/ "
                 f"and {root}/trainB/ exist")
    else:
        where = (f"place the images of domain A in {root}/trainA/ and of domain B in "
                 f"{root}/trainB/ (testA/ and testB/ optional)")
    raise UserError(f"{cfg.name} is not complete in {root} (missing: {', '.join(missing)}) and "
                    f"was not downloaded ({failure}); {where}")


def _read_domain(folder: Path, size: int, channels: int, max_images: int | None,
                 what: str) -> tuple[torch.Tensor, int]:
    """uint8 images of one folder resized to size x size, and how many files were skipped."""
    names = list_images(folder)[:max_images]
    # the reference resizes with bicubic interpolation to a square, whatever the aspect
    x, ok = decode_all(folder, names, size, channels=channels, resample=Image.BICUBIC, what=what)
    skipped = count_unreadable(names, ok, folder, what, "replace them with readable image files")
    return x[ok].contiguous(), skipped


def _cache_path(cfg, root: Path, size: int) -> Path:
    first = f"_first{cfg.max_images}" if cfg.max_images is not None else ""
    return root / "cache" / f"{size}px_{cfg.channels}ch{first}.pt"


def _read_folders(cfg, root: Path, size: int, test_size: int) -> dict:
    """Every domain folder decoded: train at the load size, test at the training size."""
    listing = {split: len(list_images(root / split))
               for split in ("trainA", "trainB", "testA", "testB")}
    cache = _cache_path(cfg, root, size)

    def check(blob: object) -> None:
        if not (isinstance(blob, dict) and blob.get("files") == listing
                and all(isinstance(blob.get(k), torch.Tensor) for k in listing)):
            raise ValueError("made from other files or an old format")

    blob = read_cache(cache, cfg.name, check) if cfg.cache else None
    if blob is not None and blob["test_size"] == test_size:
        return blob
    blob = {"files": listing, "test_size": test_size, "skipped": {}}
    for split, n in listing.items():
        at = size if split.startswith("train") else test_size
        if n == 0:  # testA/testB are optional
            blob[split] = torch.zeros((0, cfg.channels, at, at), dtype=torch.uint8)
            blob["skipped"][split] = 0
            continue
        blob[split], blob["skipped"][split] = _read_domain(
            root / split, at, cfg.channels, cfg.max_images, f"{cfg.name}/{split}")
    if cfg.cache:
        write_cache(cache, blob, cfg.name)
    return blob


def hold_out(a: torch.Tensor, b: torch.Tensor,
             size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fixed random 10% of each domain for testing (resized to the training size), and the
    rest for training."""
    parts = []
    for images in (a, b):
        n_held = max(1, round(len(images) * HELDOUT_FRACTION))
        if n_held >= len(images):
            raise UserError(f"a domain with {len(images)} image(s) is too small to hold any "
                            "out for testing; add testA/ and testB/ folders")
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(HELDOUT_SEED))
        keep, held = order[n_held:].sort().values, order[:n_held]
        parts.append((images[keep], resize_uint8(images[held], size)))
    (train_a, test_a), (train_b, test_b) = parts
    return train_a, train_b, test_a, test_b


def check_unpaired_cfg(cfg) -> None:
    if cfg.channels not in (1, 3):
        raise UserError(f"dataset.channels must be 1 or 3 (got {cfg.channels})")
    if cfg.image_size < 1:
        raise UserError(f"dataset.image_size must be positive (got {cfg.image_size})")


@DATASETS.register("unpaired")
def build_unpaired(cfg, data_dir: Path, seed: int) -> UnpairedDataset:
    check_unpaired_cfg(cfg)
    size = cfg.image_size
    loaded = load_size(size, cfg.load_size)
    root = _locate(cfg, Path(data_dir))
    blob = _read_folders(cfg, root, loaded, size)
    a, b = blob["trainA"], blob["trainB"]
    test_a, test_b = blob["testA"], blob["testB"]
    if len(test_a) and len(test_b):
        test_from = f"{root}/testA, testB"
    else:
        a, b, test_a, test_b = hold_out(a, b, size)
        test_from = (f"a fixed random {HELDOUT_FRACTION:.0%} of each training domain (no "
                     f"testA/ and testB/ in {root})")
    spec = DataSpec(cfg.name, kind="unpaired", shape=(cfg.channels, size, size))
    skipped = sum(blob["skipped"].values())
    source = (f"{cfg.name}: {len(a):,} A and {len(b):,} B training images from {root}, loaded "
              f"at {loaded} px, random {size}-px crops{' and flips' if cfg.flip else ''}")
    source += f"; {skipped:,} unreadable skipped" if skipped else ""
    heldout = UnpairedDataset(spec, test_a, test_b, flip=False,
                              source=f"{len(test_a):,} A and {len(test_b):,} B test images "
                                     f"at {size} px from {test_from}")
    return UnpairedDataset(spec, a, b, cfg.flip, source, heldout=heldout)
