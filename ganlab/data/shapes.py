"""`dataset=red2blue`: a synthetic unpaired toy for CycleGAN with a known mapping.

Domain A holds red shapes, domain B blue ones (circles, squares, triangles of random size and
position on a light background), drawn independently, so no image of A has a partner in B. The
right translation changes the colour and keeps the shape: both can be measured exactly, which
real photographs do not allow. Small enough to learn on a CPU in minutes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ganlab.data.base import DATASETS, DataSpec
from ganlab.data.unpaired import UnpairedDataset, load_size
from ganlab.errors import UserError

BACKGROUND = 235
COLOURS = {"A": (220, 40, 40), "B": (40, 40, 220)}  # red, blue
COLOUR_JITTER = 20  # per image, per channel
TEST_SEED_OFFSET = 10_007  # the test split is drawn from a generator of its own


def shape_masks(centre: torch.Tensor, radius: torch.Tensor, kind: torch.Tensor,
                size: int) -> torch.Tensor:
    """bool (n, size, size) masks of one filled shape each: kind 0 a circle, 1 a square, 2 an
    upright triangle (apex at the top, widening downwards), of radius `radius` (n,) around
    `centre` (n, 2: x, y) in pixels."""
    pixel = torch.arange(size, dtype=torch.float32) + 0.5
    dy = pixel[None, :, None] - centre[:, 1, None, None]
    dx = pixel[None, None, :] - centre[:, 0, None, None]
    r = radius[:, None, None]
    circle = dx**2 + dy**2 <= r**2
    square = (dx.abs() <= 0.85 * r) & (dy.abs() <= 0.85 * r)
    triangle = (dy >= -r) & (dy <= 0.8 * r) & (dx.abs() <= 0.6 * (dy + r))
    kind = kind[:, None, None]
    return torch.where(kind == 0, circle, torch.where(kind == 1, square, triangle))


def draw_shapes(n: int, size: int, colour: tuple[int, int, int], generator: torch.Generator,
                margin: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (n, 3, size, size) images of one filled shape each, and their bool (n, size, size)
    masks. `margin` pixels at each border stay free, so random crops keep the whole shape."""
    radius = size * (0.18 + 0.15 * torch.rand(n, generator=generator))
    room = size / 2 - radius - margin
    centre = size / 2 + (2 * torch.rand(n, 2, generator=generator) - 1) * room[:, None]
    kind = torch.randint(0, 3, (n,), generator=generator)
    mask = shape_masks(centre, radius, kind, size)
    jitter = torch.randint(-COLOUR_JITTER, COLOUR_JITTER + 1, (n, 3), generator=generator)
    rgb = (torch.tensor(colour)[None, :] + jitter).clamp(0, 255)
    images = torch.where(mask[:, None], rgb[:, :, None, None],
                         torch.full((), BACKGROUND)).to(torch.uint8)
    return images, mask


@DATASETS.register("red2blue")
def build_red2blue(cfg, data_dir: Path, seed: int) -> UnpairedDataset:
    if cfg.channels != 3:
        raise UserError(f"red2blue images are RGB; set dataset.channels=3 (got {cfg.channels})")
    if cfg.image_size < 8:
        raise UserError(f"dataset.image_size must be at least 8 for red2blue "
                        f"(got {cfg.image_size})")
    size = cfg.image_size
    loaded = load_size(size, cfg.load_size)
    train = torch.Generator().manual_seed(seed)
    test = torch.Generator().manual_seed(seed + TEST_SEED_OFFSET)
    # A and B come from one generator in turn: independent draws, nothing paired
    a, _ = draw_shapes(cfg.n_samples, loaded, COLOURS["A"], train, margin=loaded - size)
    b, _ = draw_shapes(cfg.n_samples, loaded, COLOURS["B"], train, margin=loaded - size)
    test_a, _ = draw_shapes(cfg.n_test, size, COLOURS["A"], test)
    test_b, _ = draw_shapes(cfg.n_test, size, COLOURS["B"], test)
    spec = DataSpec("red2blue", kind="unpaired", shape=(3, size, size))
    heldout = UnpairedDataset(spec, test_a, test_b, flip=False,
                              source=f"red2blue: {cfg.n_test:,} red and {cfg.n_test:,} blue "
                                     f"test shapes at {size} px (seed {seed} + {TEST_SEED_OFFSET})")
    source = (f"red2blue: {cfg.n_samples:,} red (A) and {cfg.n_samples:,} blue (B) shapes drawn "
              f"independently at {loaded} px (seed {seed}), random {size}-px crops"
              f"{' and flips' if cfg.flip else ''}")
    return UnpairedDataset(spec, a, b, cfg.flip, source, heldout=heldout)
