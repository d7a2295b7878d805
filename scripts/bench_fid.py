"""How long `python -m ganlab fid` takes, in its two parts (a benchmark, not a test).

    python scripts/bench_fid.py [--n 10000] [--images 1000] [--device cpu]

1. Features: the Inception network (ganlab.metrics.inception, the offline weights) on
   --images MNIST test digits (../shared/data/mnist-t10k), timed after one warm-up batch:
   seconds per 1,000 images. Its cost is linear in the image count (fixed batches of 100), so
   an N vs N comparison spends 2 N / 1,000 times that.
2. Distance: `compare` (what `fid`, `eval` and training call) on two sets of --n 2,048-d
   features, each metric on its own: FID (two covariances and a 2,048² matrix square root),
   KID (100 subsets of 1,000, independent of N), PRDC (N x N distances, quadratic in N), and
   the Inception Score from --n 1,008-way softmax rows. The values of the features do not
   change the work, so they are random here (with a real mean/covariance structure).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from benchdata import with_mnist_test_split
from omegaconf import OmegaConf

from ganlab.metrics.compare import FeatureSet, compare


def timed(fn) -> tuple[object, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def feature_seconds_per_1000(images: int, device: torch.device) -> float:
    from ganlab.config import ImageDatasetConfig
    from ganlab.data import build_dataset
    from ganlab.metrics.inception import InceptionNet, weights_path

    data_dir = Path(tempfile.mkdtemp(prefix="ganlab-bench-fid-"))
    with_mnist_test_split(data_dir)
    cfg = OmegaConf.structured(ImageDatasetConfig(name="mnist", source="bundled"))
    test = build_dataset(cfg, data_dir, seed=0, heldout=True).heldout
    net = InceptionNet(weights_path(None, download=False), device)
    net.embed(test.x[:100])  # warm-up: first-call allocations
    _, seconds = timed(lambda: net.embed(test.x[:images]))
    print(f"features: {images:,} images of {test.source} in {seconds:.1f} s "
          f"({1000 * seconds / images:.1f} s per 1,000)")
    return 1000 * seconds / images


def distance_seconds(n: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(2048, 2048, generator=g, dtype=torch.float64) / 2048 ** 0.5
    a = FeatureSet.of(torch.randn(n, 2048, generator=g, dtype=torch.float64) @ mix,
                      torch.softmax(torch.randn(n, 1008, generator=g, dtype=torch.float64), 1))
    b = FeatureSet.of(torch.randn(n, 2048, generator=g, dtype=torch.float64) @ mix + 0.1)
    seconds = {}
    for metric in ("fid", "kid", "prdc", "is"):
        # new FeatureSets each time: their statistics are cached on first use
        started = time.perf_counter()
        compare(FeatureSet.of(a.features, a.probs), FeatureSet.of(b.features), {metric})
        seconds[metric] = time.perf_counter() - started
        print(f"distance: {metric} on {n:,} vs {n:,} features: {seconds[metric]:.1f} s")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="features per set (distance)")
    parser.add_argument("--images", type=int, default=1000, help="images timed (features)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    per_1000 = feature_seconds_per_1000(args.images, torch.device(args.device))
    seconds = distance_seconds(args.n)
    features = 2 * args.n / 1000 * per_1000
    print(f"fid {args.n:,} vs {args.n:,} (metrics=fid,kid,prdc, the default): features "
          f"{features:.0f} s (2 x {args.n:,} images at the rate above) + distance "
          f"{seconds['fid'] + seconds['kid'] + seconds['prdc']:.0f} s")


if __name__ == "__main__":
    main()
