"""Published numbers side by side: one number per family that its paper or reference
implementation reports, reproduced on the data this machine has (a benchmark, not a test).

    python scripts/bench_published.py [--device cpu]

Training data: the 5,000 bundled MNIST digits; test data: the official 10,000-image test split
(../shared/data/mnist-t10k, copied into a temporary data_dir; without it the fixed 10% slice,
and the table says so). Each row says where the budget differs from the publication's.

- sample metrics: the "MNIST Inception Score" of the real test digits under a MNIST classifier
  (ChunyuanLI/MNIST_Inception_Score: 9.8793 +- 0.0614 with its CNN), with ganlab's reference
  LeNet; and Inception FID/KID of the real training digits against the test split (the floor
  a generator's FID is read against; the FID papers give no MNIST value to compare);
- VAE: test negative ELBO of the pytorch/examples VAE after 10 epochs (about 105.6 nats);
- classifiers: the error of a softmax classifier under FGSM at eps 0.25 (Goodfellow et al.
  2015: 99.9%).
GAN FID trajectories are in scripts/bench_quality.py (no publication trains on these 5,000).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from bench_adversarial import attack, ganlab
from benchdata import with_mnist_test_split
from omegaconf import OmegaConf

ROWS: list[tuple[str, str, str, str]] = []  # measure, publication, ganlab, budget


def sample_metric_rows(data_dir: Path, device: torch.device, n_inception: int) -> None:
    from ganlab.config import ImageDatasetConfig
    from ganlab.data import build_dataset
    from ganlab.metrics.compare import FeatureSet, compare
    from ganlab.metrics.inception import InceptionNet, weights_path
    from ganlab.metrics.reference import train_reference

    cfg = OmegaConf.structured(ImageDatasetConfig(name="mnist", source="bundled"))
    data = build_dataset(cfg, data_dir, seed=0, heldout=True)
    test = data.heldout
    reference = train_reference(cfg, data_dir, device)
    probs, _ = reference.probs_and_features(test.x)
    score = compare(FeatureSet.of(torch.zeros(len(probs), 1), probs.double()),
                    FeatureSet.of(torch.zeros(2, 1)), {"is"})
    ROWS.append(("MNIST IS of the real test digits (classifier space, 10 splits)",
                 "9.8793 ± 0.0614 (ChunyuanLI/MNIST_Inception_Score, its CNN)",
                 f"{score['is_mean']:.4f} ± {score['is_std']:.4f} ({len(test):,} images)",
                 f"ganlab's reference LeNet ({reference.accuracy:.4f} held-out accuracy, "
                 f"trained on {len(data):,} digits)"))
    net = InceptionNet(weights_path(None, download=True), device)
    started = time.perf_counter()
    real_train, real_test = net.embed(data.x[:n_inception]), net.embed(test.x[:n_inception])
    floor = compare(real_train, real_test, {"fid", "kid"})
    ROWS.append(("Inception FID / KID, real training vs test digits",
                 "none on MNIST (the floor for a generator's FID)",
                 f"{floor['fid']:.2f} / {floor['kid_mean']:.5f}",
                 f"{n_inception:,} images per set (FID is biased upward at small N), "
                 f"{time.perf_counter() - started:.0f} s"))


def vae_row(data_dir: Path, work: Path, device: str) -> None:
    run = work / "vae"
    ganlab(["train", "model=vae", "dataset=mnist", "dataset.source=bundled",
            "trainer.epochs=10", "trainer.batch_size=128", "model.lr=1e-3",
            "model.latent_dim=20", "eval.every=0", "log.sample_every=0", "log.progress=false",
            f"device={device}", f"hydra.run.dir={run}"], data_dir, work)
    metrics = json.loads((run / "metrics.json").read_text())
    ROWS.append(("VAE test loss (negative ELBO, nats/image), 10 epochs",
                 "105.6 (pytorch/examples vae, 60,000 digits: 4,690 steps)",
                 f"{metrics['heldout_neg_elbo']:.1f}",
                 f"5,000 digits: {metrics['step']} steps; {metrics['heldout_data']}"))


def softmax_row(data_dir: Path, work: Path, device: str) -> None:
    run = work / "softmax"
    ganlab(["train", "model=softmax", "dataset=mnist", "dataset.source=bundled",
            "trainer.epochs=2", "trainer.batch_size=64", "eval.every=0", "log.sample_every=0",
            "log.progress=false", f"device={device}", f"hydra.run.dir={run}"], data_dir, work)
    report = attack(run, "fgsm", 0.25, 0, data_dir, work)
    error = 1 - report["results"][0]["accuracy"]
    ROWS.append(("softmax classifier error under FGSM eps 0.25",
                 "99.9% (Goodfellow et al. 2015, full MNIST)",
                 f"{100 * error:.1f}% ({report['n_examples']:,} test images)",
                 f"2 epochs on 5,000 digits, clean accuracy {report['clean_accuracy']:.4f}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--inception-n", type=int, default=2500)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ganlab-bench-published-"))
    data_dir = work / "data"
    official = with_mnist_test_split(data_dir)
    sample_metric_rows(data_dir, torch.device(args.device), args.inception_n)
    vae_row(data_dir, work, args.device)
    softmax_row(data_dir, work, args.device)
    print(f"test split: {'official 10,000' if official else 'the 10% held-out slice'}; "
          f"runs in {work}")
    print("| measure | published | ganlab | budget here |")
    print("| --- | --- | --- | --- |")
    for row in ROWS:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
