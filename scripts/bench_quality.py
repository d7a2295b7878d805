"""Does classifier FID mean something? (a benchmark, not a test)

    python scripts/bench_quality.py [--steps 2000] [--device cpu]

On the 5,000 bundled MNIST digits (held-out reference: the official test split from
../shared/data/mnist-t10k when present, else the fixed 10% slice), prints the classifier-space
metrics of
  * real training digits against the real held-out set (should be near 0),
  * a DCGAN after 1 step (untrained),
  * the same DCGAN after --steps steps, with the best checkpoint the run kept.
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

KEYS = ("classifier_fid", "class_coverage", "class_kl", "mean_confidence")


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
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ganlab-bench-quality-"))
    data_dir = work / "data"
    with_mnist_test_split(data_dir)
    common = ["dataset=mnist", "dataset.source=bundled", "log.progress=false",
              f"device={args.device}", "log.sample_every=500"]

    # real against real: the training digits measured like fakes against the held-out set
    from ganlab.config import ImageDatasetConfig
    from ganlab.data import build_dataset
    from ganlab.metrics.reference import ClassifierSpace, train_reference

    device = torch.device(args.device)
    cfg_dataset = OmegaConf.structured(ImageDatasetConfig(name="mnist", source="bundled"))
    data = build_dataset(cfg_dataset, data_dir, seed=0, heldout=True)
    reference = train_reference(cfg_dataset, data_dir, device, steps=600)
    space = ClassifierSpace(reference, data.heldout.to(device), min_share=0.2)
    rows = {"real training digits": space.measure(data.x.to(device))}
    rows["real training digits"]["seconds"] = 0.0

    rows["DCGAN, 1 step"] = train([*common, "trainer.max_steps=1", "eval.every=0"], data_dir,
                                  work / "untrained")
    trained = train([*common, f"trainer.max_steps={args.steps}", "eval.every=500"], data_dir,
                    work / "trained")
    rows[f"DCGAN, {args.steps} steps"] = trained

    print(f"reference: {reference.description}")
    print(f"held-out:  {space.real_source} ({space.n_real:,} images)")
    print(f"| {'images':<24} | " + " | ".join(f"{k:>15}" for k in KEYS) + " | seconds |")
    print("| " + " | ".join(["-" * 24, *["-" * 15] * len(KEYS), "-" * 7]) + " |")
    for name, m in rows.items():
        print(f"| {name:<24} | " + " | ".join(f"{m[k]:>15.4f}" for k in KEYS) +
              f" | {m['seconds']:>7.0f} |")
    print(f"best checkpoint of the trained run: step {trained.get('best_step')}, classifier_fid "
          f"{trained.get('best_classifier_fid', float('nan')):.4f}; runs in {work}")


if __name__ == "__main__":
    main()
