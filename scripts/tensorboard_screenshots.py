"""What a user sees in TensorBoard, as PNG screenshots from a real browser (not a test).

    python scripts/tensorboard_screenshots.py [--logdir outputs] [--train] [--out shots/]

--train first makes the two runs a new user starts with, into --logdir:
`model=dcgan trainer.max_steps=300` and `model=mlp_gan trainer.max_steps=100` on the bundled
digits. Then TensorBoard serves --logdir on a local port and headless Chromium (Debian's
`chromium` package) takes one screenshot per dashboard: Time Series, Custom Scalars, Images,
HParams and Text, into --out.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

DASHBOARDS = ("timeseries", "custom_scalars", "images", "hparams", "text")
RUNS = (["model=dcgan", "trainer.max_steps=300"], ["model=mlp_gan", "trainer.max_steps=100"])
COMMON = ["dataset=mnist", "dataset.source=bundled", "device=cpu", "log.progress=false"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.5)
    sys.exit(f"TensorBoard did not answer at {url} within {timeout:.0f} s")


def browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return name
    sys.exit("no Chromium found: apt-get install chromium")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logdir", default="outputs")
    parser.add_argument("--train", action="store_true", help="make the two runs first")
    parser.add_argument("--out", default="tensorboard_shots")
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=1100)
    args = parser.parse_args()
    logdir, out = Path(args.logdir), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.train:
        for overrides in RUNS:
            subprocess.run([sys.executable, "-m", "ganlab", "train", *overrides, *COMMON],
                           check=True, cwd=logdir.parent if logdir.name == "outputs" else None)
    chrome = browser()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir),
                               "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(base)
        for dashboard in DASHBOARDS:
            shot = out / f"{dashboard}.png"
            subprocess.run([chrome, "--headless=new", "--no-sandbox", "--disable-gpu",
                            "--hide-scrollbars", f"--window-size={args.width},{args.height}",
                            "--virtual-time-budget=20000", f"--screenshot={shot.resolve()}",
                            f"{base}/#{dashboard}"], check=True, capture_output=True,
                           timeout=120, env={**os.environ, "HOME": str(out.resolve())})
            print(f"wrote {shot}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
