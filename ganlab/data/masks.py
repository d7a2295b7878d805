"""Label maps -> images: the data of semantic image synthesis (SPADE), made or read.

`dataset=masks` is a procedural paired dataset, like red2blue a dataset of its own (it needs
no images on disk, so it is not a task over another dataset): each example is a label map
(background and circles, squares and triangles of random size and position, overlapping, drawn
one over the other) and an image rendered from it. Each class has its own colour and texture,
jittered per image (a gradient for the background, dots for circles, diagonal stripes for
squares, a checker for triangles), every region border is drawn darker, and the pixels carry
a little noise: the map decides the image's layout and its textures, the noise and jitter
decide the rest, so the mapping is learnable but not a lookup. Same seed, same data, at any
image size of at least MIN_SIZE px; the held-out maps come from a generator of their own.

Label maps are uint8 (N, 1, H, W) class indices 0..K-1 in the A side of a PairedDataset;
spec.num_classes is K and spec.class_names names them. Families turn them into one-hot maps
(`one_hot`) and show them in colour (`colourize`).

Label-map folders (`dataset=paired dataset.label_classes=K`) store each map as a PNG whose
pixel values are the class indices: a palette ("P" mode) PNG, whose indices are read (its
colours are only how viewers show it), or a grayscale PNG with values 0..K-1; an RGB file
whose three channels are equal is read as gray. Colour-coded maps (a colour per class) need
their table, `dataset.label_colors=[[R,G,B], ...]` (K colours, class 0 first): each pixel
then takes the class of the nearest colour (JPEG noise and blended edges included); without
the table they are refused. Maps are resized with nearest neighbours, never interpolated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ganlab.config import ranged
from ganlab.data.base import DATASETS, DataSpec
from ganlab.data.shapes import shape_masks
from ganlab.errors import UserError

CLASS_NAMES = ("background", "circle", "square", "triangle")
MIN_SIZE = 8
TEST_SEED_OFFSET = 10_007  # the held-out maps are drawn from a generator of their own
# per class: base RGB colour, drawn per image within +-COLOUR_JITTER
BASE_COLOURS = ((225, 215, 190), (215, 80, 40), (50, 90, 200), (60, 160, 70))
COLOUR_JITTER = 20
TEXTURE_AMPLITUDE = (25.0, 45.0, 45.0, 40.0)  # per class, in pixel values
TEXTURE_PERIOD = 1 / 6  # of the image side: the same pattern at every size
BORDER_SHADE = 0.55  # region borders: the pixel colour times this
NOISE_STD = 5.0
# a palette for showing label maps (class k -> colour); beyond it, colours repeat
PALETTE = ((0, 0, 0), (230, 60, 60), (60, 110, 230), (70, 190, 80), (240, 200, 40),
           (170, 80, 200), (60, 200, 200), (250, 140, 30), (140, 140, 140), (255, 255, 255))


@dataclass
class MasksDatasetConfig:
    name: str = "masks"
    image_size: int = ranged(64, "[8, inf)")  # drawn at this size (no crop)
    n_samples: int = ranged(2000, "[1, inf)")  # training pairs
    n_test: int = ranged(100, "[1, inf)")  # held-out pairs
    max_shapes: int = ranged(4, "[1, inf)")  # shapes per map: 1..max_shapes, later ones on top
    flip: bool = True  # random horizontal flips (the same for map and image)


# --- drawing the maps and rendering them -----------------------------------------------------


def draw_label_maps(n: int, size: int, max_shapes: int,
                    generator: torch.Generator) -> torch.Tensor:
    """uint8 (n, 1, size, size) label maps: background (0) under 1..max_shapes shapes, each a
    circle (1), square (2) or upright triangle (3) of radius 10-30% of the side, centred
    anywhere in the image, later shapes over earlier ones."""
    labels = torch.zeros(n, size, size, dtype=torch.uint8)
    count = torch.randint(1, max_shapes + 1, (n,), generator=generator)
    for k in range(max_shapes):
        radius = size * (0.10 + 0.20 * torch.rand(n, generator=generator))
        centre = size * torch.rand(n, 2, generator=generator)
        kind = torch.randint(1, 4, (n,), generator=generator)
        mask = shape_masks(centre, radius, kind - 1, size)  # classes 1..3 are kinds 0..2
        mask &= (k < count)[:, None, None]  # this map has fewer shapes
        labels = torch.where(mask, kind[:, None, None].to(torch.uint8), labels)
    return labels[:, None]


def region_borders(labels: torch.Tensor) -> torch.Tensor:
    """bool (N, 1, H, W): pixels with a 4-neighbour of another class."""
    lab = labels.long()
    border = torch.zeros_like(lab, dtype=torch.bool)
    border[..., 1:, :] |= lab[..., 1:, :] != lab[..., :-1, :]
    border[..., :-1, :] |= lab[..., :-1, :] != lab[..., 1:, :]
    border[..., :, 1:] |= lab[..., :, 1:] != lab[..., :, :-1]
    border[..., :, :-1] |= lab[..., :, :-1] != lab[..., :, 1:]
    return border


def render(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """uint8 (N, 3, H, W) images of uint8 (N, 1, H, W) label maps (see the module docstring)."""
    n, _, h, w = labels.shape
    classes = len(BASE_COLOURS)
    colours = torch.tensor(BASE_COLOURS, dtype=torch.float32)[None]  # (1, K, 3)
    colours = colours + torch.randint(-COLOUR_JITTER, COLOUR_JITTER + 1, (n, classes, 3),
                                      generator=generator)
    phase = 2 * torch.pi * torch.rand(n, classes, generator=generator)
    y = (torch.arange(h, dtype=torch.float32) + 0.5)[None, :, None] / h
    x = (torch.arange(w, dtype=torch.float32) + 0.5)[None, None, :] / w
    f = 2 * torch.pi / TEXTURE_PERIOD

    def p(k: int) -> torch.Tensor:
        return phase[:, k, None, None]

    textures = torch.stack([
        (y - 0.5 + 0 * x).expand(n, h, w),  # background: a vertical gradient
        torch.cos(f * x + p(1)) * torch.cos(f * y),  # circles: dots
        torch.sin(f * (x + y) / 1.5 + p(2)),  # squares: diagonal stripes
        torch.sign(torch.sin(f * x + p(3)) * torch.sin(f * y)),  # triangles: a checker
    ], dim=1)  # (N, K, H, W), each in [-1, 1]
    amplitude = torch.tensor(TEXTURE_AMPLITUDE)[None, :, None, None]
    lab = labels.long()  # (N, 1, H, W)
    shade = torch.gather(textures * amplitude, 1, lab)  # (N, 1, H, W)
    base = torch.gather(colours, 1, lab.flatten(1)[:, :, None].expand(-1, -1, 3))  # (N, HW, 3)
    image = base.permute(0, 2, 1).reshape(n, 3, h, w) + shade
    image = torch.where(region_borders(labels), image * BORDER_SHADE, image)
    image = image + NOISE_STD * torch.randn(image.shape, generator=generator)
    return image.round_().clamp_(0, 255).to(torch.uint8)


def make_pairs(n: int, size: int, max_shapes: int,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    labels = draw_label_maps(n, size, max_shapes, generator)
    return labels, render(labels, generator)


@DATASETS.register("masks", MasksDatasetConfig)
def build_masks(cfg, data_dir: Path, seed: int):
    from ganlab.data.paired import PairedDataset

    size = int(cfg.image_size)
    if size < MIN_SIZE:
        raise UserError(f"dataset.image_size must be at least {MIN_SIZE} for masks (got {size})")
    train = torch.Generator().manual_seed(seed)
    test = torch.Generator().manual_seed(seed + TEST_SEED_OFFSET)
    a, b = make_pairs(cfg.n_samples, size, cfg.max_shapes, train)
    test_a, test_b = make_pairs(cfg.n_test, size, cfg.max_shapes, test)
    spec = DataSpec("masks", kind="paired", shape=(3, size, size),
                    num_classes=len(CLASS_NAMES), class_names=CLASS_NAMES)
    heldout = PairedDataset(spec, test_a, test_b, flip=False,
                            source=f"masks: {cfg.n_test:,} held-out label maps -> images at "
                                   f"{size} px (seed {seed} + {TEST_SEED_OFFSET})")
    source = (f"masks: {cfg.n_samples:,} procedural label maps ({', '.join(CLASS_NAMES)}; "
              f"1-{cfg.max_shapes} shapes each) -> rendered images at {size} px (seed {seed})"
              f"{', random flips' if cfg.flip else ''}")
    return PairedDataset(spec, a, b, cfg.flip, source, heldout=heldout)


# --- label maps as the networks and people see them ------------------------------------------


def label_classes(cfg_dataset) -> int:
    """K when the dataset's inputs are label maps of K classes (dataset=masks, or
    dataset=paired with dataset.label_classes=K), else 0: from the config alone."""
    from ganlab.data import dataset_builder

    if dataset_builder(cfg_dataset) == "masks":
        return len(CLASS_NAMES)
    classes = int(cfg_dataset.get("label_classes") or 0)
    if cfg_dataset.get("label_colors") and not classes:
        raise UserError("dataset.label_colors is set without dataset.label_classes: set "
                        "dataset.label_classes=K to read the input side as label maps")
    label_colours(cfg_dataset)  # a malformed table is refused before any data is read
    return classes


def one_hot(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """uint8 (N, 1, H, W) class indices -> float (N, classes, H, W) one-hot maps."""
    return F.one_hot(labels[:, 0].long(), classes).permute(0, 3, 1, 2).float()


def colourize(labels: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 1, H, W) class indices -> uint8 (N, 3, H, W) in PALETTE's colours."""
    palette = torch.tensor(PALETTE, dtype=torch.uint8, device=labels.device)
    return palette[labels[:, 0].long() % len(PALETTE)].permute(0, 3, 1, 2).contiguous()


def palette_png(labels: torch.Tensor, path: Path) -> None:
    """Write one uint8 (1, H, W) label map as a palette PNG (its pixels are the indices)."""
    picture = Image.fromarray(labels[0].cpu().numpy(), mode="P")
    picture.putpalette([c for colour in PALETTE for c in colour])
    picture.save(path)


# --- reading label maps from files -----------------------------------------------------------


def nearest_colour(rgb: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """(H, W) index of the nearest of `colours` (K, 3) for each pixel of rgb (H, W, 3): JPEG
    noise and antialiased edges go to the closest class colour."""
    distance = ((rgb[:, :, None, :].astype(np.int32) - colours[None, None]) ** 2).sum(-1)
    return distance.argmin(-1).astype(np.uint8)


def label_array(picture: Image.Image, where: str,
                colours: np.ndarray | None = None) -> np.ndarray:
    """(H, W) class indices of an opened label-map image (see the module docstring); with
    `colours` (K, 3), any image is read as colour-coded: the nearest class colour."""
    if colours is not None:
        return nearest_colour(np.array(picture.convert("RGB")), colours)
    if picture.mode == "P":
        return np.array(picture, dtype=np.uint8)
    if picture.mode in ("L", "I", "I;16", "1"):
        array = np.array(picture)
    else:
        rgb = np.array(picture.convert("RGB"))
        if not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()):
            raise UserError(f"{where} is a colour image; label maps are read as class indices: "
                            "save them as palette PNGs (the pixel values are the indices) or "
                            "gray PNGs with values 0..K-1, or give each class's colour in "
                            "dataset.label_colors")
        array = rgb[..., 0]
    if array.max(initial=0) > 255:
        raise UserError(f"{where} holds values above 255; label maps take at most 256 classes")
    return array.astype(np.uint8)


def read_label_map(path: Path, size: int, half: str | None = None,
                   colours: np.ndarray | None = None):
    """uint8 (size, size) class indices of one label-map file (or of its left half, "A", or
    right half, "B", for aligned A|B images), resized with nearest neighbours; None when the
    file cannot be read."""
    try:
        with Image.open(path) as picture:
            picture.load()
            width, height = picture.size
            box = {None: (0, 0, width, height), "A": (0, 0, width // 2, height),
                   "B": (width // 2, 0, width, height)}[half]
            array = label_array(picture.crop(box), str(path), colours)
    except UserError:
        raise
    except Exception:  # corrupt or truncated: skipped and counted, as other images
        return None
    return np.array(Image.fromarray(array).resize((size, size), Image.NEAREST), dtype=np.uint8)


def check_classes(labels: torch.Tensor, classes: int, names: list[str], where: str) -> None:
    """Every label value below `classes`, or a UserError naming how many maps and which."""
    too_high = (labels.flatten(1).amax(dim=1) >= classes).nonzero().flatten().tolist()
    if too_high:
        shown = ", ".join(f"{names[i]} (max {int(labels[i].max())})" for i in too_high[:3])
        more = ", ..." if len(too_high) > 3 else ""
        raise UserError(f"{len(too_high)} label map(s) in {where} hold values >= "
                        f"dataset.label_classes={classes}: {shown}{more}; the values must be "
                        "class indices 0..K-1")


def label_side(direction: str) -> str:
    """The folder side ("A" or "B") holding the label maps: the input side after
    dataset.direction (A for AtoB, B for BtoA)."""
    return "A" if direction == "AtoB" else "B"


def read_label_side(root: Path, layout: str, split: str, size: int, cfg,
                    pairs: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """One split's label maps as uint8 (n, 1, size, size) class indices and a bool mask of the
    files that could be read: the left halves of aligned images (A) or their right halves
    (B), or the files of split+A/ or split+B/; values >= dataset.label_classes are refused."""
    side = label_side(cfg.direction)
    index = 0 if side == "A" else 1
    if layout == "aligned":
        folder = root / split
    else:
        folder = root / f"{split}{side}"
    names = [pair[index] for pair in pairs]
    colours = label_colours(cfg)
    labels = torch.zeros((len(names), 1, size, size), dtype=torch.uint8)
    ok = torch.zeros(len(names), dtype=torch.bool)
    for i, name in enumerate(names):
        array = read_label_map(folder / name, size, side if layout == "aligned" else None,
                               colours)
        if array is not None:
            labels[i, 0] = torch.from_numpy(array)
            ok[i] = True
    check_classes(labels, int(cfg.label_classes), names, str(folder))
    return labels, ok


def label_colours(cfg) -> np.ndarray | None:
    """dataset.label_colors as a (K, 3) array, checked against dataset.label_classes."""
    table = cfg.get("label_colors")
    if not table:
        return None
    colours = np.array([list(c) for c in table])
    k = int(cfg.label_classes or 0)
    if colours.ndim != 2 or colours.shape[1] != 3 or not ((colours >= 0) & (colours <= 255)).all():
        raise UserError("dataset.label_colors takes one [R, G, B] (0..255) per class, e.g. "
                        "[[0,0,0],[255,0,0],[0,0,255]]")
    if len(colours) != k:
        raise UserError(f"dataset.label_colors has {len(colours)} colours and "
                        f"dataset.label_classes={k}: give one colour per class")
    if len({tuple(c) for c in colours.tolist()}) != len(colours):
        raise UserError("dataset.label_colors repeats a colour: each class needs its own")
    return colours


def resize_labels(labels: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, 1, H, W) label maps resized with nearest neighbours (never blended)."""
    if labels.shape[-1] == size and labels.shape[-2] == size:
        return labels
    return F.interpolate(labels.float(), size=(size, size), mode="nearest").to(torch.uint8)
