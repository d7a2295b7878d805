"""Do the mode-collapse tools work? Modes covered on the 2-D toys, per GAN variant.

Trains the lecture MLP GAN (`model=mlp_gan`) on `ring` (8 modes) and `grid` (25 modes) for a
fixed number of generator steps with each variant, over several seeds, and reports the modes
covered and the high-quality fraction (samples within 3 std of a mode) from the run's final
evaluation (10,000 samples), as mean and spread over the seeds:

    minimax, nonsaturating, wgan_gp (5 critic steps per G step), and nonsaturating with
    model.minibatch_std, model.history, model.ema.

Runs in-process through ganlab's own config composition and training entrypoint, two at a
time (one thread each).

    python scripts/bench_modes.py [--steps 5000] [--seeds 3] [--model KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

VARIANTS = {
    "minimax": ["loss=minimax"],
    "nonsaturating": ["loss=nonsaturating"],
    "wgan_gp": ["experiment=wgan_gp"],  # Gulrajani et al.'s settings, as before 0.2
    "nonsaturating + minibatch_std": ["model.minibatch_std=true"],
    "nonsaturating + history": ["model.history=512"],
    "nonsaturating + ema": ["model.ema=0.999"],
}
DATASETS = ("ring", "grid")
QUIET = ["log.progress=false", "log.sample_every=0", "eval.every=0", "trainer.ckpt_every=0",
         "log.every=0", "device=cpu"]


def one_run(job: tuple[str, str, int, int, str, list[str]]) -> dict:
    """Train one variant on one toy with one seed; the final metrics."""
    import logging

    import torch

    torch.set_num_threads(1)
    logging.getLogger("ganlab").setLevel(logging.WARNING)
    from ganlab import preflight
    from ganlab.train import train

    dataset, variant, seed, steps, root, model = job
    overrides = ["model=mlp_gan", *model, f"dataset={dataset}", f"trainer.max_steps={steps}",
                 f"trainer.seed={seed}", *QUIET, *VARIANTS[variant]]
    (cfg,) = preflight.compose_all(overrides)
    run_dir = Path(root) / f"{dataset}-{variant.replace(' + ', '-')}-{seed}"
    started = time.perf_counter()
    result = train(cfg, run_dir, overrides)
    return {"dataset": dataset, "variant": variant, "seed": seed,
            "modes_covered": result["modes_covered"], "modes_total": result["modes_total"],
            "high_quality_fraction": result["high_quality_fraction"],
            "seconds": time.perf_counter() - started}


def summary(values: list[float]) -> str:
    mean = statistics.fmean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.2f} ± {spread:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", nargs="*", default=[],
                        help="extra model overrides, e.g. model.g_hidden=[128,128]")
    parser.add_argument("--out", default="bench_modes.json")
    args = parser.parse_args()

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        jobs = [(d, v, s, args.steps, root, args.model) for d in DATASETS for v in VARIANTS
                for s in range(args.seeds)]
        with ProcessPoolExecutor(args.workers) as pool:
            results = list(pool.map(one_run, jobs))
    elapsed = time.perf_counter() - started

    print(f"\nmlp_gan, {args.steps} generator steps, batch 64, seeds 0..{args.seeds - 1} "
          f"({elapsed / 60:.1f} min in all)\n")
    print("| variant | ring: modes (of 8) | ring: high quality | grid: modes (of 25) | "
          "grid: high quality |\n| --- | --- | --- | --- | --- |")
    for variant in VARIANTS:
        cells = []
        for dataset in DATASETS:
            rows = [r for r in results if r["dataset"] == dataset and r["variant"] == variant]
            cells += [summary([r["modes_covered"] for r in rows]),
                      summary([r["high_quality_fraction"] for r in rows])]
        print(f"| {variant} | " + " | ".join(cells) + " |")
    Path(args.out).write_text(json.dumps({"steps": args.steps, "seeds": args.seeds,
                                          "seconds": elapsed, "runs": results}, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
