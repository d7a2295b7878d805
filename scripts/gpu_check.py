"""One GPU check, ready for whoever gets a GPU: every model trains a few dozen steps on CUDA
in fp32 and bf16 (dcgan also in fp16 and with channels_last; bf16 with trainer.compile=true
for one or two models of each family), through a 1-process torchrun (and SyncBatchNorm),
through the on-device and the streamed data paths, a probe all-reduces over NCCL, and
scripts/bench.py measures dcgan-64 at batch 128 in fp32, bf16 and bf16+compile. Out come one
JSON report and one markdown table (printed and saved).

On a machine with one GPU (meant to take under 8 minutes on an H200; --budget, 420 s by
default on CUDA, stops starting cases after that; not yet run on a GPU):

    pip install -e .
    python scripts/gpu_check.py --device cuda --out-dir /tmp/gpu_check
    cp -r /tmp/gpu_check/report.json /tmp/gpu_check/report.md /tmp/gpu_check/logs "$OUT"/

On the CPU, small and quick (what tests/test_gpu_check.py runs, about 30 s on 2 cores):

    python scripts/gpu_check.py --device cpu --quick --out-dir /tmp/gpu_check

Each training case is one `python -m ganlab train` run in a fresh process with a timeout
(--quick: in this process, one after the other, unless --subprocess). The others: two
`python -m torch.distributed.run --standalone --nproc_per_node=1 -m ganlab train ...` runs
(with one process ganlab forms no process group, so these check the launcher path);
dist-probe, a 1-process torchrun script that joins a group through ganlab.distributed.init()
(NCCL for CUDA tensors, gloo for CPU ones) and all-reduces on each device; and the bench cases
(`scripts/bench.py --device D --only dcgan-64 --batch-size 128 --precision 32|bf16
[--compile] --steps 300 --repeat 1`), which run first, alone on the device: theirs are the
numbers to quote. The data-path cases train dcgan on a folder of images the check writes
(dataset=folder): held on the device (the default), or streamed from a memory map of its cache
file (data.max_device_bytes=0; the final losses are compared with the on-device run's), and
on synthetic images streamed from host memory.

Every case is recorded and a failure does not stop the others: ok, failed (with the line of
its output that says why: ganlab's `error: ...`, an exception, a timeout) or skipped (with the
reason); its wall seconds, steps/s and steady steps/s from the run's metrics.json, and its
final losses (a non-finite one, or no metrics.json, fails the case). Runs go under
OUT_DIR/runs/<case>, each case's output to OUT_DIR/logs/<case>.log; OUT_DIR/report.json is
rewritten after every case (an interrupted check leaves what it did) and OUT_DIR/report.md
holds the table printed at the end, under a line with the counts and the device:

    | case | status | wall s | steps/s (steady) | final losses | note |
    | --- | --- | --- | --- | --- | --- |
    | dcgan-fp32 | ok | 8.2 | 35.1 (48.0) | loss/D=1.31 loss/G=0.91 |  |

The exit code is 1 when a case failed, 2 for bad options (or --device cuda without CUDA), 0
otherwise.

On CUDA the training cases run --jobs (4) at a time on the one GPU, to fit the time: their
steps/s are indicative only. --quick (meant for the CPU) trains narrow networks on tiny data
for --steps (3) steps and skips the compile, bench and probe cases with a reason;
SyncBatchNorm is skipped off CUDA.

Options: --only a,b (these cases, in this order; --list prints the names), --steps (40),
--jobs, --budget SECONDS, --bench-steps (300), --bench-repeat (1), --bench-batch (128),
--extra-override KEY=VALUE (appended to every training case, repeatable: one switch tried
everywhere).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "scripts" / "bench.py"

# --- the cases ------------------------------------------------------------------------------

# model case name -> overrides on a GPU; every one trains on data made in memory (no download)
MODELS: dict[str, list[str]] = {
    "mlp_gan": ["dataset=synthetic", "model=mlp_gan"],
    "dcgan": ["dataset=synthetic", "model=dcgan"],
    "dcgan-wgan_gp": ["dataset=synthetic", "model=dcgan", "loss=wgan_gp"],  # double backward
    "cgan": ["dataset=synthetic", "model=cgan"],  # synthetic images come with 10 labels
    "progan": ["dataset=synthetic", "model=progan"],
    "cyclegan": ["dataset=red2blue", "model=cyclegan"],
    "ae": ["dataset=synthetic", "model=ae"],
    "vae": ["dataset=synthetic", "model=vae"],
    "conv_vae": ["dataset=synthetic", "dataset.image_size=32", "dataset.channels=3",
                 "model=conv_vae"],
    "mlp": ["dataset=synthetic", "model=mlp"],
    "softmax": ["dataset=synthetic", "model=softmax"],
    "lenet": ["dataset=synthetic", "model=lenet"],
    "vqvae": ["dataset=synthetic", "model=vqvae"],
    "pix2pix": ["dataset=synthetic", "dataset.image_size=32", "dataset.channels=3",
                "model=pix2pix", "model.task=colorize"],
    "srresnet": ["dataset=synthetic", "dataset.image_size=32", "model=srresnet"],
    # no content network on synthetic images: the adversarial and MSE terms
    "srgan": ["dataset=synthetic", "dataset.image_size=32", "model=srgan",
              "model.content_weight=0", "model.mse_weight=1"],
    "spade": ["dataset=masks", "dataset.image_size=64", "model=spade"],
    "gan3d": ["dataset=voxels", "model=gan3d"],  # 32^3, procedural shapes made in memory
    "biggan": ["dataset=synthetic", "dataset.image_size=32", "model=biggan"],
    "stylegan": ["dataset=synthetic", "dataset.image_size=32", "model=stylegan",
                 "model.pl_weight=2"],  # R1 and path-length double backward
    "worldmodel": ["model=worldmodel", "dataset.episodes=20", "model.features=16"],
    "gamegan": ["model=gamegan", "dataset.episodes=20", "dataset.size=32"],
}
# --quick: narrow networks and tiny data on top (the CPU's few seconds)
QUICK_MODELS: dict[str, list[str]] = {
    "dcgan": ["model.g_features=8", "model.d_features=8"],
    "dcgan-wgan_gp": ["model.g_features=8", "model.d_features=8"],
    "cgan": ["model.g_features=8", "model.d_features=8", "model.embed_dim=8"],
    "progan": ["model.max_features=16", "model.min_features=8", "model.latent_dim=16"],
    "cyclegan": ["dataset.n_samples=8", "dataset.n_test=4", "model.g_features=8",
                 "model.d_features=8"],
    "conv_vae": ["model.features=8"],
    "lenet": ["model.channels=[4,8]", "model.hidden=[16]"],
    "mlp": ["model.hidden=[32]"],
    "mlp_gan": ["model.g_hidden=[32]", "model.d_hidden=[32]"],
    "vqvae": ["model.hidden=16", "model.residual_hidden=8", "model.codebook_size=32",
              "model.embedding_dim=8", "model.prior_channels=8", "model.prior_layers=2"],
    "pix2pix": ["model.g_features=8", "model.d_features=8"],
    "srresnet": ["model.blocks=2", "model.g_features=8"],
    "srgan": ["model.blocks=2", "model.g_features=8", "model.d_features=8"],
    "spade": ["dataset.image_size=32", "dataset.n_test=8", "model.g_features=4",
              "model.d_features=8", "model.spade_hidden=16"],
    "gan3d": ["dataset.size=16", "dataset.n_samples=256", "dataset.n_test=32",
              "model.g_features=8", "model.d_features=8"],
    "biggan": ["model.g_ch=4", "model.d_ch=4", "model.latent_dim=32", "model.shared_dim=16"],
    "stylegan": ["model.channel_base=64", "model.channel_max=16", "model.latent_dim=16",
                 "model.w_dim=16", "model.mapping_layers=2"],
    "worldmodel": ["dataset.episodes=4", "dataset.size=32", "model.features=4"],
    "gamegan": ["dataset.episodes=4", "dataset.size=16", "dataset.max_steps=40",
                "model.hidden=16", "model.z_dim=4", "model.g_features=2", "model.d_features=2",
                "model.temporal_features=2", "model.transition_dim=8", "model.seq_len=6",
                "model.warm_up=2"],
}
# trainer.compile=true (with bf16) for one or two models of each family (gan, progan,
# cyclegan, pix2pix, ae, vae, vqvae, classifier): compiling costs tens of seconds a network
COMPILED = ["mlp_gan", "dcgan", "progan", "cyclegan", "pix2pix", "ae", "conv_vae", "vqvae",
            "lenet"]
PRECISIONS = {"fp32": "32", "bf16": "bf16", "fp16": "16"}

# the data paths: dcgan on a folder of 64-px colour images the check writes (28-px grey ones
# under --quick), held on the device (the default) or streamed from a memory map of the
# folder's cache file, and on synthetic images streamed from host memory. Streaming is forced
# by data.max_device_bytes=0
DATA_FOLDER = ["model=dcgan", "dataset=folder", "dataset.labels=none"]
DATA_SYNTHETIC = ["model=dcgan", "dataset=synthetic", "dataset.image_size=64",
                  "dataset.channels=3"]
STREAMED = ["data.max_device_bytes=0"]
FOLDER_IMAGES = 512  # --quick: 64

# the bench cases: scripts/bench.py's dcgan-64 at --bench-batch (128)
BENCH_SETTINGS = {"bench-dcgan-64-fp32": ["--precision", "32"],
                  "bench-dcgan-64-bf16": ["--precision", "bf16"],
                  "bench-dcgan-64-bf16-compile": ["--precision", "bf16", "--compile"]}

# joins a process group through ganlab.distributed.init() under a 1-process torchrun (which
# ganlab itself leaves alone: it forms a group only for WORLD_SIZE > 1) and all-reduces
PROBE = """
import torch
import torch.distributed as dist
from ganlab import distributed

distributed.launched = lambda: True  # WORLD_SIZE is 1: ganlab would not form a group
distributed.init()
devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
for device in devices:
    t = torch.full((1024,), 2.0, device=device)
    dist.all_reduce(t)
    assert float(t.sum()) == 2048.0, float(t.sum())
print(f"probe ok: backend {dist.get_backend()}, all_reduce on {', '.join(devices)}")
distributed.shutdown()
"""


@dataclass
class Case:
    name: str
    kind: str  # train | torchrun | probe | bench
    args: list[str] = field(default_factory=list)  # train overrides, or bench.py's options
    skip: str | None = None  # why it does not run here
    timeout: float = 300.0
    note: str = ""


def build_cases(device: str, quick: bool = False, steps: int | None = None,
                extra: list[str] | None = None, bench_steps: int = 300,
                bench_repeat: int = 1, bench_batch: int = 128,
                image_dir: Path = Path("images")) -> list[Case]:
    """Every case, in the order they run (the bench first: alone on the device). image_dir:
    where write_images puts the data-path cases' folder of images."""
    cuda = device.startswith("cuda")
    steps = steps or (3 if quick else 40)
    half = max(1, (steps + 1) // 2)  # one sample grid and checkpoint mid-run, one at the end
    common = [f"trainer.max_steps={steps}", f"log.every={max(1, steps // 4)}",
              f"log.sample_every={half}", f"trainer.ckpt_every={half}", "log.progress=false",
              "eval.every=0", f"device={device}"]
    if quick:
        common += ["log.n_samples=16", "eval.n_samples=64"]

    def train(model: str) -> list[str]:
        overrides = [*MODELS[model], *common]
        if quick:
            overrides += QUICK_MODELS.get(model, [])
            if model in ("worldmodel", "gamegan"):  # recorded episodes, not a number of images
                overrides += ["trainer.batch_size=16"]
            elif model not in ("cyclegan", "pix2pix"):  # one image (pair) at a time, as in
                # the papers
                overrides += ["dataset.n_samples=64", "trainer.batch_size=16"]
        return [*overrides, *(extra or [])]

    no_compile = ("--quick: torch.compile on the CPU needs a C++ compiler and 10-60 s a "
                  "network; run without --quick" if quick else None)
    bench_skip = ("--quick: bench.py runs two fresh processes of at least 25 steps per "
                  "setting; run without --quick (or scripts/bench.py)" if quick else None)
    cases = [Case(name, "bench", [*options, "--device", device, "--only", "dcgan-64",
                                  "--batch-size", str(bench_batch), "--steps", str(bench_steps),
                                  "--repeat", str(bench_repeat)],
                  skip=bench_skip,
                  timeout=600 if "--compile" in options else 300)
             for name, options in BENCH_SETTINGS.items()]
    cases.append(Case("dist-probe", "probe", timeout=120,
                      skip=("--quick: torchrun-1proc covers the launcher, and "
                            "tests/test_distributed.py a gloo group of two" if quick else None),
                      note="ganlab.distributed.init() + all_reduce, 1 process: "
                           + ("NCCL (cuda) and gloo (cpu)" if cuda else "gloo")))
    for precision in ("fp32", "bf16"):
        for model in MODELS:
            cases.append(Case(f"{model}-{precision}", "train",
                              [*train(model), f"trainer.precision={PRECISIONS[precision]}"]))
    cases.append(Case("dcgan-fp16", "train", [*train("dcgan"), "trainer.precision=16"],
                      note="GradScaler"))
    cases.append(Case("dcgan-bf16-channels_last", "train",
                      [*train("dcgan"), "trainer.precision=bf16", "trainer.channels_last=true"]))
    size, channels = (28, 1) if quick else (64, 3)
    folder = [*DATA_FOLDER, f"dataset.path={image_dir}", f"dataset.image_size={size}",
              f"dataset.channels={channels}"]
    synthetic = [*DATA_SYNTHETIC, f"dataset.image_size={size}", f"dataset.channels={channels}"]
    if quick:
        folder += ["trainer.batch_size=16", *QUICK_MODELS["dcgan"]]
        synthetic += ["dataset.n_samples=64", "trainer.batch_size=16", *QUICK_MODELS["dcgan"]]
    tail = [*common, *(extra or [])]
    cases.append(Case("data-on-device", "train", [*folder, *tail],
                      note="folder images, held on the device (the default)"))
    cases.append(Case("data-streamed-mmap", "train", [*folder, *tail, *STREAMED],
                      note="folder images, streamed from the cache's memory map: "
                           + " ".join(STREAMED)))
    cases.append(Case("data-streamed-host", "train", [*synthetic, *tail, *STREAMED],
                      note="synthetic images, streamed from host memory: " + " ".join(STREAMED)))
    cases.append(Case("torchrun-1proc", "torchrun",
                      [*train("dcgan"), "trainer.precision=bf16" if cuda else
                       "trainer.precision=32"],
                      note="WORLD_SIZE=1: ganlab forms no process group (see dist-probe)"))
    cases.append(Case("torchrun-1proc-sync_batchnorm", "torchrun",
                      [*train("dcgan"), "trainer.sync_batchnorm=true"],
                      skip=None if cuda else "SyncBatchNorm runs on CUDA only (ganlab "
                                             "refuses it on the CPU)"))
    for model in COMPILED:
        cases.append(Case(f"{model}-bf16-compile", "train",
                          [*train(model), "trainer.precision=bf16", "trainer.compile=true"],
                          skip=no_compile, timeout=600))
    return cases


def write_images(folder: Path, n: int, size: int, channels: int) -> None:
    """n seeded random PNGs (blocks of colour: they compress, and resizing keeps them) for
    the data-path cases; kept when already there."""
    import numpy as np
    from PIL import Image

    if folder.is_dir() and len(list(folder.glob("*.png"))) == n:
        return
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        blocks = rng.integers(0, 256, (8, 8, channels), dtype=np.uint8)
        pixels = blocks.repeat(size // 8 + 1, 0).repeat(size // 8 + 1, 1)[:size, :size]
        Image.fromarray(pixels[..., 0] if channels == 1 else pixels).save(folder / f"{i:04d}.png")


# --- running one case -----------------------------------------------------------------------

ERROR_MARKERS = ("error", "Error", "Exception", "Traceback", "Killed", "failed", "FAILED")
EXCEPTION_LINE = re.compile(r"^[\w.]*(Error|Exception|Interrupt)\b[^:]*:")


def last_error_line(text: str) -> str:
    """The line of an output that says what went wrong: ganlab's last `error: ...` line, else
    the last exception line of a traceback (not torchrun's ChildFailedError summary), else the
    last line that mentions an error (warnings aside), else the last line."""
    lines = [re.sub(r"^\[(rank|default)\d+\]:\s*", "", line.strip())
             for line in text.splitlines() if line.strip()]
    tests = (lambda line: line.startswith("error:"),
             lambda line: bool(EXCEPTION_LINE.match(line)) and "ChildFailedError" not in line,
             lambda line: any(m in line for m in ERROR_MARKERS) and "Warning" not in line)
    for test in tests:
        for line in reversed(lines):
            if test(line):
                return line[:500]
    return lines[-1][:500] if lines else "(no output)"


def read_metrics(run_dir: Path) -> dict | None:
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def judge_run(record: dict, run_dir: Path) -> None:
    """ok/failed from a finished train run's metrics.json: present, with finite losses."""
    metrics = read_metrics(run_dir)
    if metrics is None:
        record.update(status="failed", error=f"no metrics.json in {run_dir}")
        return
    losses = {k: v for k, v in metrics.items()
              if (k == "loss" or k.startswith("loss/")) and isinstance(v, int | float)}
    record["losses"] = losses
    record["losses_finite"] = bool(losses) and all(math.isfinite(v) for v in losses.values())
    for key in ("steps_per_second", "steady_steps_per_second", "step"):
        if key in metrics:
            record[key] = metrics[key]
    if not losses:
        record.update(status="failed", error="metrics.json holds no loss")
    elif not record["losses_finite"]:
        bad = ", ".join(f"{k}={v}" for k, v in losses.items() if not math.isfinite(v))
        record.update(status="failed", error=f"non-finite final loss: {bad}")
    else:
        record["status"] = "ok"


def subprocess_env(out_dir: Path, jobs: int) -> dict[str, str]:
    env = {**os.environ, "GANLAB_DATA": str(out_dir / "data"), "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    if jobs > 1 and "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    return env


def run_command(command: list[str], cwd: Path, log_path: Path, env: dict[str, str],
                timeout: float) -> tuple[int | None, str]:
    """(exit code, or None on timeout, and output) of a command in a session of its own, its
    output kept in log_path. On timeout the whole session is killed: torchrun's workers and
    the compile workers too, so that nothing holds on to the GPU."""
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=timeout)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            code = None
        log.write(output)
    return code, output


@contextlib.contextmanager
def isolated(cwd: Path, data_dir: Path, output: io.StringIO):
    """What `python -m ganlab train` in a fresh process would have to itself, for a run in
    this one: working dir, GANLAB_DATA, sys.argv, the logging handlers Hydra installs, the
    global RNGs and the CPU's denormal flushing are put back afterwards; stdout and stderr go
    to `output`."""
    import random

    import numpy as np
    import torch

    root = logging.getLogger()
    handlers, level, argv = list(root.handlers), root.level, sys.argv[:]
    old_cwd, old_data = os.getcwd(), os.environ.get("GANLAB_DATA")
    rng = torch.get_rng_state(), np.random.get_state(), random.getstate()
    flushing = bool((torch.tensor([1e-39]) * 1.0 == 0).item())
    os.chdir(cwd)
    os.environ["GANLAB_DATA"] = str(data_dir)
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
        sys.argv[:] = argv
        os.chdir(old_cwd)
        if old_data is None:
            os.environ.pop("GANLAB_DATA", None)
        else:
            os.environ["GANLAB_DATA"] = old_data
        torch.set_rng_state(rng[0])
        np.random.set_state(rng[1])
        random.setstate(rng[2])
        torch.set_flush_denormal(flushing)


def train_in_this_process(overrides: list[str], out_dir: Path) -> tuple[int, str]:
    """`python -m ganlab train OVERRIDES` run here: (exit code, output)."""
    from ganlab import __main__ as cli

    output = io.StringIO()
    code = 0
    with isolated(out_dir, out_dir / "data", output):
        try:
            cli.main(["train", *overrides])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
        except Exception as e:  # a crash is this case's failure, not the check's
            import traceback

            traceback.print_exc()
            code = 1
            print(f"{type(e).__name__}: {e}", file=sys.stderr)
    return code, output.getvalue()


def run_case(case: Case, out_dir: Path, in_process: bool, env: dict[str, str],
             timeout: float) -> dict:
    record = {"name": case.name, "kind": case.kind, "note": case.note}
    run_dir = out_dir / "runs" / case.name
    log_path = out_dir / "logs" / f"{case.name}.log"
    started = time.perf_counter()
    if case.kind == "bench":
        bench_out = out_dir / "bench" / f"{case.name}.json"
        command = [sys.executable, str(BENCH), *case.args, "--out", str(bench_out)]
    elif case.kind == "probe":
        script = out_dir / "dist_probe.py"
        script.write_text(PROBE)
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc_per_node=1", str(script)]
    else:
        if run_dir.exists():  # an earlier check's run in the same --out-dir
            shutil.rmtree(run_dir)
        overrides = [*case.args, f"hydra.run.dir={run_dir}"]
        command = [sys.executable, "-m", "ganlab", "train", *overrides]
        if case.kind == "torchrun":
            command[1:3] = ["-m", "torch.distributed.run", "--standalone",
                            "--nproc_per_node=1", "-m", "ganlab"]
        record["run_dir"] = str(run_dir)
    record["command"] = command
    if case.kind == "train" and in_process:
        code, output = train_in_this_process(overrides, out_dir)
        log_path.write_text("$ (in process) " + " ".join(command) + "\n" + output)
    else:
        code, output = run_command(command, out_dir, log_path, env, timeout)
    record["wall_s"] = round(time.perf_counter() - started, 2)
    record["log"] = str(log_path)
    if code is None:
        record.update(status="failed", error=f"timed out after {timeout:.0f} s; "
                      f"last line: {last_error_line(output)}")
    elif code != 0:
        record.update(status="failed", exit_code=code, error=last_error_line(output))
    elif case.kind == "bench":
        judge_bench(record, bench_out)
    elif case.kind == "probe":
        ok = [line for line in output.splitlines() if line.startswith("probe ok")]
        if ok:
            record.update(status="ok", note=ok[-1])
        else:
            record.update(status="failed", error="the probe printed no 'probe ok' line")
    else:
        judge_run(record, run_dir)
    return record


def judge_bench(record: dict, path: Path) -> None:
    try:
        report = json.loads(path.read_text())
        row = report["rows"][0]
    except (OSError, ValueError, KeyError, IndexError) as e:
        record.update(status="failed", error=f"no bench result in {path}: {e}")
        return
    steps_per_s = row["runner_images_per_s"] / row["batch"]
    record.update(status="ok", bench=row, steps_per_second=steps_per_s,
                  steady_steps_per_second=steps_per_s,
                  note=(f"batch {row['batch']}, {row['steps']} steps: runner "
                        f"{row['runner_images_per_s']:,.0f} img/s, bare "
                        f"{row['bare_images_per_s']:,.0f} img/s, overhead "
                        f"{row['overhead']:+.1%}"))


def compare_data_paths(records: dict[str, dict]) -> None:
    """The streamed path draws the same batches as the on-device one: on the CPU the final
    losses are equal; a GPU may differ in the last digits (cuDNN's algorithm choice)."""
    on_device, streamed = records.get("data-on-device"), records.get("data-streamed-mmap")
    if not (on_device and streamed and on_device["status"] == streamed["status"] == "ok"):
        return
    a, b = on_device["losses"], streamed["losses"]
    if a.keys() != b.keys():
        return
    worst = max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-12) for k in a)
    streamed["same_losses_as_on_device"] = worst == 0
    streamed["note"] += ("; final losses equal to data-on-device's" if worst == 0 else
                         f"; final losses differ from data-on-device's by up to {worst:.2%}")


# --- the report -----------------------------------------------------------------------------


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def table(records: list[dict]) -> str:
    lines = ["| case | status | wall s | steps/s (steady) | final losses | note |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in records:
        rate = ""
        if r.get("steps_per_second") is not None:
            rate = f"{fmt(r['steps_per_second'])} ({fmt(r.get('steady_steps_per_second'))})"
        losses = " ".join(f"{k}={fmt(v)}" for k, v in sorted(r.get("losses", {}).items()))
        note = r.get("error") or r.get("reason") or r.get("note") or ""
        note = note.replace("|", "\\|")
        lines.append(f"| {r['name']} | {r['status']} | {fmt(r.get('wall_s'))} | {rate} | "
                     f"{losses} | {note} |")
    return "\n".join(lines)


def environment(device: str) -> dict:
    import torch

    info = {"device": device, "torch": torch.__version__, "python": sys.version.split()[0],
            "cpus": os.cpu_count(), "threads": torch.get_num_threads()}
    if device.startswith("cuda") and torch.cuda.is_available():
        info.update(cuda=torch.version.cuda, gpu=torch.cuda.get_device_name(),
                    gpus=torch.cuda.device_count())
    try:
        from ganlab.provenance import source_version

        info["ganlab"] = source_version()
    except Exception:  # the report matters more than this line
        pass
    return info


def write_report(path: Path, header: dict, records: list[dict]) -> None:
    counts = {s: sum(r["status"] == s for r in records) for s in ("ok", "failed", "skipped")}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({**header, "summary": counts, "cases": records}, indent=2))
    tmp.replace(path)


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--quick", action="store_true",
                        help="tiny data, narrow networks, --steps 3, no compile or bench "
                             "(the CPU test); training cases run in this process")
    parser.add_argument("--out-dir", default=None,
                        help="runs, logs and the report (default: a new temp dir)")
    parser.add_argument("--only", default=None, help="comma-separated case names, run in "
                        "this order (--list shows them)")
    parser.add_argument("--list", action="store_true", help="print the case names and exit")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps per case (default 40; --quick 3)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="training cases at once (default 4 on CUDA, 1 on the CPU)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds: cases not started by then are skipped, and a running "
                             "case gets at most what is left (at least 60 s); default 420 on "
                             "CUDA, none on the CPU")
    parser.add_argument("--bench-steps", type=int, default=300)
    parser.add_argument("--bench-repeat", type=int, default=1)
    parser.add_argument("--bench-batch", type=int, default=128)
    parser.add_argument("--extra-override", action="append", default=[], metavar="KEY=VALUE",
                        help="appended to every training case (repeatable)")
    parser.add_argument("--subprocess", action="store_true",
                        help="run training cases in fresh processes under --quick too")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cuda = args.device.startswith("cuda")

    def make(image_dir: Path) -> list[Case]:
        return build_cases(args.device, args.quick, args.steps, args.extra_override,
                           args.bench_steps, args.bench_repeat, args.bench_batch, image_dir)

    names = [c.name for c in make(Path("images"))]
    if args.list:
        print("\n".join(names))
        return 0
    if args.only:
        chosen = list(dict.fromkeys(n.strip() for n in args.only.split(",") if n.strip()))
        unknown = [n for n in chosen if n not in names]
        if unknown:
            print(f"error: unknown case(s) {', '.join(unknown)}; --list shows them",
                  file=sys.stderr)
            return 2
        names = chosen
    if cuda:
        import torch

        if not torch.cuda.is_available():
            print("error: --device cuda but torch sees no CUDA device here; --device cpu "
                  "--quick checks the script itself", file=sys.stderr)
            return 2
    in_process = args.quick and not args.subprocess
    # cases in subprocesses at once (under --quick beside the in-process ones, one by one)
    jobs = args.jobs or (4 if cuda else 1)
    budget = args.budget if args.budget is not None else (420.0 if cuda else 0.0)
    out_dir = Path(args.out_dir or tempfile.mkdtemp(prefix="ganlab-gpu-check-")).resolve()
    by_name = {c.name: c for c in make(out_dir / "images")}
    cases = [by_name[n] for n in names]
    for sub in ("runs", "logs", "bench", "data"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    if any("dataset=folder" in c.args for c in cases if not c.skip):
        write_images(out_dir / "images", 64 if args.quick else FOLDER_IMAGES,
                     *((28, 1) if args.quick else (64, 3)))
    report_path = out_dir / "report.json"
    header = {"argv": list(argv if argv is not None else sys.argv[1:]), "quick": args.quick,
              "jobs": jobs, "budget_s": budget or None, **environment(args.device),
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    env = subprocess_env(out_dir, jobs)
    start = time.perf_counter()
    console = sys.stdout  # in-process runs redirect sys.stdout while they train
    records: dict[str, dict] = {}
    lock = threading.Lock()

    def save() -> None:
        with lock:
            done = [records[c.name] for c in cases if c.name in records]
            write_report(report_path, {**header, "wall_s": round(time.perf_counter() - start,
                                                                  1)}, done)

    def attempt(case: Case) -> None:
        if case.skip:
            record = {"name": case.name, "kind": case.kind, "status": "skipped",
                      "reason": case.skip, "note": case.note}
        else:
            timeout = case.timeout
            left = budget - (time.perf_counter() - start) if budget else None
            if left is not None and left <= 0:
                record = {"name": case.name, "kind": case.kind, "status": "skipped",
                          "reason": f"not started: the --budget of {budget:.0f} s was spent",
                          "note": case.note}
            else:
                if left is not None:
                    timeout = min(timeout, max(left, 60.0))
                try:
                    record = run_case(case, out_dir, in_process, env, timeout)
                except Exception as e:  # the check's own bug: this case, not the others
                    record = {"name": case.name, "kind": case.kind, "status": "failed",
                              "error": f"gpu_check: {type(e).__name__}: {e}"}
        with lock:
            records[case.name] = record
        save()
        mark = {"ok": "ok", "failed": "FAILED", "skipped": "skipped"}[record["status"]]
        detail = record.get("error") or record.get("reason") or ""
        print(f"[{time.perf_counter() - start:6.1f} s] {case.name}: {mark}"
              f"{' (' + fmt(record.get('wall_s')) + ' s)' if 'wall_s' in record else ''}"
              f"{': ' + detail if detail else ''}", file=console, flush=True)

    print(f"# gpu_check: {len(cases)} cases on {args.device}"
          f"{' (quick)' if args.quick else ''}; out {out_dir}",
          file=console, flush=True)
    for case in cases:  # the bench first, alone: its numbers are the ones to quote
        if case.kind == "bench":
            attempt(case)
    rest = [c for c in cases if c.kind != "bench"]
    here = [c for c in rest if in_process and c.kind == "train"]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        # in-process runs go one by one in this thread, beside the subprocess cases
        waiting = [pool.submit(attempt, c) for c in rest if c not in here]
        for case in here:
            attempt(case)
        for future in waiting:
            future.result()
    compare_data_paths(records)
    save()
    done = [records[c.name] for c in cases]
    text = table(done)
    counts = {s: sum(r["status"] == s for r in done) for s in ("ok", "failed", "skipped")}
    settings = ", ".join(f"{k} {header[k]}" for k in ("device", "gpu", "torch", "cuda")
                         if header.get(k))
    if header.get("ganlab"):
        settings += f", {header['ganlab']}"
    at_once = (f"training runs in this process, one by one, beside {jobs} subprocess "
               "case(s)" if in_process else f"{jobs} case(s) at a time")
    if jobs > 1:
        at_once += "; steps/s of concurrent cases are indicative, the bench rows ran alone"
    summary = (f"{counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped "
               f"in {time.perf_counter() - start:.0f} s ({settings}; {at_once})")
    markdown = f"# ganlab GPU check\n\n{summary}\n\n{text}\n"
    (out_dir / "report.md").write_text(markdown)
    print(f"\n{text}\n\n{summary}\nwrote {report_path} and {out_dir / 'report.md'}",
          flush=True)
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
