"""The streamed data path against the on-device path (a benchmark, not a test).

    python scripts/bench.py --streaming [--device cpu] [--images 5000,20000] [--steps 60]
                                        [--repeat 2] [--out bench_streaming.json]

Writes a folder of random 64-px RGB PNGs for each size (once, under a temp folder), decodes it
once into ganlab's folder cache, then trains `model=dcgan dataset=folder` for --steps steps
at batch 64 twice per size: with the training set copied to the device (the default budget)
and streamed from the memory-mapped cache (`data.max_device_bytes=0`). Each row gives the
runner's steady steps per second (metrics.json), and the peak resident memory of the training
process: all of it (VmHWM, which counts the cache file's pages the run has read, reclaimable
page cache), and the peak of its anonymous memory (RssAnon, polled), which is what the dataset
costs when it is copied and what must not grow with the dataset's size when it is streamed.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 64
BATCH = 64
POLL_S = 0.05


def write_images(folder: Path, n: int) -> None:
    if folder.is_dir() and len(list(folder.iterdir())) == n:
        return
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(
            folder / f"{i:06d}.png", compress_level=1)


def status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def train(overrides: list[str], work: Path, name: str) -> dict:
    """One training run: its steady rate and peak memory (MB)."""
    run = work / name
    env = {**os.environ, "GANLAB_DATA": str(work / "data")}
    proc = subprocess.Popen([sys.executable, "-m", "ganlab", "train", *overrides,
                             "log.progress=false", f"hydra.run.dir={run}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak_anon = peak_total = 0
    while proc.poll() is None:
        peak_anon = max(peak_anon, status_kb(proc.pid, "RssAnon"))
        peak_total = max(peak_total, status_kb(proc.pid, "VmHWM"))
        time.sleep(POLL_S)
    err = proc.stderr.read()
    if proc.returncode != 0:
        sys.exit(f"{name}: {err[-2000:]}")
    metrics = json.loads((run / "metrics.json").read_text())
    return {"steps_per_s": metrics["steady_steps_per_second"],
            "peak_rss_mb": peak_total / 1024, "peak_anon_mb": peak_anon / 1024}


def main(device: str, sizes: list[int], steps: int, repeat: int, out: str) -> None:
    work = Path(tempfile.mkdtemp(prefix="ganlab-bench-streaming-"))
    modes = {"on device": [], "streamed": ["data.max_device_bytes=0"]}
    rows = []
    print(f"# dcgan, {SIZE}-px RGB folder, batch {BATCH}, {steps} steps, device {device}; "
          f"medians of {repeat}; memory in MB")
    print(f"{'images':>7} {'path':<10} {'steps/s':>8} {'img/s':>7} {'peak RSS':>9} "
          f"{'peak anon':>10}")
    for n in sizes:
        folder = work / f"images_{n}"
        write_images(folder, n)
        common = ["model=dcgan", "dataset=folder", f"dataset.path={folder}",
                  f"dataset.image_size={SIZE}", f"trainer.batch_size={BATCH}",
                  f"trainer.max_steps={steps}", f"device={device}", "eval.every=0",
                  "log.sample_every=0", "trainer.ckpt_every=0"]
        train([*common, "trainer.max_steps=1"], work, f"decode_{n}")  # builds the cache
        results: dict[str, list[dict]] = {mode: [] for mode in modes}
        for i in range(repeat):  # interleaved: a shared VM's speed drifts
            for mode, extra in modes.items():
                results[mode].append(train([*common, *extra], work,
                                           f"{n}_{mode.replace(' ', '_')}_{i}"))
        for mode, runs in results.items():
            row = {"images": n, "path": mode,
                   **{k: statistics.median(r[k] for r in runs) for k in runs[0]},
                   "each": runs}
            rows.append(row)
            print(f"{n:>7} {mode:<10} {row['steps_per_s']:>8.2f} "
                  f"{row['steps_per_s'] * BATCH:>7.0f} {row['peak_rss_mb']:>9.0f} "
                  f"{row['peak_anon_mb']:>10.0f}", flush=True)
    Path(out).write_text(json.dumps({"device": device, "image_size": SIZE, "batch": BATCH,
                                     "steps": steps, "repeat": repeat, "rows": rows},
                                    indent=2))
    print(f"wrote {out}; runs in {work}")
