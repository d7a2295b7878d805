"""The VAE of pytorch/examples, trained by ganlab with that example's settings (a benchmark,
not a test): model=vae (784-400-20), Bernoulli likelihood, batch 128, Adam 1e-3, 10 epochs.

    python scripts/bench_vae.py [--source auto|full|bundled] [--epochs 10]

Prints the test loss (negative ELBO, nats per image) to compare with pytorch/examples' about
105.6 after 10 epochs on the full 60,000 training digits. Offline, the training data is the
5,000 bundled digits; the test split is ../shared/data/mnist-t10k when present (copied into a
temporary data_dir), otherwise the fixed 10% held-out slice. The output says which.
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

from benchdata import with_mnist_test_split

REFERENCE_TEST_LOSS = 105.6  # pytorch/examples vae, 10 epochs, full MNIST


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default="auto", choices=["auto", "full", "bundled"])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--data-dir", default=None, help="default: a temporary one")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ganlab-bench-vae-"))
    data_dir = Path(args.data_dir) if args.data_dir else work / "data"
    with_mnist_test_split(data_dir)
    run = work / "vae"
    command = [sys.executable, "-m", "ganlab", "train", "model=vae", "dataset=mnist",
               f"dataset.source={args.source}", f"trainer.epochs={args.epochs}",
               "trainer.batch_size=128", "model.lr=1e-3", "model.latent_dim=20",
               "eval.every=0", "log.sample_every=0", "log.progress=false",
               f"device={args.device}", f"hydra.run.dir={run}"]
    started = time.perf_counter()
    result = subprocess.run(command, env={**os.environ, "GANLAB_DATA": str(data_dir)},
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(result.stderr[-3000:])
    elapsed = time.perf_counter() - started
    metrics = json.loads((run / "metrics.json").read_text())
    log = (run / "train.log").read_text().splitlines()
    data_line = next((line.split(" - ", 1)[1] for line in log if "- data:" in line), "?")
    print(f"training data: {data_line.removeprefix('data: ')}")
    print(f"test data:     {metrics['heldout_data']}")
    print(f"{metrics['step']} steps in {elapsed:.0f} s (command included)")
    print(f"test loss (negative ELBO, nats/image): {metrics['heldout_neg_elbo']:.2f} "
          f"(reconstruction {metrics['heldout_recon']:.2f} + KL {metrics['heldout_kl']:.2f}); "
          f"pytorch/examples reports about {REFERENCE_TEST_LOSS} on full MNIST")
    print(f"train loss of the last batch: {metrics['loss/total']:.2f}; run kept in {run}")


if __name__ == "__main__":
    main()
