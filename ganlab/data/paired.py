"""Paired image datasets for pix2pix, and the paired tasks made from any image dataset.

`dataset=paired dataset.name=<folder>` reads `data_dir/<folder>` in either of two layouts:

- aligned (pix2pix's: facades, maps, edges2shoes): `train/`, and optionally `val/` and
  `test/`, each image holding A on its left half and B on its right;
- two folders: `trainA/` and `trainB/` (and optionally `testA/`, `testB/`) whose files pair
  up by name (the extension may differ: labels.png beside photo.jpg).

`dataset.direction=BtoA` swaps the sides. Every split is decoded once into a uint8 cache file
(`data_dir/<folder>/cache/`): training pairs at the load size (286/256 of the image size, the
reference's 286 for 256), held-out pairs at the image size. Each batch is the reference's
random jitter, the same for both sides of a pair: a random crop of the image size and a
horizontal flip with probability 1/2, drawn on the device from a generator of its own. The
held-out pairs are test/ (testA/ testB/), else val/, else a fixed random 10% of train/.

Tasks (`model.task` of pix2pix) turn an ordinary image dataset into pairs on the fly:
`colorize` pairs the BT.601 luma of each RGB image (the input) with the image (the target);
`super_resolution` pairs each image's antialiased bicubic downsample by `model.scale` (2 or 4:
28-px digits -> 7 px at 4) with the image; `inpaint` pairs each image with a square hole of
side `model.mask_size` x the image side (filled with mid-gray, 128) with the image, the hole at
a random place per image and per step in training (`model.mask_place=random`, the default) or
in the centre (`center`, Pathak et al.'s context encoder); the held-out images' holes are drawn
once from a fixed seed, so each keeps its own hole at every evaluation.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np
import torch
from omegaconf import MISSING
from PIL import Image

from ganlab.config import one_of, ranged
from ganlab.data.base import DATASETS, HELDOUT_FRACTION, HELDOUT_SEED, DataSpec
from ganlab.data.imagefiles import (
    DECODE_THREADS,
    count_unreadable,
    decode_all,
    list_images,
    read_cache,
    write_cache,
)
from ganlab.errors import UserError
from ganlab.images import resize_uint8

log = logging.getLogger("ganlab")

PAIRED_BUILDERS = ("paired", "masks")  # the DATASETS entries that hold (A, B) pairs
LOAD_SCALE = 286 / 256  # the reference's load size over its crop size
SPLITS = ("train", "val", "test")
HELDOUT_SPLITS = ("test", "val")  # the first one present is the held-out split
SHOWN_NAMES = 3  # file names quoted in an error message
# where the pix2pix datasets come from; ganlab does not fetch them itself: no checksum of
# these archives is published, and nothing is used unverified (ganlab.data.download)
KNOWN_SOURCES = {
    name: f"http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/{name}.tar.gz"
    for name in ("facades", "maps", "cityscapes", "edges2shoes", "edges2handbags", "night2day")
}
# BT.601 luma weights (PIL's "L" conversion uses the same, rounded to 8 bits)
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


# --- tasks: pairs made from one image dataset ------------------------------------------------


class PairedTask(str, Enum):
    paired = "paired"  # the dataset holds (A, B) pairs (dataset=paired, dataset=facades)
    colorize = "colorize"  # the luma of an RGB image -> the image
    super_resolution = "super_resolution"  # its bicubic downsample by model.scale -> the image
    inpaint = "inpaint"  # the image with a gray square hole -> the image


# the tasks made from an image dataset (all but paired)
IMAGE_TASKS = ("colorize", "super_resolution", "inpaint")
MASK_FILL = 128  # the hole's value in uint8: 0 in the generators' [-1, 1]
MASK_SEED = 2016  # the held-out images' holes (Pathak et al.'s year): the same every time


def check_scale_divides(size: int, scale: int, dataset: str) -> None:
    """Super-resolution needs image sides that the scale divides (28 px: 2 or 4, not 8)."""
    if size % scale:
        raise UserError(f"model.scale={scale} does not divide dataset.image_size={size} of "
                        f"dataset={dataset}: the low-resolution input would not be a whole "
                        f"number of pixels (set dataset.image_size to a multiple of {scale})")


def downsample(images: torch.Tensor, scale: int) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, H/scale, W/scale): bicubic with antialiasing (the
    kernel widened by the scale, as PIL's and MATLAB's imresize downsample), rounded."""
    x = images.float()
    size = (images.shape[-2] // scale, images.shape[-1] // scale)
    small = torch.nn.functional.interpolate(x, size=size, mode="bicubic", antialias=True,
                                            align_corners=False)
    return small.round_().clamp_(0, 255).to(torch.uint8)


def upsample(images: torch.Tensor, scale: int) -> torch.Tensor:
    """uint8 images enlarged `scale` times by bicubic interpolation: the baseline of
    super-resolution, and pix2pix's input for it (its U-Net maps images to the same size)."""
    big = torch.nn.functional.interpolate(images.float(), scale_factor=scale, mode="bicubic",
                                          align_corners=False)
    return big.round_().clamp_(0, 255).to(torch.uint8)


def square_masks(n: int, size: int, fraction: float, place: str, device: torch.device,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """bool (n, 1, size, size), True inside each image's square hole of side
    round(fraction x size) (at least 1 px): in the centre, or at a random place drawn from
    `generator` (None: the global RNG, which checkpoints restore)."""
    side = max(1, round(fraction * size))
    if place == "center":
        corners = torch.full((n, 2), (size - side) // 2, device=device)
    else:
        corners = torch.randint(0, size - side + 1, (n, 2), generator=generator,
                                device="cpu" if generator is not None else device).to(device)
    span = torch.arange(size, device=device)
    rows = (span >= corners[:, :1]) & (span < corners[:, :1] + side)  # (n, size)
    cols = (span >= corners[:, 1:]) & (span < corners[:, 1:] + side)
    return (rows[:, :, None] & cols[:, None, :]).unsqueeze(1)


def with_holes(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """uint8 images with their masked pixels set to mid-gray (every channel)."""
    return images.masked_fill(masks, MASK_FILL)


def task_inputs(task: str, images: torch.Tensor, c, masks: torch.Tensor | None = None
                ) -> torch.Tensor:
    """pix2pix's uint8 inputs for uint8 target images under an image task (model config `c`:
    scale, mask_size, mask_place). For super_resolution the low-resolution image is enlarged
    back bicubically, since the U-Net maps images to images of the same size; for inpaint the
    holes are `masks`, else drawn (the global RNG) as c.mask_place says."""
    if task == PairedTask.colorize.value:
        return luma(images)
    if task == PairedTask.super_resolution.value:
        return upsample(downsample(images, int(c.scale)), int(c.scale))
    if task == PairedTask.inpaint.value:
        if masks is None:
            masks = square_masks(len(images), images.shape[-1], float(c.mask_size),
                                 str(c.mask_place), images.device)
        return with_holes(images, masks)
    raise ValueError(f"{task} is not an image task")


def task_input_channels(task: str, channels: int) -> int:
    """Channels of the generator's input for a task on data with `channels` channels."""
    return 1 if task == PairedTask.colorize.value else channels


def luma(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) RGB -> uint8 (N, 1, H, W) BT.601 luma, rounded as PIL's "L" mode
    rounds it (so a photo converted by PIL and one converted here agree to 1/255)."""
    weights = torch.tensor(LUMA_WEIGHTS, device=images.device).view(1, 3, 1, 1)
    gray = (images.float() * weights).sum(dim=1, keepdim=True)
    return gray.round_().clamp_(0, 255).to(torch.uint8)


def check_colorize_channels(channels: int, dataset: str) -> None:
    if channels != 3:
        raise UserError(f"model.task=colorize predicts colour from gray: it needs an RGB "
                        f"dataset, and dataset={dataset} has {channels} channel(s) (set "
                        "dataset.channels=3 where the dataset has colour, or choose an RGB "
                        "dataset such as cifar10, celeba or folder)")


# --- the dataset and its batches -------------------------------------------------------------


def load_size(image_size: int, configured: int | None) -> int:
    size = configured if configured is not None else round(LOAD_SCALE * image_size)
    if size < image_size:
        raise UserError(f"dataset.load_size={size} is smaller than dataset.image_size="
                        f"{image_size}: the random crop is taken from the loaded image")
    return size


@dataclass
class PairedDataset:
    """(A, B) image pairs as uint8 (N, C, L, L) tensors, row i of `a` paired with row i of
    `b`; batches are random `spec.shape[-1]`-pixel crops (and flips) shared by each pair."""

    spec: DataSpec  # kind "paired", shape (C, S, S): what the networks see
    a: torch.Tensor
    b: torch.Tensor
    flip: bool = True
    source: str = ""
    notes: list[str] = field(default_factory=list)
    heldout: PairedDataset | None = None

    def __len__(self) -> int:
        return len(self.a)

    def to(self, device: torch.device) -> PairedDataset:
        heldout = self.heldout.to(device) if self.heldout is not None else None
        return PairedDataset(self.spec, self.a.to(device), self.b.to(device), self.flip,
                             self.source, self.notes, heldout)

    def batches(self, batch_size: int, seed: int) -> PairedBatches:
        return PairedBatches(self, batch_size, seed)


class PairedBatches:
    """(a, b) uint8 batches in a fresh random order each epoch (an incomplete last batch is
    dropped); both images of a pair get the same random crop and the same flip.

    All randomness comes from one generator of its own: the batches depend only on the seed,
    and state_dict() lets a resumed run see the same ones."""

    def __init__(self, data: PairedDataset, batch_size: int, seed: int) -> None:
        if batch_size > len(data):
            raise UserError(f"trainer.batch_size={batch_size} is larger than the dataset "
                            f"({len(data):,} pairs)")
        self.data = data
        self.batch_size = batch_size
        self.size = data.spec.shape[-1]
        self.batches_per_epoch = len(data) // batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(len(data), generator=self.generator)
        self.position = 0

    def _index(self) -> torch.Tensor:
        if self.position >= self.batches_per_epoch:
            self.order = torch.randperm(len(self.data), generator=self.generator)
            self.position = 0
        start = self.position * self.batch_size
        self.position += 1
        return self.order[start : start + self.batch_size]

    def __iter__(self) -> PairedBatches:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        index = self._index()
        room = self.data.a.shape[-1] - self.size
        # drawn on the CPU: python ints for slicing without a device sync
        corners = torch.randint(0, room + 1, (len(index), 2), generator=self.generator).tolist()
        flips = (torch.rand(len(index), generator=self.generator) < 0.5).tolist()
        crops_a, crops_b = [], []
        for i, (top, left), flip in zip(index.tolist(), corners, flips, strict=True):
            window = (slice(None), slice(top, top + self.size), slice(left, left + self.size))
            a, b = self.data.a[i][window], self.data.b[i][window]
            if flip and self.data.flip:
                a, b = a.flip(-1), b.flip(-1)
            crops_a.append(a)
            crops_b.append(b)
        return torch.stack(crops_a), torch.stack(crops_b)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": self.order,
                "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order = state["order"]
        self.position = int(state["position"])


# --- reading the folders ---------------------------------------------------------------------


@dataclass
class PairedDatasetConfig:
    name: str = MISSING  # the folder under data_dir: train/ (A|B side by side) or trainA/ trainB/
    loader: str = "paired"  # the dataset builder (the name is the folder)
    image_size: int = ranged(256, "[1, inf)")  # the random crop the networks see
    channels: int = 3  # 3: RGB, 1: grayscale (both sides)
    direction: str = one_of("AtoB", "AtoB", "BtoA")  # BtoA: B is the input, A the target
    # resized to this before cropping; null: 286/256 x image_size (the reference's jitter)
    load_size: int | None = ranged(None, "[1, inf)")
    flip: bool = True  # random horizontal flips (the same for both images of a pair)
    max_images: int | None = ranged(None, "[1, inf)")  # the first N pairs of each split
    cache: bool = True  # keep the decoded uint8 pairs in one file beside the data
    # K: the input side holds label maps of K classes (model=spade): palette PNGs or gray
    # values 0..K-1 (ganlab.data.masks); null: images
    label_classes: int | None = ranged(None, "[1, 256]")
    # colour-coded maps: class k's [R, G, B], K of them; each pixel takes the nearest colour
    label_colors: list[list[int]] | None = None


def _shown(names: list[str]) -> str:
    more = ", ..." if len(names) > SHOWN_NAMES else ""
    return ", ".join(names[:SHOWN_NAMES]) + more


def _missing_message(cfg, root: Path, data_dir: Path) -> str:
    layouts = (f"it needs {root}/train/ holding A|B pairs side by side (val/ and test/ "
               f"optional), or {root}/trainA/ and {root}/trainB/ holding images paired by file "
               "name (testA/ and testB/ optional)")
    if cfg.name in KNOWN_SOURCES:
        return (f"{cfg.name} is not in {root}; ganlab does not download it (no checksum of "
                f"{cfg.name}.tar.gz is published to verify it against): download "
                f"{KNOWN_SOURCES[cfg.name]} and extract it in {data_dir} (tar -xzf "
                f"{cfg.name}.tar.gz -C {data_dir}) so that {root}/train/ exists")
    return f"{cfg.name} is not a paired dataset in {root}: {layouts}"


def find_layout(cfg, root: Path, data_dir: Path) -> str:
    """"aligned" (train/) or "folders" (trainA/ trainB/); a UserError when neither is there."""
    aligned = bool(list_images(root / "train"))
    present = [d for d in ("trainA", "trainB") if list_images(root / d)]
    if aligned and present:
        raise UserError(f"{root} holds both train/ (A|B side by side) and {'/ '.join(present)}/ "
                        "(two folders); keep one layout")
    if aligned:
        return "aligned"
    if len(present) == 1:
        other = "trainB" if present == ["trainA"] else "trainA"
        raise UserError(f"{root}/{present[0]}/ has images but {root}/{other}/ is missing or "
                        f"empty: the two-folder layout needs both, with the same file names")
    if present:
        return "folders"
    raise UserError(_missing_message(cfg, root, data_dir))


def pair_names(folder_a: Path, folder_b: Path) -> list[tuple[str, str]]:
    """(A file, B file) pairs of two folders, matched by file name without its extension;
    a name without its counterpart, or one name twice in a folder, is a UserError."""
    sides = []
    for folder in (folder_a, folder_b):
        by_stem: dict[str, str] = {}
        for name in list_images(folder):
            stem = Path(name).stem
            if stem in by_stem:
                raise UserError(f"{folder} holds {by_stem[stem]} and {name}: pairs are matched "
                                "by file name without its extension, so each name must be "
                                "there once")
            by_stem[stem] = name
        sides.append(by_stem)
    a, b = sides
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if only_a or only_b:
        parts = [f"{len(only)} only in {folder.name}/ ({_shown([s[k] for k in only])})"
                 for only, folder, s in ((only_a, folder_a, a), (only_b, folder_b, b)) if only]
        raise UserError(f"{folder_a.name}/ and {folder_b.name}/ in {folder_a.parent} do not "
                        f"pair up by file name: {'; '.join(parts)}; each A image needs its B "
                        "image under the same name")
    return [(a[stem], b[stem]) for stem in sorted(a)]


def _decode_halves(path: Path, size: int, channels: int):
    """The left and right halves of one aligned image as uint8 (size, size, channels) each;
    (w, h) when the width is not twice the height; None when it cannot be read."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width != 2 * height:
                return width, height
            picture = image.convert("RGB" if channels == 3 else "L")
    except Exception:  # corrupt, truncated or a decompression bomb: skipped and counted
        return None
    half = width // 2
    out = []
    for box in ((0, 0, half, height), (half, 0, width, height)):
        # the reference resizes each half to a square with bicubic interpolation
        array = np.array(picture.crop(box).resize((size, size), Image.BICUBIC), dtype=np.uint8)
        out.append(array if array.ndim == 3 else array[:, :, None])
    return out


def decode_aligned(folder: Path, names: list[str], size: int, channels: int,
                   what: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 (n, channels, size, size) A and B halves and a bool mask of the files that could
    be read. An image whose width is not twice its height is a UserError (how many, which)."""
    n = len(names)
    a = torch.zeros((n, channels, size, size), dtype=torch.uint8)
    b = torch.zeros_like(a)
    ok = torch.zeros(n, dtype=torch.bool)
    misshapen: dict[int, tuple[int, int]] = {}

    def work(i: int) -> None:
        result = _decode_halves(folder / names[i], size, channels)
        if isinstance(result, tuple):
            misshapen[i] = result
        elif result is not None:
            a[i] = torch.from_numpy(result[0]).permute(2, 0, 1)  # disjoint rows: thread-safe
            b[i] = torch.from_numpy(result[1]).permute(2, 0, 1)
            ok[i] = True

    log.info("%s: decoding %s A|B images from %s (%d threads)", what, f"{n:,}", folder,
             DECODE_THREADS)
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        list(pool.map(work, range(n)))
    if misshapen:
        bad = [f"{names[i]} ({w}x{h})" for i, (w, h) in sorted(misshapen.items())]
        raise UserError(f"{len(bad)} of {n} images in {folder} are not an A|B pair side by "
                        f"side (the width must be twice the height): {_shown(bad)}")
    return a, b, ok


def _fingerprint(root: Path, listing: dict[str, list[str]]) -> str:
    """Changes when a file is added, removed, replaced or edited: the cache is then rebuilt."""
    digest = hashlib.sha1()
    for split, names in sorted(listing.items()):
        for name in names:
            stat = os.stat(root / split / name)
            digest.update(f"{split}/{name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _read_split(root: Path, layout: str, split: str, size: int, cfg,
                pairs: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One split's readable pairs at `size` px, and how many were skipped as unreadable."""
    what = f"{cfg.name}/{split}"
    if layout == "aligned":
        names = [a for a, _ in pairs]
        a, b, ok = decode_aligned(root / split, names, size, cfg.channels, what)
        count_unreadable(names, ok, root / split, what, "replace them with readable images")
    else:
        halves = []
        for side, folder in enumerate((root / f"{split}A", root / f"{split}B")):
            names = [pair[side] for pair in pairs]
            halves.append(decode_all(folder, names, size, channels=cfg.channels,
                                     resample=Image.BICUBIC, what=what))
            count_unreadable(names, halves[-1][1], folder, what,
                             "replace them with readable images")
        (a, ok_a), (b, ok_b) = halves
        ok = ok_a & ok_b  # a pair is kept only when both of its images could be read
        if not ok.any():
            raise UserError(f"none of the {len(pairs):,} pairs in {root}/{split}A/ and "
                            f"{split}B/ has both images readable")
    if cfg.get("label_classes"):  # the input side: class indices, read as ganlab.data.masks says
        from ganlab.data.masks import read_label_side

        labels, ok_labels = read_label_side(root, layout, split, size, cfg, pairs)
        a, b = (labels, b) if cfg.direction == "AtoB" else (a, labels)
        ok = ok & ok_labels
    return a[ok].contiguous(), b[ok].contiguous(), len(pairs) - int(ok.sum())


def _listing(root: Path, layout: str, max_images: int | None) -> dict[str, list[tuple[str, str]]]:
    """Each present split's pairs of file names (the same name twice when aligned)."""
    found = {}
    for split in SPLITS:
        if layout == "aligned":
            names = list_images(root / split)
            pairs = [(name, name) for name in names]
        elif list_images(root / f"{split}A") or list_images(root / f"{split}B"):
            pairs = pair_names(root / f"{split}A", root / f"{split}B")
        else:
            pairs = []
        if pairs:
            found[split] = pairs[:max_images]
    return found


def _cache_path(cfg, root: Path, layout: str, loaded: int) -> Path:
    first = f"_first{cfg.max_images}" if cfg.max_images is not None else ""
    first += f"_labels{cfg.label_classes}{cfg.direction}" if cfg.get("label_classes") else ""
    if cfg.get("label_colors"):  # another table, another reading: a cache of its own
        table = hashlib.sha1(str([list(c) for c in cfg.label_colors]).encode()).hexdigest()
        first += f"_colors{table[:8]}"
    return (root / "cache"
            / f"paired_{layout}_{loaded}px_{cfg.image_size}px_{cfg.channels}ch{first}.pt")


def read_pairs(cfg, root: Path, layout: str, loaded: int) -> dict:
    """Every split decoded (train at the load size, the others at the image size), from the
    cache when it was made from the same files."""
    listing = _listing(root, layout, cfg.max_images)
    folders = {split: [a for a, _ in pairs] for split, pairs in listing.items()}
    if layout == "folders":
        folders = {f"{split}{side}": [pair[i] for pair in pairs]
                   for split, pairs in listing.items() for i, side in enumerate("AB")}
    fingerprint = _fingerprint(root, folders)
    cache = _cache_path(cfg, root, layout, loaded)

    def check(blob: object) -> None:
        if not (isinstance(blob, dict) and blob.get("fingerprint") == fingerprint
                and all(isinstance(blob.get(f"{s}_{x}"), torch.Tensor)
                        for s in listing for x in "ab")):
            raise ValueError("made from other files, settings or an old format")

    blob = read_cache(cache, cfg.name, check) if cfg.cache else None
    if blob is not None:
        return {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in blob.items()}
    blob = {"fingerprint": fingerprint, "splits": sorted(listing), "skipped": 0}
    for split, pairs in listing.items():
        at = loaded if split == "train" else cfg.image_size
        a, b, skipped = _read_split(root, layout, split, at, cfg, pairs)
        blob[f"{split}_a"], blob[f"{split}_b"] = a, b
        blob["skipped"] += skipped
    if cfg.cache:
        write_cache(cache, blob, cfg.name)
    return blob


def hold_out(a: torch.Tensor, b: torch.Tensor, size: int, labels: str | None = None):
    """A fixed random 10% of the training pairs for testing (resized to the training size;
    the `labels` side, "A" or "B", with nearest neighbours), and the rest for training:
    (train_a, train_b, test_a, test_b)."""
    from ganlab.data.masks import resize_labels

    n_held = max(1, round(len(a) * HELDOUT_FRACTION))
    if n_held >= len(a):
        raise UserError(f"{len(a)} training pair(s) are too few to hold any out for testing; "
                        "add more, or a test/ (or testA/ and testB/) split")
    order = torch.randperm(len(a), generator=torch.Generator().manual_seed(HELDOUT_SEED))
    keep, held = order[n_held:].sort().values, order[:n_held]
    resize_a = resize_labels if labels == "A" else resize_uint8
    resize_b = resize_labels if labels == "B" else resize_uint8
    return a[keep], b[keep], resize_a(a[held], size), resize_b(b[held], size)


@DATASETS.register("paired", PairedDatasetConfig)
def build_paired(cfg, data_dir: Path, seed: int) -> PairedDataset:
    if cfg.channels not in (1, 3):
        raise UserError(f"dataset.channels must be 1 or 3 (got {cfg.channels})")
    size = cfg.image_size
    loaded = load_size(size, cfg.load_size)
    root = Path(data_dir) / cfg.name
    layout = find_layout(cfg, root, Path(data_dir))
    blob = read_pairs(cfg, root, layout, loaded)
    a, b = blob["train_a"], blob["train_b"]
    held = next((s for s in HELDOUT_SPLITS if s in blob["splits"]), None)
    if held is not None:
        test_a, test_b = blob[f"{held}_a"], blob[f"{held}_b"]
        test_from = f"{root}/{held}{'/' if layout == 'aligned' else 'A, B'}"
    else:
        a, b, test_a, test_b = hold_out(a, b, size, labels=(
            ("A" if cfg.direction == "AtoB" else "B") if cfg.get("label_classes") else None))
        test_from = (f"a fixed random {HELDOUT_FRACTION:.0%} of the training pairs (no test/ "
                     f"or val/ in {root})")
    if cfg.direction == "BtoA":
        a, b, test_a, test_b = b, a, test_b, test_a
    # num_classes: the input side's label classes (0: images)
    spec = DataSpec(cfg.name, kind="paired", shape=(cfg.channels, size, size),
                    num_classes=int(cfg.get("label_classes") or 0))
    how = ("A|B side by side" if layout == "aligned" else "trainA/ and trainB/ by file name")
    source = (f"{cfg.name}: {len(a):,} training pairs ({how}, {cfg.direction}) from {root}, "
              f"loaded at {loaded} px, random {size}-px crops"
              f"{' and flips' if cfg.flip else ''}, the same for both images of a pair")
    source += f"; {blob['skipped']:,} unreadable skipped" if blob["skipped"] else ""
    heldout = PairedDataset(spec, test_a, test_b, flip=False,
                            source=f"{len(test_a):,} held-out pairs at {size} px from "
                                   f"{test_from}")
    return PairedDataset(spec, a, b, cfg.flip, source, heldout=heldout)
