"""`python -m ganlab translate ckpt=PATH input=DIR|FILE out=DIR [direction=AtoB|BtoA]`.

Applies a trained CycleGAN or pix2pix generator to a folder of images (or one image) and writes
each translation under the same file name in `out`; `sheet=FILE.png` also writes a side-by-side
comparison (input | translation). Inputs are resized to the training size (as the test split
is) unless `size=N` asks for another size the generator can take. pix2pix translates one way
(AtoB: its input to its output); a colorize model reads each input as gray (BT.601 luma). A
SPADE model reads label maps (palette or gray PNGs of class indices, resized with nearest
neighbours; ganlab.data.masks) and the sheet shows them in colour. srgan and srresnet read
each input at 1/scale of the output size (a low-resolution image of that size as it is, a
larger one shrunk bicubically with antialiasing) and write it upscaled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import MISSING
from PIL import Image

from ganlab.checkpoint import load_checkpoint
from ganlab.commandline import parse_options
from ganlab.data.imagefiles import IMAGE_SUFFIXES, decode, list_images
from ganlab.errors import UserError
from ganlab.families.capabilities import Translator, require
from ganlab.images import make_grid, save_png
from ganlab.runtime import flush_denormals

log = logging.getLogger("ganlab")

DIRECTIONS = ("AtoB", "BtoA")
PAIRS_PER_SHEET_ROW = 4


@dataclass
class TranslateConfig:
    ckpt: str = MISSING  # a cyclegan, pix2pix or spade checkpoint file or run dir
    input: str = MISSING  # an image file or a folder of images (spade: of label maps)
    out: str = MISSING  # folder for the translations (same file names as the inputs)
    direction: str = "AtoB"  # AtoB | BtoA (pix2pix: AtoB only)
    size: int | None = None  # translate at this square size; default: the training size
    sheet: str | None = None  # also write input | translation pairs to this .png
    sheet_max: int = 16  # pairs on the sheet
    batch_size: int = 8
    device: str = "cpu"


def parse(args: list[str]) -> TranslateConfig:
    cfg = parse_options(TranslateConfig, args, "translate")
    if cfg.direction not in DIRECTIONS:
        raise UserError(f"translate: direction={cfg.direction} is not one of: "
                        f"{', '.join(DIRECTIONS)}")
    if cfg.batch_size < 1 or cfg.sheet_max < 1 or (cfg.size is not None and cfg.size < 1):
        raise UserError("translate: batch_size, sheet_max and size must be at least 1")
    if cfg.sheet is not None and Path(cfg.sheet).suffix != ".png":
        raise UserError(f"translate: sheet must end in .png, got {cfg.sheet!r}")
    return cfg  # type: ignore[return-value]


def inputs(path: Path) -> tuple[Path, list[str]]:
    """The folder and the image file names to translate."""
    if path.is_dir():
        names = list_images(path)
        if not names:
            raise UserError(f"translate: {path} holds no images "
                            f"({', '.join(IMAGE_SUFFIXES)})")
        return path, names
    if path.is_file():
        return path.parent, [path.name]
    raise UserError(f"translate: input {path} does not exist")


def input_channels(family) -> int:
    """The channels a translator reads: its own `input_channels` where it declares them (a
    pix2pix model that colourises reads gray), else the training data's."""
    return int(getattr(family, "input_channels", family.spec.shape[0]))


def check_direction(family, direction: str) -> None:
    """A translator that learnt one direction only (pix2pix) says so before any work."""
    directions = getattr(family, "directions", DIRECTIONS)
    if direction not in directions:
        raise UserError(f"translate: direction={direction}: this {family.config.model.name} "
                        f"model translates {' and '.join(directions)} only (its input to its "
                        "output); train with dataset.direction=BtoA for the other way")


def write_image(image: torch.Tensor, path: Path) -> None:
    """uint8 (C, H, W) to a file whose extension picks the format."""
    array = image.permute(1, 2, 0).cpu().numpy()
    picture = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    options = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    picture.save(path, **options)


def main(args: list[str]) -> None:
    cfg = parse(args)
    flush_denormals()  # as in training: denormals slow CPU inference up to 100x
    family = load_checkpoint(cfg.ckpt, cfg.device)
    require(family, Translator, "translate needs a cyclegan, pix2pix, spade, srgan or srresnet "
            "checkpoint", cfg.ckpt)
    check_direction(family, cfg.direction)
    folder, names = inputs(Path(cfg.input).expanduser())
    out = Path(cfg.out).expanduser()
    if out.resolve() == folder.resolve():
        raise UserError(f"translate: out={out} is the input folder; the translations would "
                        "replace the originals")
    channels, size = input_channels(family), cfg.size or family.spec.shape[-1]
    family.check_size(size, "size")
    out.mkdir(parents=True, exist_ok=True)

    written, skipped, shown = 0, [], []
    for start in range(0, len(names), cfg.batch_size):
        batch_names, arrays = [], []
        for name in names[start : start + cfg.batch_size]:
            # a family with inputs of its own kind reads them (SPADE: label maps)
            array = (family.read_input(folder / name, size) if hasattr(family, "read_input")
                     else decode(folder / name, size, channels=channels, resample=Image.BICUBIC))
            if array is None:
                skipped.append(name)
                continue
            batch_names.append(name)
            arrays.append(torch.from_numpy(array).permute(2, 0, 1))
        if not arrays:
            continue
        real = torch.stack(arrays)
        fake = family.translate(real, cfg.direction).cpu()
        for name, image in zip(batch_names, fake, strict=True):
            write_image(image, out / name)
        written += len(batch_names)
        room = cfg.sheet_max - len(shown) // 2
        if hasattr(family, "show_input"):  # label maps: in colour
            real = family.show_input(real)
        # gray inputs (colorize) beside colour outputs: repeated to the outputs' channels
        real = real.expand(-1, fake.shape[1], -1, -1) if real.shape[1] == 1 else real
        for pair in zip(real[:room], fake[:room], strict=True):
            shown.extend(pair)
    if skipped:
        log.warning("translate: skipped %d unreadable image(s) (first: %s)", len(skipped),
                    folder / skipped[0])
    if not written:
        raise UserError(f"translate: none of the {len(names)} image(s) in {folder} could be read")
    print(f"wrote {written} {cfg.direction} translation(s) at {size} px to {out}"
          f"{f'; skipped {len(skipped)} unreadable' if skipped else ''}")
    if cfg.sheet is not None:
        pairs = len(shown) // 2
        save_png(make_grid(torch.stack(shown), nrow=2 * min(PAIRS_PER_SHEET_ROW, pairs)),
                 cfg.sheet)
        print(f"wrote {cfg.sheet} ({pairs} input | translation pairs)")
