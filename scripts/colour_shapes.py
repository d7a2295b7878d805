"""Procedural colour pictures for colourisation (a benchmark's data, not a test):

    python scripts/colour_shapes.py [--out shapes] [--n 2000] [--size 32]

Writes n PNGs of 1-3 shapes on a light gray background whose colour follows the shape
(circles red, squares green, triangles blue, all of about the same luma), so a model that
colours the gray picture must recognise the shape: the gray input does not give the colour
away. Then: python -m ganlab train model=pix2pix model.task=colorize dataset=folder
dataset.path=shapes dataset.image_size=32
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"circle": (200, 60, 60), "square": (60, 140, 60), "triangle": (80, 80, 240)}


def picture(rng: random.Random, size: int) -> Image.Image:
    image = Image.new("RGB", (size, size), (235, 235, 235))
    draw = ImageDraw.Draw(image)
    scale = size / 32
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(list(COLOURS))
        r = rng.uniform(4, 8) * scale
        x, y = rng.uniform(6, 26) * scale, rng.uniform(6, 26) * scale
        fill = tuple(min(255, max(0, c + rng.randint(-15, 15))) for c in COLOURS[kind])
        if kind == "circle":
            draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
        elif kind == "square":
            draw.rectangle((x - r, y - r, x + r, y + r), fill=fill)
        else:
            draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=fill)
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="shapes")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    for i in range(args.n):
        picture(rng, args.size).save(out / f"{i:04d}.png")
    print(f"wrote {args.n} pictures to {out}")


if __name__ == "__main__":
    main()
