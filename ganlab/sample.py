"""`python -m ganlab sample ckpt=PATH n=N out=FILE`: draw from a trained model.

FILE.png gets an image grid (numbers=true draws each cell's index on it); FILE.npz gets key
`images`, uint8 (N, C, H, W) in 0..255 (2-D toy models: key `points`, float32 (N, 2); 3-D
shape models (gan3d): key `voxels`, uint8 (N, X, Y, Z) of 0/1, y up, and the .png pictures
them, render=shaded|views|mesh).
interpolate=linear|slerp gives rows of latent interpolations; arithmetic=[[A],[B],[C]] gives
the z arithmetic mean(A) - mean(B) + mean(C) over samples picked by index from the grid of the
same n and seed (Radford et al. 2016). A conditional model (`num_classes > 0`) draws one row
per class, or only class K with label=K. truncation=psi (0 < psi <= 1) draws with the
truncation trick of models that have one (stylegan, biggan): less variety, more typical images.
mixing=true (stylegan) draws the style-mixing figure: a top row of mixing_cols seeds, a left
column of mixing_rows seeds, and in each cell the row seed's styles before layer crossover=
(coarse) with the column seed's after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import MISSING, OmegaConf

from ganlab.checkpoint import load_checkpoint
from ganlab.commandline import parse_options
from ganlab.errors import UserError
from ganlab.families.capabilities import (
    Sampler,
    StyleMixer,
    Translator,
    VolumeSampler,
    check_truncation,
    num_classes,
    require,
    truncation,
)
from ganlab.images import make_grid, save_png
from ganlab.runtime import flush_denormals

PADDING = 2  # make_grid's padding between cells, in pixels
ARITHMETIC_EXAMPLE = "arithmetic=[[3,17,21],[5,9],[40,41]]"
INTERPOLATIONS = {"false": None, "true": "linear", "linear": "linear", "slerp": "slerp"}


@dataclass
class SampleConfig:
    ckpt: str = MISSING  # checkpoint file or run dir
    n: int = 64  # samples; with interpolate, the number of rows
    out: str = "samples.png"  # .png grid or .npz array
    seed: int = 0
    interpolate: str = "false"  # false | linear (= true) | slerp: rows along paths between z
    steps: int = 10  # images per interpolation row
    slerp: bool = False  # old spelling: interpolate=true slerp=true is interpolate=slerp
    nrow: int | None = None  # images per grid row (default: square)
    numbers: bool = False  # draw each cell's index (0..n-1) in its corner
    arithmetic: Any = None  # [[A...], [B...], [C...]]: indices into the grid of this n and seed
    variations: int = 8  # arithmetic: images of G(z + uniform noise) next to G(z)
    jitter: float = 0.25  # arithmetic: that noise is uniform in [-jitter, jitter]
    label: int | None = None  # conditional models: draw only this class
    truncation: float = 1.0  # the truncation trick's psi (stylegan, biggan); 1: none
    mixing: bool = False  # stylegan: the style-mixing figure instead of a grid
    mixing_rows: int = 6  # mixing: seeds of the coarse styles (left column)
    mixing_cols: int = 5  # mixing: seeds of the other styles (top row)
    crossover: int | None = None  # mixing: the first layer of the top row's styles (null: 4)
    render: str = "shaded"  # voxel models (gan3d): shaded | views | mesh (scikit-image)
    device: str = "cpu"


def parse(args: list[str]) -> SampleConfig:
    """The options, checked on their own (what needs the model is checked in check_family)."""
    cfg = OmegaConf.to_object(parse_options(SampleConfig, args, "sample"))
    if cfg.n < 1 or cfg.steps < 2:
        raise UserError("sample: n must be at least 1 and steps at least 2")
    check_truncation(cfg.truncation, "sample")
    if Path(cfg.out).suffix not in (".png", ".npz"):
        raise UserError(f"sample: out must end in .png or .npz, got {cfg.out!r}")
    given = str(cfg.interpolate).lower()
    if given not in INTERPOLATIONS:
        raise UserError(f"sample: interpolate must be false, true, linear or slerp, got "
                        f"{cfg.interpolate!r}")
    if cfg.slerp and given == "linear":
        raise UserError("sample: interpolate=linear and slerp=true contradict each other")
    mode = INTERPOLATIONS[given]
    # the old spelling interpolate=true slerp=true; slerp=true alone still gives a plain grid
    cfg.interpolate = "slerp" if mode and cfg.slerp else mode or "false"
    if cfg.numbers and (cfg.interpolate != "false" or Path(cfg.out).suffix != ".png"):
        raise UserError("sample: numbers=true labels the cells of a .png sample grid (not "
                        "with interpolate or .npz)")
    if cfg.mixing:
        if cfg.interpolate != "false" or cfg.arithmetic is not None or cfg.numbers:
            raise UserError("sample: mixing=true draws its own figure; not with interpolate=, "
                            "arithmetic= or numbers=")
        if Path(cfg.out).suffix != ".png" or cfg.mixing_rows < 1 or cfg.mixing_cols < 1:
            raise UserError("sample: mixing=true writes a .png figure of at least one row and "
                            f"one column; got out={cfg.out!r}, mixing_rows={cfg.mixing_rows}, "
                            f"mixing_cols={cfg.mixing_cols}")
    if cfg.arithmetic is not None:
        if cfg.interpolate != "false":
            raise UserError("sample: choose arithmetic= or interpolate=, not both")
        if Path(cfg.out).suffix != ".png":
            raise UserError("sample: arithmetic writes a .png figure (and its z vectors next "
                            f"to it as .npz); got out={cfg.out!r}")
        if cfg.variations < 0 or cfg.jitter < 0:
            raise UserError("sample: variations and jitter must not be negative")
        cfg.arithmetic = check_groups(cfg.arithmetic, cfg.n)
    return cfg


def check_groups(groups: Any, n: int) -> list[list[int]]:
    """arithmetic=: exactly three non-empty lists of indices in 0..n-1 (A - B + C)."""
    usage = f"e.g. {ARITHMETIC_EXAMPLE} for mean(A) - mean(B) + mean(C)"
    if (not isinstance(groups, list | tuple) or len(groups) != 3
            or not all(isinstance(g, list | tuple) for g in groups)):
        raise UserError(f"sample: arithmetic takes exactly three groups of sample indices, "
                        f"{usage}; got {groups!r}")
    for name, group in zip("ABC", groups, strict=True):
        if not group:
            raise UserError(f"sample: arithmetic group {name} is empty; every group needs at "
                            f"least one sample index, {usage}")
        for i in group:
            if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < n:
                raise UserError(f"sample: arithmetic group {name} has index {i!r}; indices "
                                f"are cells of the grid of n={n} samples, 0..{n - 1}")
    return [list(g) for g in groups]


def check_family(family, cfg: SampleConfig) -> None:
    """What the options need from the model: sampling, classes for label=, images for
    numbers= and arithmetic=."""
    if isinstance(family, Translator):
        raise UserError(f"sample: {cfg.ckpt} is a CycleGAN, which translates images instead of "
                        "sampling them: python -m ganlab translate ckpt=... input=DIR out=DIR")
    require(family, Sampler, "sample: this model does not draw samples", cfg.ckpt)
    if cfg.mixing:
        require(family, StyleMixer, "sample: mixing=true needs a style-based generator "
                "(model=stylegan)", cfg.ckpt)
        if cfg.crossover is not None and not 1 <= cfg.crossover < family.num_styles:
            raise UserError(f"sample: crossover={cfg.crossover}: this generator has "
                            f"{family.num_styles} style layers, so the crossover must be in "
                            f"1..{family.num_styles - 1}")
    classes = num_classes(family)
    if cfg.label is not None and classes == 0:
        raise UserError(f"sample: label={cfg.label} needs a conditional model; {cfg.ckpt} "
                        "generates without classes")
    if cfg.label is not None and not 0 <= cfg.label < classes:
        raise UserError(f"sample: label={cfg.label} is not a class of this model "
                        f"(0..{classes - 1})")
    if cfg.render != "shaded" and not isinstance(family, VolumeSampler):
        raise UserError(f"sample: render={cfg.render} pictures 3-D shapes (model=gan3d); "
                        f"{cfg.ckpt} draws images or points")
    if isinstance(family, VolumeSampler):
        from ganlab.voxel_render import check_style

        check_style(cfg.render)
        if cfg.arithmetic is not None or cfg.numbers:
            raise UserError("sample: arithmetic= and numbers= need an image model; this one "
                            "draws 3-D shapes")
    if family.spec.kind == "points" and (cfg.arithmetic is not None or cfg.numbers):
        raise UserError("sample: arithmetic= and numbers= need an image model; this one "
                        "draws 2-D points")
    if cfg.arithmetic is not None and classes and cfg.label is None:
        raise UserError("sample: arithmetic on a conditional model needs label=K "
                        f"(0..{classes - 1}), the class of every image, as on the grid drawn "
                        "with that label")
    if classes and cfg.label is None and cfg.nrow is not None and cfg.interpolate == "false":
        raise UserError("sample: a conditional model's grid has one row per class; nrow= "
                        "applies with label=K")


@torch.no_grad()
def generate(family, z: torch.Tensor, labels: torch.Tensor | int | None = None) -> torch.Tensor:
    """G(z) on the CPU; a conditional family also gets labels (one int: every image)."""
    if not num_classes(family):
        return family.generate(z).cpu()
    if isinstance(labels, int):
        labels = torch.full((len(z),), labels, dtype=torch.int64)
    return family.generate(z, labels=labels).cpu()  # the family moves them to its device


def interpolation_noise(a: torch.Tensor, b: torch.Tensor, steps: int, slerp: bool) -> torch.Tensor:
    """(rows, D) endpoints -> (rows * steps, D) points along each path, row by row: straight
    lines, or with slerp great circles (norms kept when |a| = |b|, exact endpoints)."""
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


def grid_samples(family, cfg: SampleConfig, generator: torch.Generator):
    """The plain grid: G of sample_noise(n) (cell i is z[i]); for a conditional model without
    label=, one row per class with the same n // num_classes column noises in every row.
    Returns (samples, labels or None, nrow)."""
    classes = num_classes(family)
    if classes and cfg.label is None:
        columns = max(1, cfg.n // classes)
        z = family.sample_noise(columns, generator).repeat(classes, 1)
        labels = torch.arange(classes).repeat_interleave(columns)
        return generate(family, z, labels), labels, columns
    z = family.sample_noise(cfg.n, generator)
    labels = torch.full((cfg.n,), cfg.label, dtype=torch.int64) if classes else None
    return generate(family, z, labels), labels, cfg.nrow


def interpolation_samples(family, cfg: SampleConfig, generator: torch.Generator):
    """n rows of `steps` images between two random z each; a conditional model draws row r in
    class label= or else r % num_classes. Returns (samples, labels or None, nrow)."""
    a, b = family.sample_noise(cfg.n, generator), family.sample_noise(cfg.n, generator)
    z = interpolation_noise(a.cpu(), b.cpu(), cfg.steps, cfg.interpolate == "slerp")
    labels = None
    if classes := num_classes(family):
        rows = torch.arange(cfg.n) % classes if cfg.label is None else torch.full(
            (cfg.n,), cfg.label)
        labels = rows.to(torch.int64).repeat_interleave(cfg.steps)
    return generate(family, z, labels), labels, cfg.steps


def draw_numbers(grid: torch.Tensor, cell: tuple[int, int], nrow: int,
                 texts: dict[int, str]) -> torch.Tensor:
    """Write texts[i] in white on a black box in the top-left corner of cell i of a make_grid
    grid (uint8 (C, H, W), cells of size cell = (h, w), nrow per row); same size back."""
    from PIL import Image, ImageDraw, ImageFont

    array = grid.numpy()
    pil = Image.fromarray(array[0] if grid.shape[0] == 1 else array.transpose(1, 2, 0))
    draw, font = ImageDraw.Draw(pil), ImageFont.load_default()
    h, w = cell
    for i, text in texts.items():
        x, y = PADDING + (i % nrow) * (w + PADDING), PADDING + (i // nrow) * (h + PADDING)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        draw.rectangle((x, y, x + right - left + 1, y + bottom - top + 1), fill="black")
        draw.text((x + 1 - left, y + 1 - top), text, fill="white", font=font)
    out = torch.from_numpy(np.asarray(pil).copy())
    return out[None] if out.ndim == 2 else out.permute(2, 0, 1).contiguous()


@dataclass
class Arithmetic:
    """z = mean(A) - mean(B) + mean(C) and what was drawn: z (n, D) is the grid's batch."""

    z: torch.Tensor
    groups: list[list[int]]
    means: torch.Tensor  # (3, D): mean z of A, B, C
    result: torch.Tensor  # (D,)
    variations: torch.Tensor  # (variations, D): result + uniform noise
    images: torch.Tensor  # G of: every group's samples, the 3 means, result, variations
    figure: torch.Tensor  # uint8 (C, H, W), see arithmetic_figure


@torch.no_grad()
def latent_arithmetic(family, cfg: SampleConfig, generator: torch.Generator) -> Arithmetic:
    """Re-draw the grid's z batch (same n and seed), average each group's z and add them up;
    G(result + uniform(-jitter, jitter) noise) shows how robust the result is."""
    z = family.sample_noise(cfg.n, generator).cpu()
    groups = cfg.arithmetic
    means = torch.stack([z[g].mean(dim=0) for g in groups])
    result = means[0] - means[1] + means[2]
    noise = torch.rand(cfg.variations, z.shape[1], generator=generator).mul_(2).sub_(1)
    variations = result + cfg.jitter * noise
    chosen = torch.cat([torch.tensor(g) for g in groups])
    images = generate(family, torch.cat([z[chosen], means, result[None], variations]), cfg.label)
    figure, texts = arithmetic_figure(family.to_uint8(images), groups, cfg.variations)
    if cfg.numbers:
        columns = arithmetic_columns(groups, cfg.variations)
        figure = draw_numbers(figure, tuple(images.shape[-2:]), columns, texts)
    return Arithmetic(z, groups, means, result, variations, images, figure)


def arithmetic_columns(groups: list[list[int]], variations: int) -> int:
    """Columns of the arithmetic figure: the longest row of samples plus the G(mean) column."""
    return max(variations, *(len(g) for g in groups)) + 1


def arithmetic_figure(images: torch.Tensor, groups: list[list[int]], variations: int):
    """uint8 images in latent_arithmetic's order -> (figure, {cell: index text}). Four rows of
    arithmetic_columns cells: rows A, B, C show the group's samples from the left and G(mean z)
    in the last column; the last row shows the variations from the left and G(A - B + C) in
    the last column; white cells fill the gaps."""
    columns = arithmetic_columns(groups, variations)
    blank = torch.full_like(images[0], 255)
    cells, texts, k = [blank] * (4 * columns), {}, 0
    for row, group in enumerate(groups):
        for col, index in enumerate(group):
            cells[row * columns + col] = images[k]
            texts[row * columns + col] = str(index)
            k += 1
    for row in range(3):
        cells[row * columns + columns - 1] = images[k + row]
    result = images[k + 3]
    for col in range(variations):
        cells[3 * columns + col] = images[k + 4 + col]
    cells[4 * columns - 1] = result
    return make_grid(torch.stack(cells), nrow=columns, padding=PADDING), texts


def write_arithmetic(result: Arithmetic, out: Path) -> None:
    """The figure as out (.png) and the z vectors as out with suffix .npz."""
    save_png(result.figure, out)
    np.savez_compressed(out.with_suffix(".npz"), z=result.z.numpy(), means=result.means.numpy(),
                        result=result.result.numpy(), variations=result.variations.numpy(),
                        **{f"group_{name}": np.array(g)
                           for name, g in zip("abc", result.groups, strict=True)})


def write_samples(family, fake: torch.Tensor, labels: torch.Tensor | None, nrow: int | None,
                  out: Path, numbers: bool, render: str = "shaded") -> None:
    """Samples to out: .npz arrays (with `labels` for a conditional model), a .png grid (with
    each cell's index when numbers), or for 2-D toys a scatter plot over the real modes."""
    if isinstance(family, VolumeSampler):  # .npz: `voxels`, uint8 0/1; .png: a rendering
        from ganlab.voxel_render import write_volumes

        write_volumes(family.to_uint8(fake), out, nrow, render)
        return
    if family.spec.kind == "points":
        if out.suffix == ".npz":
            np.savez_compressed(out, points=fake.float().numpy())
        else:
            from ganlab.metrics.toy import scatter_image

            centres = torch.tensor(family.spec.modes) if family.spec.modes else None
            save_png(scatter_image(fake, None, centres, family.spec.mode_std), out)
        return
    images = family.to_uint8(fake)
    if out.suffix == ".npz":
        extra = {} if labels is None else {"labels": labels.numpy()}
        np.savez_compressed(out, images=images.numpy(), **extra)
        return
    nrow = nrow or math.ceil(math.sqrt(len(images)))
    grid = make_grid(images, nrow=nrow, padding=PADDING)
    if numbers:
        grid = draw_numbers(grid, tuple(images.shape[-2:]), nrow,
                            {i: str(i) for i in range(len(images))})
    save_png(grid, out)


def main(args: list[str]) -> None:
    cfg = parse(args)
    flush_denormals()  # as in training: denormals slow CPU inference up to 100x
    family = load_checkpoint(cfg.ckpt, cfg.device)
    check_family(family, cfg)
    with truncation(family, cfg.truncation, cfg.ckpt, "sample"):
        draw(family, cfg)


def draw(family, cfg: SampleConfig) -> None:
    generator = torch.Generator().manual_seed(cfg.seed)
    out = Path(cfg.out)
    if cfg.mixing:
        from ganlab.families.stylegan import style_mixing_figure

        crossover = family.default_crossover if cfg.crossover is None else cfg.crossover
        z_cols = family.sample_noise(cfg.mixing_cols, generator)
        z_rows = family.sample_noise(cfg.mixing_rows, generator)
        save_png(style_mixing_figure(family, z_rows, z_cols, crossover), out)
        print(f"wrote {out} (style mixing from step {family.step}: left column layers "
              f"0..{crossover - 1}, top row layers {crossover}..{family.num_styles - 1})")
        return
    if cfg.arithmetic is not None:
        result = latent_arithmetic(family, cfg, generator)
        write_arithmetic(result, out)
        a, b, c = (len(g) for g in cfg.arithmetic)
        print(f"wrote {out} (rows: A {a}, B {b}, C {c} samples and G(mean z); last row "
              f"{cfg.variations} variations and G(A - B + C)) and {out.with_suffix('.npz')}; "
              f"|A - B + C| = {float(result.result.norm()):.3f}, step {family.step}")
        return
    if cfg.interpolate != "false":
        fake, labels, nrow = interpolation_samples(family, cfg, generator)
    else:
        fake, labels, nrow = grid_samples(family, cfg, generator)
    write_samples(family, fake, labels, nrow, out, cfg.numbers, cfg.render)
    psi = f", truncation {cfg.truncation:g}" if cfg.truncation != 1 else ""
    print(f"wrote {out} ({len(fake)} samples from step {family.step}{psi})")
