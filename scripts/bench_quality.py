"""Do the sample metrics mean something? (a benchmark, not a test)

    python scripts/bench_quality.py [--steps 2000] [--inception-n 2500] [--device cpu]

On the 5,000 bundled MNIST digits (held-out reference: the official test split from
../shared/data/mnist-t10k when present, else the fixed 10% slice), prints the metrics of
  * real training digits against the real held-out set (the floor),
  * a DCGAN after 1 step (untrained),
  * the same DCGAN after --steps steps (its last checkpoint),
in the reference classifier's space (10,000 samples; the run's own evaluation for the DCGANs)
and in Inception's (FID, KID, precision/recall, with --inception-n images per set: the real
network, needing the [fid] extra or torch-fidelity's weights), with the time each took.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from benchdata import with_mnist_test_split
from omegaconf import OmegaConf

CLASSIFIER = ("classifier_fid", "class_coverage", "classifier_precision",
              "classifier_recall", "classifier_is_mean")
INCEPTION = ("fid", "kid_mean", "precision", "recall", "density", "coverage")


def train(args: list[str], data_dir: Path, run: Path) -> dict:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "ganlab", "train", *args,
                             f"hydra.run.dir={run}"], env={**os.environ,
                                                           "GANLAB_DATA": str(data_dir)},
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(result.stderr[-3000:])
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["seconds"] = time.perf_counter() - started
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--inception-n", type=int, default=2500)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ganlab-bench-quality-"))
    data_dir = work / "data"
    with_mnist_test_split(data_dir)
    common = ["dataset=mnist", "dataset.source=bundled", "log.progress=false",
              f"device={args.device}", "log.sample_every=500"]

    from ganlab.checkpoint import load_checkpoint
    from ganlab.config import ImageDatasetConfig
    from ganlab.data import build_dataset
    from ganlab.metrics.compare import compare
    from ganlab.metrics.inception import InceptionNet, weights_path
    from ganlab.metrics.reference import ClassifierSpace, train_reference
    from ganlab.metrics.samples import draw_images

    device = torch.device(args.device)
    cfg_dataset = OmegaConf.structured(ImageDatasetConfig(name="mnist", source="bundled"))
    data = build_dataset(cfg_dataset, data_dir, seed=0, heldout=True)
    reference = train_reference(cfg_dataset, data_dir, device)
    space = ClassifierSpace(reference, data.heldout, min_share=0.2)
    rows = {"real training digits": space.measure(data.x)}
    rows["real training digits"]["seconds"] = 0.0
    rows["DCGAN, 1 step"] = train([*common, "trainer.max_steps=1", "eval.every=0"], data_dir,
                                  work / "untrained")
    rows[f"DCGAN, {args.steps} steps"] = train(
        [*common, f"trainer.max_steps={args.steps}", "eval.every=500"], data_dir,
        work / "trained")

    weights = weights_path(None, download=True)
    net = InceptionNet(weights, device)
    n = args.inception_n
    started = time.perf_counter()
    real = net.embed(data.heldout.x[:n])
    real_seconds = time.perf_counter() - started
    sets = {"real training digits": data.x[:n],
            "DCGAN, 1 step": work / "untrained",
            f"DCGAN, {args.steps} steps": work / "trained"}
    for name, source in sets.items():
        images = (draw_images(load_checkpoint(source, device), n, seed=0).cpu()
                  if isinstance(source, Path) else source)
        started = time.perf_counter()
        measured = compare(net.embed(images), real, {"fid", "kid", "prdc"})
        measured["inception_seconds"] = time.perf_counter() - started
        rows[name].update(measured)

    print(f"reference: {reference.description}, held-out accuracy {reference.accuracy:.4f}")
    print(f"held-out:  {space.real_source} ({space.n_real:,} images; Inception: the first "
          f"{min(n, len(data.heldout)):,}, features in {real_seconds:.0f} s)")
    print(f"Inception: {net.description}")
    keys = (*CLASSIFIER, *INCEPTION)
    print(f"| {'images':<24} | " + " | ".join(keys) + " | seconds | Inception s |")
    print("| " + " | ".join(["---"] * (len(keys) + 3)) + " |")
    for name, m in rows.items():
        print(f"| {name:<24} | " + " | ".join(f"{m[k]:.4g}" for k in keys) +
              f" | {m['seconds']:.0f} | {m['inception_seconds']:.0f} |")
    trained = rows[f"DCGAN, {args.steps} steps"]
    print(f"best checkpoint of the trained run: step {trained.get('best_step')}, classifier_fid "
          f"{trained.get('best_classifier_fid', float('nan')):.4f}; runs in {work}")


if __name__ == "__main__":
    main()
