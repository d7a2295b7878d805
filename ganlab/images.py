"""Image conversions, in one place.

Datasets hold uint8 images in 0..255. Generators work in [-1, 1] (tanh) or [0, 1] (sigmoid);
classifiers and attacks in [0, 1]. Files get uint8 again.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

# a model's image range: (low, high)
SYMMETRIC = (-1.0, 1.0)
UNIT = (0.0, 1.0)


def to_float(images: torch.Tensor, value_range: tuple[float, float]) -> torch.Tensor:
    """uint8 0..255 -> float in value_range. Float input (2-D points) passes through."""
    if images.dtype != torch.uint8:
        return images
    low, high = value_range
    return images.float().mul_((high - low) / 255.0).add_(low)


def to_uint8(images: torch.Tensor, value_range: tuple[float, float]) -> torch.Tensor:
    """float in value_range -> uint8 0..255 (clamped, rounded)."""
    low, high = value_range
    scaled = (images.detach().float() - low) * (255.0 / (high - low))
    return scaled.round_().clamp_(0, 255).to(torch.uint8)


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 (N, C, H, W) batch once at load time (bilinear, antialiased)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True,
                        align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> torch.Tensor:
    """uint8 (N, C, H, W) -> one uint8 (C, H', W') grid; nrow defaults to a square."""
    from torchvision.utils import make_grid as tv_make_grid

    n = images.shape[0]
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    grid = tv_make_grid(images.float(), nrow=nrow, padding=padding, pad_value=255.0)
    return grid.round().clamp(0, 255).to(torch.uint8)


def save_png(image: torch.Tensor, path: str | Path) -> None:
    """Write a uint8 (C, H, W) image with C in {1, 3} as PNG."""
    from PIL import Image

    array = image.detach().cpu()
    if array.shape[0] == 1:
        pil = Image.fromarray(array[0].numpy(), mode="L")
    else:
        pil = Image.fromarray(array.permute(1, 2, 0).numpy(), mode="RGB")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pil.save(path)


def save_gif(frames: list[Path], path: Path, seconds_per_frame: float = 0.25) -> None:
    """An animated GIF of PNG files, in order, looping; frames of another size (ProGAN's
    growing grids) are resized to the last one's. Written under a temporary name, then
    renamed."""
    from PIL import Image

    images = [Image.open(f).convert("RGB") for f in frames]
    size = images[-1].size
    images = [im if im.size == size else im.resize(size, Image.NEAREST) for im in images]
    partial = path.with_name(f".{path.name}.part")
    images[0].save(partial, format="GIF", save_all=True, append_images=images[1:],
                   duration=int(seconds_per_frame * 1000), loop=0)
    partial.replace(path)


def figure_to_uint8(fig) -> torch.Tensor:
    """A matplotlib Figure drawn on the Agg canvas (no pyplot, no global state): uint8 (3, H, W)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())  # (H, W, 4), a view of the canvas buffer
    return torch.from_numpy(rgba[..., :3].copy()).permute(2, 0, 1).contiguous()
