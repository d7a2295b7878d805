"""ganlab's attacks against torchattacks' on the same model and images (a benchmark, not a test).

    python scripts/bench_attack_libraries.py [--ckpt RUN] [--n 500] [--out FILE.json]

Without --ckpt it first trains the README's LeNet (2 epochs of the 5,000 bundled digits, batch
64) through the CLI. The images are the first --n of the official MNIST test split
(../shared/data/mnist-t10k; without it, the run's 10% held-out slice, and the output says so).
For each attack both libraries have, the same settings on both sides:

  * FGSM at eps 0.1, 0.2, 0.3;
  * PGD L-inf, eps 0.3, 40 steps of 0.01, without a random start (then both are one
    deterministic formula) and with one (the starts differ: a measure of its spread);
  * PGD L2, eps 2.0, 40 steps of 0.1, without a random start;
  * C&W L2 with one fixed c = 1 and 100 Adam steps (torchattacks has no binary search over c,
    so ganlab's runs with search_steps=1 and abort_early off: the same objective);
  * DeepFool, 50 steps, overshoot 0.02.

It prints each one's robust accuracy (budgeted) or success rate and mean L2 (minimal) for
both, and the share of images on which the two agree (both fooled or both not).
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
from benchdata import with_mnist_test_split

from ganlab import load_checkpoint
from ganlab.attack import heldout_images
from ganlab.attacks import cw_l2, deepfool, fgsm, pgd
from ganlab.attacks.library import _run, torchattacks


def train_lenet(work: Path, data_dir: Path) -> Path:
    run = work / "lenet"
    args = ["train", "model=lenet", "dataset=mnist", "dataset.source=bundled", "trainer.epochs=2",
            "trainer.batch_size=64", "eval.every=0", "log.sample_every=0", "log.progress=false",
            f"data_dir={data_dir}", f"hydra.run.dir={run}"]
    subprocess.run([sys.executable, "-m", "ganlab", *args], cwd=work, check=True)
    return run


def predictions(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i : i + 500]).argmax(1) for i in range(0, len(x), 500)])


def compare(model, x, y, ours, theirs) -> dict:
    """Both attacks on the same images: accuracy after each, mean L2 of the successful
    perturbations, and the share of images where both agree on fooled / not fooled."""
    row = {}
    for name, craft in (("ganlab", ours), ("torchattacks", theirs)):
        started = time.perf_counter()
        adv = craft(x, y)
        fooled = predictions(model, adv) != y
        l2 = (adv - x).flatten(1).norm(dim=1)
        row[name] = {"accuracy": 1 - float(fooled.float().mean()),
                     "mean_l2_success": float(l2[fooled].mean()) if fooled.any() else None,
                     "seconds": round(time.perf_counter() - started, 1)}
        row[f"_{name}_fooled"] = fooled
    row["agreement"] = float((row.pop("_ganlab_fooled") == row.pop("_torchattacks_fooled"))
                             .float().mean())
    return row


CASE_WORDS = ("fgsm", "pgd", "cw", "deepfool")  # the first word of each row's name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", help="a trained classifier run (default: train the LeNet)")
    parser.add_argument("--n", type=int, default=500, help="test images")
    parser.add_argument("--out", default="bench_attack_libraries.json")
    parser.add_argument("--only", nargs="+", metavar="WORD", choices=CASE_WORDS,
                        help="run only the attacks whose row starts with these words")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ganlab-bench-libraries-"))
    data_dir = work / "data"
    official = with_mnist_test_split(data_dir)
    run = Path(args.ckpt) if args.ckpt else train_lenet(work, data_dir)
    family = load_checkpoint(run)
    model = family.model.eval()
    x_all, y_all, source = heldout_images(family, str(data_dir), torch.device("cpu"))
    keep = predictions(model, x_all[: args.n]) == y_all[: args.n]  # attack what it gets right
    x, y = x_all[: args.n][keep], y_all[: args.n][keep]
    print(f"{len(x)} of the first {args.n} test images classified correctly ({source}; "
          f"official split: {official})")

    ta = torchattacks()

    def theirs(attack):
        return lambda xb, yb: _run(attack, model, xb, yb)

    gen = torch.Generator().manual_seed(0)
    cases = {
        **{f"fgsm eps {eps}": (lambda xb, yb, e=eps: fgsm(model, xb, yb, e),
                               theirs(ta.FGSM(model, eps=eps))) for eps in (0.1, 0.2, 0.3)},
        "pgd linf eps 0.3, 40 x 0.01, no random start": (
            lambda xb, yb: pgd(model, xb, yb, 0.3, 0.01, 40, random_start=False),
            theirs(ta.PGD(model, eps=0.3, alpha=0.01, steps=40, random_start=False))),
        "pgd linf eps 0.3, 40 x 0.01, random start": (
            lambda xb, yb: pgd(model, xb, yb, 0.3, 0.01, 40, generator=gen),
            theirs(ta.PGD(model, eps=0.3, alpha=0.01, steps=40, random_start=True))),
        "pgd l2 eps 2.0, 40 x 0.1, no random start": (
            lambda xb, yb: pgd(model, xb, yb, 2.0, 0.1, 40, random_start=False, norm="2"),
            theirs(ta.PGDL2(model, eps=2.0, alpha=0.1, steps=40, random_start=False))),
        "cw l2, c 1, 100 steps, lr 0.01": (
            lambda xb, yb: cw_l2(model, xb, yb, c=1.0, search_steps=1, steps=100, lr=0.01,
                                 abort_early=False),
            theirs(ta.CW(model, c=1.0, kappa=0, steps=100, lr=0.01))),
        "deepfool, 50 steps, overshoot 0.02": (
            lambda xb, yb: deepfool(model, xb, yb, steps=50, overshoot=0.02),
            theirs(ta.DeepFool(model, steps=50, overshoot=0.02))),
    }
    if args.only:
        cases = {k: v for k, v in cases.items() if k.split()[0].rstrip(",") in args.only}
    results = {"checkpoint": str(run), "images": len(x), "heldout": source}
    print("| attack | ganlab accuracy | torchattacks accuracy | agree | ganlab / torchattacks "
          "mean L2 (fooled) | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, (ours, other) in cases.items():
        row = results[name] = compare(model, x, y, ours, other)
        g, t = row["ganlab"], row["torchattacks"]
        l2 = " / ".join("-" if r["mean_l2_success"] is None else f"{r['mean_l2_success']:.3f}"
                        for r in (g, t))
        print(f"| {name} | {g['accuracy']:.3f} | {t['accuracy']:.3f} | {row['agreement']:.1%} | "
              f"{l2} | {g['seconds']:.0f} / {t['seconds']:.0f} |", flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
