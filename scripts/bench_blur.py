"""The lectures' claim for paired translation, measured: "an MSE-trained generator is blurry;
an adversarial loss makes it sharp" (a benchmark, not a test). Issue 20 item 7; scripts/blur.py
does the same for autoencoders vs GANs and lends this script its training helper.

    python scripts/bench_blur.py [--experiments sr inpaint] [--steps 600] [--n 2000]
                                 [--out bench_blur.json] [--picture bench_blur.png]
                                 [--run srresnet=DIR --run srgan=DIR --run l1=DIR ...]

Two experiments, each training its models on the 5,000 bundled digits with the same budget and
seed 0 (or taking finished runs: --run NAME=DIR), then measuring each final generator and the
trivial baseline on held-out digits (the official test split when ../shared has it, else the
10% ganlab holds out):
- sr: model=srresnet (pixel MSE) against model=srgan (content loss on the reference LeNet's
  features + 1e-3 adversarial) at 4x (7 -> 28 px), batch 16, the same small generator
  (model.blocks=6 g_features=32; D: d_features=32); baseline: the bicubic enlargement.
- inpaint: pix2pix filling a square hole of half the side in 32-px digits, L1 alone
  (model.lambda_gan=0) against L1 + GAN (the paper's lambda 100 and 1), the same U-Net
  (g_features=32, d_features=32), batch 16; baseline: the holed input itself.
For each: PSNR, SSIM and L1 to the real digits (where the pixel loss should win); sharpness,
the variance of the Laplacian over the real digits' (1: as sharp as the data); classifier FID,
precision and recall in the reference LeNet's feature space (realism). Prints a markdown table
per experiment and writes a picture per experiment (<picture stem>_<experiment>.png): a row per
held-out digit, input | baseline | the models | real.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchdata import with_mnist_test_split
from blur import train

SR = ["model.blocks=6", "model.g_features=32", "model.d_features=32", "model.scale=4"]
INPAINT = ["model=pix2pix", "model.task=inpaint", "dataset.image_size=32", "model.g_features=32",
           "model.d_features=32", "trainer.batch_size=16"]
EXPERIMENTS = {
    "sr": {"models": {"srresnet": ["model=srresnet", *SR], "srgan": ["model=srgan", *SR]},
           "title": "4x super-resolution (7 -> 28 px)", "baseline": "bicubic"},
    "inpaint": {"models": {"l1": [*INPAINT, "model.lambda_gan=0"], "l1+gan": INPAINT},
                "title": "pix2pix inpainting of a 16-px square hole in 32-px digits",
                "baseline": "holed input"},
}
SHOWN = 8


def inputs_and_targets(experiment: str, family, heldout, n: int):
    """uint8 held-out inputs, the baseline's answer for them, and the real targets."""
    if experiment == "sr":
        from ganlab.data.paired import downsample, upsample

        hr = heldout.x[:n]
        lr = downsample(hr, 4)
        return lr, upsample(lr, 4), hr
    family.use_heldout(heldout)  # the holes ganlab's own evaluation uses (a fixed seed)
    return family.test_a[:n], family.test_a[:n], family.test_b[:n]


def measure(experiment: str, runs: dict[str, Path], n: int, work: Path, picture: str):
    from ganlab import load_checkpoint
    from ganlab.data import build_dataset
    from ganlab.images import make_grid, save_png
    from ganlab.metrics.fidelity import fidelity
    from ganlab.metrics.reference import classifier_space
    from ganlab.metrics.sharpness import sharpness_ratio

    families = {name: load_checkpoint(run) for name, run in runs.items()}
    first = next(iter(families.values()))
    cfg = first.config
    heldout = build_dataset(cfg.dataset, work / "data", 0, heldout=True).heldout
    space = classifier_space(cfg.eval, cfg.dataset, work / "data", heldout, 0.2,
                             torch.device("cpu"))
    inputs, baseline, real = inputs_and_targets(experiment, first, heldout, n)
    outputs = {EXPERIMENTS[experiment]["baseline"]: baseline,
               **{name: family.translate(inputs, "AtoB") for name, family in families.items()}}
    rows = []
    for name, images in outputs.items():
        measured = space.measure(images)
        rows.append({"model": name, **fidelity(images, real),
                     "sharpness": sharpness_ratio(images, real),
                     "classifier_fid": measured["classifier_fid"],
                     "precision": measured.get("classifier_precision", float("nan")),
                     "recall": measured.get("classifier_recall", float("nan")),
                     "steps": families[name].step if name in families else None})
    shown = inputs[:SHOWN]
    if shown.shape[-1] != real.shape[-1]:  # low-resolution inputs, enlarged by repetition
        factor = real.shape[-1] // shown.shape[-1]
        shown = shown.repeat_interleave(factor, -2).repeat_interleave(factor, -1)
    columns = [shown, *(images[:SHOWN] for images in outputs.values()), real[:SHOWN]]
    save_png(make_grid(torch.stack(columns, dim=1).flatten(0, 1), nrow=len(columns)), picture)
    return rows, heldout.source, len(real)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", nargs="+", choices=list(EXPERIMENTS),
                        default=list(EXPERIMENTS))
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--n", type=int, default=2000, help="held-out digits measured")
    parser.add_argument("--run", action="append", default=[], metavar="NAME=DIR",
                        help="a finished run to measure instead of training it")
    parser.add_argument("--out", default="bench_blur.json")
    parser.add_argument("--picture", default="bench_blur.png")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ganlab-bench-blur-"))
    official = with_mnist_test_split(work / "data")
    given = dict(item.split("=", 1) for item in args.run)
    results = {}
    for experiment in args.experiments:
        models = EXPERIMENTS[experiment]["models"]
        runs = {name: Path(given[name]) if name in given
                else train(name, overrides, args.steps, work)
                for name, overrides in models.items()}
        picture = str(Path(args.picture).with_name(
            f"{Path(args.picture).stem}_{experiment}{Path(args.picture).suffix}"))
        rows, source, measured = measure(experiment, runs, args.n, work, picture)
        results[experiment] = {"runs": {k: str(v) for k, v in runs.items()}, "rows": rows,
                               "heldout": source, "picture": picture}
        print(f"# {EXPERIMENTS[experiment]['title']}: {measured:,} "
              f"{'official test' if official else 'held-out'} digits")
        print("| model | steps | PSNR (dB) | SSIM | L1 | sharpness (real = 1) | "
              "classifier FID | precision | recall |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in rows:
            print(f"| {r['model']} | {r['steps'] or '-'} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
                  f"{r['l1']:.3f} | {r['sharpness']:.2f} | {r['classifier_fid']:.1f} | "
                  f"{r['precision']:.2f} | {r['recall']:.2f} |")
        print(f"wrote {picture}")
    Path(args.out).write_text(json.dumps({"n": args.n, "experiments": results}, indent=2))
    print(f"wrote {args.out}; work dir {work}")


if __name__ == "__main__":
    main()
