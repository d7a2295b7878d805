"""Does CycleGAN learn a known unpaired mapping? red2blue: red shapes (A) <-> blue shapes (B).

Trains `python -m ganlab train model=cyclegan dataset=red2blue` for a few hundred steps on the
CPU, translates the 100 + 100 test shapes both ways and measures, on foreground pixels (those
far from the light background):

- target colour: the share of foreground pixels whose colour is the target domain's (blue for
  A -> B: blue channel above red by 50+), and the mean foreground RGB of the translations next
  to that of the real target images;
- shape kept: the IoU between the foreground masks of each input and its translation.

The untranslated inputs score 0 on target colour and 1 on IoU; a translation that learnt the
mapping scores near 1 on both.

    python scripts/bench_cyclegan.py [--steps 600] [--features 32] [--seed 0]
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

FOREGROUND = 80  # max channel distance from the background that marks a shape pixel
DOMINANT = 50  # the target channel must exceed the other colour channel by this much
BACKGROUND = 235


def foreground(images: torch.Tensor) -> torch.Tensor:
    """bool (N, H, W): pixels far from the light background."""
    return (images.int() - BACKGROUND).abs().amax(dim=1) > FOREGROUND


def measure(inputs: torch.Tensor, outputs: torch.Tensor, target: str,
            real_target: torch.Tensor) -> dict[str, float]:
    fg_in, fg_out = foreground(inputs), foreground(outputs)
    red, blue = outputs[:, 0].int(), outputs[:, 2].int()
    right = (blue - red > DOMINANT) if target == "B" else (red - blue > DOMINANT)
    share = float((right & fg_out).sum()) / max(1, int(fg_out.sum()))
    iou = ((fg_in & fg_out).flatten(1).sum(1).float() /
           (fg_in | fg_out).flatten(1).sum(1).clamp(min=1).float())

    def mean_rgb(images: torch.Tensor, mask: torch.Tensor) -> list[float]:
        pixels = images.permute(0, 2, 3, 1)[mask].float()
        return [round(v, 1) for v in pixels.mean(0).tolist()] if len(pixels) else [0, 0, 0]

    return {"target_colour_share": share, "shape_iou": float(iou.mean()),
            "translated_rgb": mean_rgb(outputs, fg_out),
            "real_target_rgb": mean_rgb(real_target, foreground(real_target))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--features", type=int, default=32, help="generator/critic width")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench_cyclegan.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        command = [sys.executable, "-m", "ganlab", "train", "model=cyclegan", "dataset=red2blue",
                   f"trainer.max_steps={args.steps}", f"trainer.seed={args.seed}",
                   f"model.g_features={args.features}",
                   f"model.d_features={args.features}", "log.every=50",
                   f"log.sample_every={args.steps}", f"eval.every={args.steps}",
                   f"trainer.ckpt_every={args.steps}", "log.progress=false", "device=cpu",
                   f"hydra.run.dir={run}"]
        print("$", " ".join(command[1:]), flush=True)
        started = time.perf_counter()
        subprocess.run(command, check=True, env={**os.environ, "GANLAB_DATA": tmp})
        train_s = time.perf_counter() - started

        from ganlab.checkpoint import load_checkpoint
        from ganlab.data import build_dataset

        family = load_checkpoint(run)
        test = build_dataset(family.config.dataset, tmp, args.seed).heldout
        rows = {
            "A->B": measure(test.a, family.translate(test.a, "AtoB"), "B", test.b),
            "B->A": measure(test.b, family.translate(test.b, "BtoA"), "A", test.a),
            "A (untranslated)": measure(test.a, test.a, "B", test.b),
        }
        metrics = json.loads((run / "metrics.json").read_text())

    print(f"\nred2blue, {args.steps} steps, width {args.features}, seed {args.seed}: trained in "
          f"{train_s:.0f} s ({metrics['steady_steps_per_second']:.2f} steps/s), test cycle L1 "
          f"A {metrics['cycle_l1_A']:.4f}, B {metrics['cycle_l1_B']:.4f}\n")
    print("| direction | target colour share | shape IoU | translated fg RGB | "
          "real target fg RGB |\n| --- | --- | --- | --- | --- |")
    for name, row in rows.items():
        print(f"| {name} | {row['target_colour_share']:.3f} | {row['shape_iou']:.3f} | "
              f"{row['translated_rgb']} | {row['real_target_rgb']} |")
    result = {"steps": args.steps, "features": args.features, "seed": args.seed,
              "train_seconds": train_s, "metrics": metrics, "translations": rows}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
