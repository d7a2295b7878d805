"""The lectures' claim, measured: "an autoencoder trained with MSE is blurry, a GAN is sharp"
(a benchmark, not a test).

    python scripts/blur.py [--steps 2000] [--n 2000] [--models ae vae dcgan vqvae]
                           [--out blur.json] [--picture blur.png]

Trains model=ae (squared error), model=vae, model=dcgan and model=vqvae (the first half of its
steps the VQ-VAE, the second its prior) on the 5,000 bundled digits with the same budget
(steps at batch 64, seed 0), then measures on the official test split (copied from ../shared
when there, else the 10% ganlab holds out): the autoencoders' reconstructions of held-out
digits and the VAE's, GAN's and VQ-VAE's samples, each with
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

MODELS = {"ae": ["model=ae"], "vae": ["model=vae"], "dcgan": ["model=dcgan"],
          "vqvae": ["model=vqvae"]}
SHOWN = 12


def train(name: str, overrides: list[str], steps: int, work: Path) -> Path:
    run = work / name
    command = [sys.executable, "-m", "ganlab", "train", *overrides, "dataset=mnist",
               "dataset.source=bundled", f"trainer.max_steps={steps}", "trainer.seed=0",
               "eval.every=0", "log.progress=false", "device=cpu", f"data_dir={work / 'data'}",
               f"hydra.run.dir={run}"]
    subprocess.run(command, check=True, capture_output=True)
    return run


@torch.no_grad()
def images_of(family, heldout: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
    """What each model makes, as [0, 1] images: reconstructions and/or samples."""
    from ganlab.families.capabilities import Autoencoder, Sampler
    from ganlab.images import UNIT, to_float
    from ganlab.metrics.samples import draw_images

    out = {}
    if isinstance(family, Autoencoder):
        x = to_float(heldout[:n], UNIT)
        out["reconstructions"] = torch.cat([family.decode(family.encode(x[i : i + 500]))
                                            for i in range(0, len(x), 500)])
    if isinstance(family, Sampler):
        out["samples"] = to_float(draw_images(family, n, seed=2), UNIT)
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
    parser.add_argument("--out", default="blur.json")
    parser.add_argument("--picture", default="blur.png")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ganlab-blur-"))
    official = with_mnist_test_split(work / "data")
    runs = {name: train(name, MODELS[name], args.steps, work) for name in args.models}

    first = load_checkpoint(next(iter(runs.values())))
    cfg = first.config
    heldout = build_dataset(cfg.dataset, work / "data", 0, heldout=True).heldout
    space = classifier_space(cfg.eval, cfg.dataset, work / "data", heldout, 0.2,
                             torch.device("cpu"))
    real = heldout.x[: args.n]
    rows, pictures = [], [to_float(real[:SHOWN], UNIT)]
    for name, run in runs.items():
        family = load_checkpoint(run)
        for kind, images in images_of(family, real, args.n).items():
            measured = space.measure(images)
            rows.append({"model": name, "images": kind,
                         "sharpness": sharpness_ratio(images, real),
                         "classifier_fid": measured["classifier_fid"],
                         "precision": measured.get("classifier_precision", float("nan")),
                         "recall": measured.get("classifier_recall", float("nan"))})
            pictures.append(images[:SHOWN])
    save_png(make_grid(to_uint8(torch.cat(pictures), UNIT), nrow=SHOWN), args.picture)
    Path(args.out).write_text(json.dumps({"steps": args.steps, "n": args.n,
                                          "heldout": heldout.source, "rows": rows}, indent=2))
    print(f"# {args.steps} steps at batch 64 on the bundled digits; measured on "
          f"{len(real):,} {'official test' if official else 'held-out'} digits")
    print("| model | images | sharpness (real = 1) | classifier FID | precision | recall |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['model']} | {r['images']} | {r['sharpness']:.2f} | "
              f"{r['classifier_fid']:.1f} | {r['precision']:.2f} | {r['recall']:.2f} |")
    print(f"wrote {args.out}, {args.picture}; runs in {work}")


if __name__ == "__main__":
    main()
