"""`python -m ganlab sample ckpt=PATH n=N out=FILE`: draw from a trained model.

FILE.png gets an image grid; FILE.npz gets key `images`, uint8 (N, C, H, W) in 0..255 (2-D toy
models: key `points`, float32 (N, 2)). interpolate=true gives rows of latent interpolations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import MISSING

from ganlab.checkpoint import load_checkpoint
from ganlab.commandline import parse_options
from ganlab.errors import UserError
from ganlab.images import make_grid, save_png


@dataclass
class SampleConfig:
    ckpt: str = MISSING  # checkpoint file or run dir
    n: int = 64  # samples; with interpolate=true, the number of rows
    out: str = "samples.png"  # .png grid or .npz array
    seed: int = 0
    interpolate: bool = False  # rows of G(z) along a path between two random z
    steps: int = 10  # images per interpolation row
    slerp: bool = False  # spherical instead of linear interpolation
    nrow: int | None = None  # images per grid row (default: square)
    device: str = "cpu"


def parse(args: list[str]) -> SampleConfig:
    cfg = parse_options(SampleConfig, args, "sample")
    if cfg.n < 1 or cfg.steps < 2:
        raise UserError("sample: n must be at least 1 and steps at least 2")
    if Path(cfg.out).suffix not in (".png", ".npz"):
        raise UserError(f"sample: out must end in .png or .npz, got {cfg.out!r}")
    return cfg  # type: ignore[return-value]


def interpolation_noise(a: torch.Tensor, b: torch.Tensor, steps: int, slerp: bool) -> torch.Tensor:
    """(rows, D) endpoints -> (rows * steps, D) points along each path, row by row."""
    t = torch.linspace(0, 1, steps)[None, :, None]
    a, b = a[:, None, :], b[:, None, :]
    if not slerp:
        z = (1 - t) * a + t * b
    else:
        norms = a.norm(dim=-1, keepdim=True) * b.norm(dim=-1, keepdim=True)
        cos = (a * b).sum(-1, keepdim=True) / norms
        omega = torch.arccos(cos.clamp(-1 + 1e-7, 1 - 1e-7))
        z = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)
    return z.reshape(-1, a.shape[-1])


def main(args: list[str]) -> None:
    cfg = parse(args)
    family = load_checkpoint(cfg.ckpt, cfg.device)
    if hasattr(family, "translate"):
        raise UserError(f"sample: {cfg.ckpt} is a CycleGAN, which translates images instead of "
                        "sampling them: python -m ganlab translate ckpt=... input=DIR out=DIR")
    if not hasattr(family, "sample_noise"):
        raise UserError(f"sample: the {family.config.model.family} family does not sample")
    generator = torch.Generator().manual_seed(cfg.seed)
    if cfg.interpolate:
        a, b = family.sample_noise(cfg.n, generator), family.sample_noise(cfg.n, generator)
        z, nrow = interpolation_noise(a.cpu(), b.cpu(), cfg.steps, cfg.slerp), cfg.steps
    else:
        z, nrow = family.sample_noise(cfg.n, generator), cfg.nrow
    out = Path(cfg.out)
    fake = family.generate(z).cpu()
    if family.spec.kind == "points":
        if out.suffix == ".npz":
            np.savez_compressed(out, points=fake.float().numpy())
        else:
            from ganlab.metrics.toy import scatter_image

            centres = torch.tensor(family.spec.modes) if family.spec.modes else None
            save_png(scatter_image(fake, None, centres, family.spec.mode_std), out)
    else:
        images = family.to_uint8(fake)
        if out.suffix == ".npz":
            np.savez_compressed(out, images=images.numpy())
        else:
            save_png(make_grid(images, nrow=nrow or math.ceil(math.sqrt(len(images)))), out)
    print(f"wrote {out} ({len(fake)} samples from step {family.step})")
