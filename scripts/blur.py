"""The lectures' claim, measured: "an autoencoder trained with MSE is blurry, a GAN is sharp"
(a benchmark, not a test).

    python scripts/blur.py [--steps 2000] [--n 2000] [--models ae vae dcgan vqvae pix2pix]
                           [--run NAME=DIR ...] [--out blur.json] [--picture blur.png]

Trains model=ae (squared error), model=vae, model=dcgan and model=vqvae (the first half of its
steps the VQ-VAE, the second its prior) on the 5,000 bundled digits with the same budget
(steps at batch 64, seed 0), and pix2pix's L1 + GAN inpainting a square hole in 32-px digits
(batch 16; scripts/bench_blur.py's inpaint run can be given with --run pix2pix=DIR), then
measures on the official test split (copied from ../shared when there, else the 10% ganlab
holds out): the autoencoders' reconstructions of held-out digits, pix2pix's completions of
them with their hole, and the VAE's, GAN's and VQ-VAE's samples, each with
- sharpness: the variance of the Laplacian over the real digits' (1: as sharp as the data);
- classifier FID, precision and recall in the reference LeNet's feature space.
Prints a markdown table and writes a picture: real digits, then a row per model.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchdata import with_mnist_test_split

# pix2pix's U-Net takes sides that are powers of two: the digits at 32 px
PIX2PIX_INPAINT = ["model=pix2pix", "model.task=inpaint", "dataset.image_size=32",
                   "model.g_features=32", "model.d_features=32", "trainer.batch_size=16"]
MODELS = {"ae": ["model=ae"], "vae": ["model=vae"], "dcgan": ["model=dcgan"],
          "vqvae": ["model=vqvae"], "pix2pix": PIX2PIX_INPAINT}
SHOWN = 12


def train(name: str, overrides: list[str], steps: int, work: Path) -> Path:
    run = work / name
    command = [sys.executable, "-m", "ganlab", "train", *overrides, "dataset=mnist",
               "dataset.source=bundled", f"trainer.max_steps={steps}", "trainer.seed=0",
               "eval.every=0", "log.progress=false", "device=cpu", f"data_dir={work / 'data'}",
               f"hydra.run.dir={run}"]
    subprocess.run(command, check=True, capture_output=True)
    return run


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """[0, 1] images at size x size px (antialiased), to sit in one grid."""
    if images.shape[-1] == size:
        return images
    return torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear",
                                           antialias=True, align_corners=False).clamp(0, 1)


@torch.no_grad()
def images_of(family, heldout, n: int, data_dir: Path) -> dict[str, tuple[torch.Tensor,
                                                                           torch.Tensor]]:
    """What each model makes, as [0, 1] images, each with the real images to compare its
    sharpness with: reconstructions and/or samples (against the held-out digits), or a
    translator's outputs for its own held-out inputs (against their targets, at its size)."""
    from ganlab.data import build_dataset
    from ganlab.families.capabilities import Autoencoder, HeldoutTranslations, Sampler
    from ganlab.images import UNIT, to_float
    from ganlab.metrics.samples import draw_images

    real = to_float(heldout.x[:n], UNIT)
    out = {}
    if isinstance(family, Autoencoder):
        out["reconstructions"] = (torch.cat([family.decode(family.encode(real[i : i + 500]))
                                             for i in range(0, len(real), 500)]), real)
    if isinstance(family, Sampler):
        out["samples"] = (to_float(draw_images(family, n, seed=2), UNIT), real)
    if isinstance(family, HeldoutTranslations):  # the same test digits, at the translator's size
        own = build_dataset(family.config.dataset, data_dir, 0, heldout=True).heldout
        family.use_heldout(own)
        inputs, targets = family.heldout_pairs()["AtoB"]
        out["completions"] = (to_float(family.translate(inputs[:n], "AtoB"), UNIT),
                              to_float(targets[:n], UNIT))
    return out


def main() -> None:
    from ganlab import load_checkpoint
    from ganlab.data import build_dataset
    from ganlab.images import UNIT, make_grid, save_png, to_float, to_uint8
    from ganlab.metrics.reference import classifier_space
    from ganlab.metrics.sharpness import sharpness_ratio

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--n", type=int, default=2000, help="held-out digits and samples")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--run", action="append", default=[], metavar="NAME=DIR",
                        help="a finished run to measure instead of training it")
    parser.add_argument("--out", default="blur.json")
    parser.add_argument("--picture", default="blur.png")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ganlab-blur-"))
    official = with_mnist_test_split(work / "data")
    given = dict(item.split("=", 1) for item in args.run)
    runs = {name: Path(given[name]) if name in given
            else train(name, MODELS[name], args.steps, work) for name in args.models}

    first = load_checkpoint(next(iter(runs.values())))
    cfg = first.config
    heldout = build_dataset(cfg.dataset, work / "data", 0, heldout=True).heldout
    space = classifier_space(cfg.eval, cfg.dataset, work / "data", heldout, 0.2,
                             torch.device("cpu"))
    real = heldout.x[: args.n]
    rows, pictures = [], [to_float(real[:SHOWN], UNIT)]
    for name, run in runs.items():
        family = load_checkpoint(run)
        for kind, (images, against) in images_of(family, heldout, args.n,
                                                 work / "data").items():
            measured = space.measure(images)
            rows.append({"model": name, "images": kind, "steps": family.step,
                         "batch": int(family.config.trainer.batch_size),
                         "sharpness": sharpness_ratio(images, against),
                         "classifier_fid": measured["classifier_fid"],
                         "precision": measured.get("classifier_precision", float("nan")),
                         "recall": measured.get("classifier_recall", float("nan"))})
            pictures.append(resize(images[:SHOWN], real.shape[-1]))
    save_png(make_grid(to_uint8(torch.cat(pictures), UNIT), nrow=SHOWN), args.picture)
    Path(args.out).write_text(json.dumps({"steps": args.steps, "n": args.n,
                                          "heldout": heldout.source, "rows": rows}, indent=2))
    print(f"# trained on the bundled digits; measured on {len(real):,} "
          f"{'official test' if official else 'held-out'} digits")
    print("| model | images | steps x batch | sharpness (real = 1) | classifier FID | "
          "precision | recall |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['model']} | {r['images']} | {r['steps']:,} x {r['batch']} | "
              f"{r['sharpness']:.2f} | "
              f"{r['classifier_fid']:.1f} | {r['precision']:.2f} | {r['recall']:.2f} |")
    print(f"wrote {args.out}, {args.picture}; runs in {work}")


if __name__ == "__main__":
    main()
