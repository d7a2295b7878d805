"""The lectures' claim for paired translation, measured: "an MSE-trained generator is blurry;
an adversarial loss makes it sharp" (a benchmark, not a test). Issue 20 item 7; scripts/blur.py
does the same for autoencoders vs GANs and lends this script its training helper.

    python scripts/bench_blur.py [--steps 600] [--n 2000] [--out bench_blur.json]
                                 [--picture docs/srgan_digits.png]
                                 [--run srresnet=DIR --run srgan=DIR]

Trains model=srresnet (pixel MSE) and model=srgan (content loss on the reference LeNet's
features + 1e-3 adversarial) at 4x (7 -> 28 px) on the 5,000 bundled digits with the same
budget (steps at batch 16, seed 0, the same small generator: model.blocks=6 g_features=32;
D: d_features=32), or takes finished runs (--run NAME=DIR), then measures each final generator
and the bicubic enlargement on held-out digits (the official test split when ../shared has
it, else the 10% ganlab holds out):
- PSNR, SSIM and L1 to the real digits (where MSE should win);
- sharpness: the variance of the Laplacian over the real digits' (1: as sharp as the data);
- classifier FID, precision, recall in the reference LeNet's feature space (realism).
Prints a markdown table and writes the picture: a row per held-out digit,
LR (enlarged, nearest) | bicubic | SRResNet | SRGAN | HR.
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

SMALL = ["model.blocks=6", "model.g_features=32", "model.d_features=32", "model.scale=4"]
MODELS = {"srresnet": ["model=srresnet", *SMALL], "srgan": ["model=srgan", *SMALL]}
SHOWN = 8


def main() -> None:
    from ganlab import load_checkpoint
    from ganlab.data import build_dataset
    from ganlab.data.paired import downsample, upsample
    from ganlab.images import make_grid, save_png
    from ganlab.metrics.fidelity import fidelity
    from ganlab.metrics.reference import classifier_space
    from ganlab.metrics.sharpness import sharpness_ratio

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
    runs = {name: Path(given[name]) if name in given else train(name, overrides, args.steps, work)
            for name, overrides in MODELS.items()}

    families = {name: load_checkpoint(run) for name, run in runs.items()}
    cfg = families["srgan"].config
    heldout = build_dataset(cfg.dataset, work / "data", 0, heldout=True).heldout
    space = classifier_space(cfg.eval, cfg.dataset, work / "data", heldout, 0.2,
                             torch.device("cpu"))
    hr = heldout.x[: args.n]
    lr = downsample(hr, 4)
    outputs = {"bicubic": upsample(lr, 4),
               **{name: family.translate(lr, "AtoB") for name, family in families.items()}}
    rows = []
    for name, images in outputs.items():
        measured = space.measure(images)
        rows.append({"model": name, **fidelity(images, hr),
                     "sharpness": sharpness_ratio(images, hr),
                     "classifier_fid": measured["classifier_fid"],
                     "precision": measured.get("classifier_precision", float("nan")),
                     "recall": measured.get("classifier_recall", float("nan")),
                     "steps": families[name].step if name in families else None})
    columns = [lr[:SHOWN].repeat_interleave(4, -2).repeat_interleave(4, -1),
               outputs["bicubic"][:SHOWN], outputs["srresnet"][:SHOWN], outputs["srgan"][:SHOWN],
               hr[:SHOWN]]
    save_png(make_grid(torch.stack(columns, dim=1).flatten(0, 1), nrow=len(columns)),
             args.picture)
    Path(args.out).write_text(json.dumps({"n": len(hr), "heldout": heldout.source,
                                          "runs": {k: str(v) for k, v in runs.items()},
                                          "rows": rows}, indent=2))
    print(f"# 4x super-resolution (7 -> 28 px) of {len(hr):,} "
          f"{'official test' if official else 'held-out'} digits")
    print("| model | steps | PSNR (dB) | SSIM | L1 | sharpness (real = 1) | classifier FID | "
          "precision | recall |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['model']} | {r['steps'] or '-'} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
              f"{r['l1']:.3f} | {r['sharpness']:.2f} | {r['classifier_fid']:.1f} | "
              f"{r['precision']:.2f} | {r['recall']:.2f} |")
    print(f"wrote {args.out}, {args.picture}; work dir {work}")


if __name__ == "__main__":
    main()
