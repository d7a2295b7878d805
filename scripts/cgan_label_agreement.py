"""Does a class-conditional GAN draw the digit it is asked for? (a benchmark, not a test)

    python scripts/cgan_label_agreement.py                       # trains, then measures
    python scripts/cgan_label_agreement.py --steps 800 model.lr_d=1e-4   # more train overrides
    python scripts/cgan_label_agreement.py --run outputs/<run>   # measures a trained run

Trains `python -m ganlab train model=cgan dataset=mnist dataset.source=bundled
trainer.seed=SEED trainer.max_steps=STEPS [OVERRIDES]` (or loads --run: a run dir or a
checkpoint), draws --n samples of every label 0..9 (`generate(z, labels)`, fixed z seed) and
prints, per label:

  * agreement: the share of the samples ganlab's reference LeNet (ganlab.metrics.reference,
    trained on the bundled digits and cached in the data dir) classifies as the requested
    digit; its held-out accuracy is printed first: on the official test split from
    ../shared/data/mnist-t10k when that is present, else on the fixed 10% slice;
  * variety: the mean pairwise pixel distance (RMS over pixels in [0, 1]) between the samples
    of that label, next to the same for real held-out digits of that class: a label collapsed
    to one image scores near 0, real digits about 0.3.

--grid FILE.png writes 10 rows (labels 0..9) of the first 16 samples of each label.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from benchdata import with_mnist_test_split

DIGITS = ["model=cgan", "dataset=mnist", "dataset.source=bundled"]


def train(args: list[str], data_dir: Path, run: Path) -> float:
    """`python -m ganlab train ARGS` into run; returns the seconds it took."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "ganlab", "train", *args,
                             f"hydra.run.dir={run}"],
                            env={**os.environ, "GANLAB_DATA": str(data_dir)},
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(result.stderr[-3000:])
    return time.perf_counter() - started


def pairwise_distance(images: torch.Tensor) -> float:
    """Mean over pairs of the RMS pixel difference of uint8 images, on the [0, 1] scale."""
    flat = images.flatten(1).double() / 255
    return float(torch.pdist(flat).mean() / flat.shape[1] ** 0.5)


@torch.no_grad()
def label_agreement(family, judge, n: int = 200, seed: int = 0, real=None) -> list[dict]:
    """Per label of a conditional sampler (a family with num_classes, sample_noise, generate
    and to_uint8): {"label", "agreement" (ganlab's label_agreement metric, as a run reports
    it), "variety", "real_variety" (None without `real`), "images"}. `judge`: a
    ReferenceClassifier (ganlab.metrics.reference); `real`: an InMemoryDataset of labelled
    digits, for the real variety."""
    from ganlab.metrics.frechet import label_agreement as agreement_metric

    z = family.sample_noise(n, torch.Generator().manual_seed(seed))
    images = {label: family.to_uint8(family.generate(z, torch.full((n,), label))).cpu()
              for label in range(family.num_classes)}
    labels = torch.arange(family.num_classes).repeat_interleave(n)
    probs, _ = judge.probs_and_features(torch.cat(list(images.values())))
    agreement = agreement_metric(probs, labels, torch.ones(family.num_classes))
    rows = []
    for label, drawn in images.items():
        row = {"label": label, "agreement": agreement[f"label_agreement/{label}"],
               "variety": pairwise_distance(drawn), "real_variety": None, "images": drawn}
        if real is not None:
            row["real_variety"] = pairwise_distance(real.x[real.y.cpu() == label][:n].cpu())
        rows.append(row)
    return rows


def report(rows: list[dict]) -> str:
    lines = ["label  agreement  variety  real digits' variety"]
    for r in rows:
        real = f"{r['real_variety']:.3f}" if r["real_variety"] is not None else "-"
        lines.append(f"{r['label']:>5}  {r['agreement']:>9.3f}  {r['variety']:>7.3f}  {real:>7}")
    agreement = [r["agreement"] for r in rows]
    ratio = [r["variety"] / r["real_variety"] for r in rows if r["real_variety"]]
    lines.append(f"mean agreement {sum(agreement) / len(agreement):.3f}, "
                 f"lowest {min(agreement):.3f} (label {agreement.index(min(agreement))})"
                 + (f"; variety / real: lowest {min(ratio):.2f}, mean "
                    f"{sum(ratio) / len(ratio):.2f}" if ratio else ""))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="more `train` overrides (key=value)")
    parser.add_argument("--run", help="a trained run dir or checkpoint: measure it, no training")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0, help="trainer.seed")
    parser.add_argument("--n", type=int, default=200, help="samples per label")
    parser.add_argument("--data-dir", type=Path,
                        help="GANLAB_DATA for training and the judge (default: a new "
                             "temporary dir holding the shared t10k files when present)")
    parser.add_argument("--out", type=Path, help="run dir of the training (default: temporary)")
    parser.add_argument("--grid", type=Path, help="a .png of 16 samples per label, one row each")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from ganlab.checkpoint import load_checkpoint
    from ganlab.data import build_dataset
    from ganlab.families.capabilities import num_classes
    from ganlab.images import make_grid, save_png
    from ganlab.metrics.reference import train_reference
    from ganlab.runtime import flush_denormals

    work = Path(tempfile.mkdtemp(prefix="ganlab-cgan-labels-"))
    data_dir = args.data_dir or work / "data"
    if args.data_dir is None:
        with_mnist_test_split(data_dir)
    run = args.run
    if run is None:
        command = [*DIGITS, f"trainer.seed={args.seed}", f"trainer.max_steps={args.steps}",
                   "log.progress=false", f"device={args.device}", *args.overrides]
        run = args.out or work / "run"
        print("python -m ganlab train " + " ".join(command))
        print(f"trained in {train(command, data_dir, Path(run)):.0f} s ({run})")
    flush_denormals()
    family = load_checkpoint(run, args.device)
    if num_classes(family) == 0:
        sys.exit(f"{run} is not a class-conditional model")
    judge = train_reference(family.config.dataset, data_dir, torch.device(args.device))
    real = build_dataset(family.config.dataset, data_dir, seed=0, heldout=True).heldout
    print(f"judge: {judge.description}; held-out accuracy {judge.accuracy:.4f} on "
          f"{real.source}")
    rows = label_agreement(family, judge, args.n, real=real)
    print(f"{args.n} samples per label from {run} (step {family.step}); real variety: "
          f"{real.source}")
    print(report(rows))
    if args.grid:
        grid = torch.cat([r["images"][:16] for r in rows])
        save_png(make_grid(grid, nrow=16), args.grid)
        print(f"grid: {args.grid}")


if __name__ == "__main__":
    main()
