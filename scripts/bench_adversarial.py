"""Reference numbers for the adversarial lab, through the real CLI (a benchmark, not a test).

    python scripts/bench_adversarial.py [--epochs 2] [--out bench_adversarial.json]

Trains on the 5,000 bundled MNIST digits and evaluates on the official 10,000-image test split
(../shared/data/mnist-t10k, copied into a temporary data_dir; without it, on the fixed 10%
held-out slice of the bundled digits, and the output says so):

  * LeNet, 2 epochs: clean accuracy, and accuracy under FGSM eps 0.3;
  * LeNet with FGSM adversarial training (defense=fgsm): the same two numbers;
  * Papernot et al.'s substitute attack on the clean LeNet: the target's accuracy on the
    transferred examples, and the clean accuracy of target and substitute;
  * the shallow softmax classifier (Goodfellow et al.) under FGSM eps 0.25.

Each is compared with cleverhans' regression thresholds for the same budget; those were
checked on the first 333 test images, so both that slice and the whole test split are shown.
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

CLEVERHANS_SLICE = 333


def ganlab(args: list[str], data_dir: Path, cwd: Path) -> None:
    env = {**os.environ, "GANLAB_DATA": str(data_dir)}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "ganlab", *args], cwd=cwd, env=env,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"failed: ganlab {' '.join(args)}\n{result.stderr[-3000:]}")
    print(f"  {time.perf_counter() - started:6.1f} s  ganlab {' '.join(args)}", flush=True)


def attack(run: Path, name: str, eps: float, n: int, data_dir: Path, cwd: Path,
           *extra: str) -> dict:
    out = run / f"attack_{name}_{n or 'all'}"
    ganlab(["attack", f"ckpt={run}", f"attack={name}", f"attack.eps=[{eps}]", f"n_examples={n}",
            f"out={out}", *extra], data_dir, cwd)
    return json.loads((out / "robustness.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="bench_adversarial.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ganlab-bench-"))
    data_dir = work / "data"
    with_mnist_test_split(data_dir)
    train = ["dataset=mnist", "dataset.source=bundled", f"trainer.epochs={args.epochs}",
             f"trainer.batch_size={args.batch_size}", "eval.every=0", "log.sample_every=0",
             "log.progress=false", f"device={args.device}"]
    runs = {"lenet": ["model=lenet"], "lenet_fgsm": ["model=lenet", "defense=fgsm"],
            "softmax": ["model=softmax"]}
    print(f"training ({args.epochs} epochs, batch {args.batch_size}) in {work}")
    for name, extra in runs.items():
        ganlab(["train", *train, *extra, f"hydra.run.dir={work / name}"], data_dir, work)

    results: dict[str, dict] = {}
    for n in (CLEVERHANS_SLICE, 0):
        part = results[f"first_{n}" if n else "all"] = {}
        for name in ("lenet", "lenet_fgsm"):
            report = attack(work / name, "fgsm", 0.3, n, data_dir, work)
            part[name] = {"clean": report["clean_accuracy"],
                          "fgsm_0.3": report["results"][0]["accuracy"],
                          "heldout": report["heldout_data"], "n": report["n_examples"]}
        report = attack(work / "softmax", "fgsm", 0.25, n, data_dir, work)
        part["softmax"] = {"clean": report["clean_accuracy"],
                           "fgsm_0.25_error": 1 - report["results"][0]["accuracy"]}
        report = attack(work / "lenet", "substitute", 0.3, n, data_dir, work)
        row = report["results"][0]
        part["substitute"] = {"target_adversarial": row["accuracy"],
                              "target_clean": row["clean_accuracy"],
                              "substitute_clean": row["source_clean_accuracy"],
                              "oracle_queries": report["oracle_queries"]}

    checks = [  # (what, run, key, threshold, "above"/"below")
        ("LeNet clean", "lenet", "clean", 0.97, "above"),
        ("LeNet FGSM eps 0.3", "lenet", "fgsm_0.3", 0.05, "below"),
        ("FGSM-trained LeNet clean", "lenet_fgsm", "clean", 0.93, "above"),
        ("FGSM-trained LeNet FGSM eps 0.3", "lenet_fgsm", "fgsm_0.3", 0.4, "above"),
        ("substitute: target on transferred", "substitute", "target_adversarial", 0.3, "below"),
        ("substitute: target clean", "substitute", "target_clean", 0.7, "above"),
        ("substitute: substitute clean", "substitute", "substitute_clean", 0.7, "above"),
        ("softmax FGSM eps 0.25 error", "softmax", "fgsm_0.25_error", None, ""),
    ]
    heldout = results["all"]["lenet"]["heldout"]
    print(f"\nheld-out data: {heldout}")
    print(f"| {'measure':<36} | first {CLEVERHANS_SLICE} | all {results['all']['lenet']['n']:>5} "
          f"| threshold |")
    print(f"| {'-' * 36} | --------- | --------- | --------- |")
    for what, run, key, threshold, side in checks:
        values = [results[part][run][key] for part in (f"first_{CLEVERHANS_SLICE}", "all")]
        bound = (f"{'>' if side == 'above' else '<'} {threshold}" if threshold
                 else "(99.9% in paper)")
        cells = []
        for v in values:
            ok = threshold is None or (v > threshold if side == "above" else v < threshold)
            cells.append(f"{v:.4f}{'' if ok else ' x'}")
        print(f"| {what:<36} | {cells[0]:>9} | {cells[1]:>9} | {bound} |")
    Path(args.out).write_text(json.dumps({"settings": vars(args), "heldout": heldout,
                                          "results": results}, indent=2))
    print(f"\n(x: misses the threshold) wrote {args.out}; runs kept in {work}")


if __name__ == "__main__":
    main()
