"""The GAN generators side by side on one budget (a benchmark, not a test).

    python scripts/bench_generators.py [--steps 2000] [--models dcgan,cgan,biggan,stylegan,progan]
                                       [--inception-n 2000] [--grids docs/] [--device cpu]
                                       [--out bench_generators.json]

Each model trains --steps steps on the 5,000 bundled MNIST digits at 32 px with its own
defaults (batch size included), then is measured the same way: the run's final evaluation in
the reference classifier's space (10,000 samples: classifier FID, class coverage, precision,
recall) against the held-out digits (the official test split from ../shared/data/mnist-t10k
when present), and Inception FID / precision / recall of --inception-n samples against as many
held-out digits (the real network: the [fid] extra). Prints one Markdown table row per model
with the time per step, and with --grids writes a 64-sample grid per model there. Each model's
metrics go to --out as soon as it is measured, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_quality import train
from benchdata import with_mnist_test_split

COMMON = ["dataset=mnist", "dataset.source=bundled", "dataset.image_size=32", "log.progress=false",
          "log.sample_every=0", "eval.every=0", "eval.inception=off"]
# what a model needs beyond its defaults to train on 32-px digits
MODELS: dict[str, list[str]] = {
    "dcgan": ["model=dcgan"],
    "cgan": ["model=cgan"],
    "biggan": ["model=biggan"],
    "stylegan": ["model=stylegan"],
    "progan": ["model=progan"],
}
CLASSIFIER = ("classifier_fid", "class_coverage", "classifier_precision", "classifier_recall")
INCEPTION = ("fid", "precision", "recall")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--inception-n", type=int, default=2000)
    parser.add_argument("--grids", help="a folder for one 64-sample grid per model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="bench_generators.json")
    args = parser.parse_args()
    names = args.models.split(",")
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        sys.exit(f"unknown models {unknown}; choose from {', '.join(MODELS)}")

    from omegaconf import OmegaConf

    from ganlab.checkpoint import load_checkpoint
    from ganlab.config import ImageDatasetConfig
    from ganlab.data import build_dataset
    from ganlab.metrics.compare import compare
    from ganlab.metrics.inception import InceptionNet, weights_path
    from ganlab.metrics.samples import draw_images

    work = Path(tempfile.mkdtemp(prefix="ganlab-bench-generators-"))
    data_dir = work / "data"
    with_mnist_test_split(data_dir)
    device = torch.device(args.device)
    net = InceptionNet(weights_path(None, download=True), device)
    cfg_dataset = OmegaConf.structured(ImageDatasetConfig(name="mnist", source="bundled",
                                                          image_size=32))
    heldout = build_dataset(cfg_dataset, data_dir, seed=0, heldout=True).heldout
    real = net.embed(heldout.x[: args.inception_n])

    rows = {}
    for name in names:
        run = work / name
        metrics = train([*COMMON, *MODELS[name], f"trainer.max_steps={args.steps}",
                         f"device={args.device}"], data_dir, run)
        images = draw_images(load_checkpoint(run, device), args.inception_n, seed=0).cpu()
        started = time.perf_counter()
        metrics.update(compare(net.embed(images), real, {"fid", "prdc"}))
        metrics["inception_seconds"] = time.perf_counter() - started
        rows[name] = metrics
        Path(args.out).write_text(json.dumps(rows, indent=1, default=str))
        if args.grids:
            Path(args.grids).mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, "-m", "ganlab", "sample", f"ckpt={run}", "n=64",
                            f"out={Path(args.grids) / f'bench_{name}.png'}"], check=True)
        print(f"{name}: {metrics['seconds']:.0f} s", flush=True)

    print(f"held-out: {heldout.source}; Inception: {net.description}, {args.inception_n:,} "
          "samples against as many held-out digits")
    keys = (*CLASSIFIER, *INCEPTION)
    print(f"| model ({args.steps} steps) | steps/s | " + " | ".join(keys) + " |")
    print("| " + " | ".join(["---"] * (len(keys) + 2)) + " |")
    for name, m in rows.items():
        print(f"| {name} | {m['steady_steps_per_second']:.2f} | "
              + " | ".join(f"{m[k]:.4g}" for k in keys) + " |")
    print(f"runs in {work}")


if __name__ == "__main__":
    main()
