"""Shared helpers: run the real CLI in a subprocess on tiny data, read TensorBoard back."""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import logging
import math
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

# pyproject runs the suite on pytest-xdist workers, one per core: each worker, and every CLI it
# starts, keeps to one intra-op thread so that the workers do not fight over the cores (set
# before torch is imported; tiny models gain nothing from more threads anyway)
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

# a tiny, fast training run: synthetic 28-px images, a few steps, every cadence exercised
TINY = [
    "dataset=synthetic",
    "dataset.n_samples=64",
    "trainer.batch_size=16",
    "trainer.max_steps=4",
    "log.every=1",
    "log.sample_every=2",
    "log.n_samples=16",
    "trainer.ckpt_every=2",
    "log.progress=false",
    "device=cpu",
]


def run_cli(args: list[str], cwd: Path, timeout: float = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "GANLAB_DATA": str(cwd / "data"), "PYTHONWARNINGS": "default",
           **(env or {})}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", "ganlab", *args], check=False, cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def in_dir(cwd: Path):
    """The working dir and GANLAB_DATA (cwd/data) run_cli gives a subprocess, for code run in
    this process; both put back afterwards."""
    old_cwd, old_data = os.getcwd(), os.environ.get("GANLAB_DATA")
    os.chdir(cwd)
    os.environ["GANLAB_DATA"] = str(cwd / "data")
    try:
        yield
    finally:
        os.chdir(old_cwd)
        if old_data is None:
            os.environ.pop("GANLAB_DATA", None)
        else:
            os.environ["GANLAB_DATA"] = old_data


def train_in_process(args: list[str], cwd: Path) -> None:
    """`python -m ganlab train ARGS` run from cwd, in this process: the code the CLI runs from
    the command line on (preflight, Hydra, the loop), about 0.5 s for a tiny run instead of a
    new interpreter's 3 s. For runs that must succeed (a non-zero exit fails the test).
    Afterwards sys.argv, the logging handlers Hydra installed, the global RNGs and the CPU's
    denormal flushing (ganlab.runtime.flush_denormals) are as before."""
    import random

    import numpy as np
    import torch

    from ganlab import __main__

    root = logging.getLogger()
    handlers, level, argv = list(root.handlers), root.level, sys.argv[:]
    rng = torch.get_rng_state(), np.random.get_state(), random.getstate()
    flushing = bool((torch.tensor([1e-39]) * 1.0 == 0).item())  # a denormal read as zero
    try:
        with in_dir(cwd):
            __main__.main(["train", *args])
    except SystemExit as e:
        if e.code:
            raise AssertionError(f"train {' '.join(args)} exited {e.code}") from e
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
        sys.argv[:] = argv
        torch.set_rng_state(rng[0])  # seeded by the run
        np.random.set_state(rng[1])
        random.setstate(rng[2])
        torch.set_flush_denormal(flushing)  # the run turned it on


def train_refused_in_process(args: list[str], cwd: Path,
                             capsys) -> subprocess.CompletedProcess:
    """`python -m ganlab train ARGS` in this process (as train_in_process) for a run that must
    be refused: its exit code and what it printed, for assert_bad_input."""
    capsys.readouterr()
    try:
        train_in_process(args, cwd)
    except AssertionError as e:
        code = int(str(e).rsplit("exited ", 1)[1])
    else:
        code = 0
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def signal_training(args: list[str], cwd: Path, ready, sig: int = signal.SIGINT,
                    timeout: float = 120) -> tuple[int, str]:
    """Start `python -m ganlab train ARGS`, send `sig` once ready() holds (polled), and
    return its exit code and stderr."""
    env = {**os.environ, "GANLAB_DATA": str(cwd / "data")}
    proc = subprocess.Popen([sys.executable, "-m", "ganlab", "train", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def log_shows(log: Path, text: str):
    """A ready() for signal_training: the run's train.log contains `text`."""
    return lambda: log.exists() and text in log.read_text()


def make_config(model, dataset=None, **sections):
    """A run config built in Python from schema instances (ganlab.config.build_config), with
    the sections a model's config file would bring: a loss for GANs, a defence for
    classifiers. dataset: synthetic 28-px digits by default."""
    from ganlab.attacks.defenses import NoDefenseConfig
    from ganlab.config import SyntheticDatasetConfig, build_config
    from ganlab.losses import LossConfig

    family = model["family"] if isinstance(model, dict) else model.family
    if family in ("gan", "progan"):
        sections.setdefault("loss", LossConfig())
    if family == "classifier":
        sections.setdefault("defense", NoDefenseConfig())
    return build_config(model, dataset or SyntheticDatasetConfig(), **sections)


def tiny_loop(run_dir: Path, family, eval_every: int = 0, **trainer):
    """A Loop over 16 random 4x4 images (batch 4, checkpoints every 2 steps) driving a stand-in
    family in-process; `trainer` overrides trainer.* keys."""
    import torch

    from ganlab.data.base import DataSpec, InMemoryDataset
    from ganlab.loop import Loop

    cfg = make_config({"name": "x", "family": "x"})
    cfg.trainer.batch_size = 4
    cfg.trainer.ckpt_every = 2
    cfg.log.progress = False
    cfg.log.every = 50  # losses looked at only when checkpointing (every 2 steps)
    cfg.log.sample_every = 0
    cfg.eval.every = eval_every
    cfg.trainer.update(trainer)
    data = InMemoryDataset(DataSpec("synthetic", "image", (1, 4, 4)),
                           torch.randint(0, 255, (16, 1, 4, 4), dtype=torch.uint8))
    return Loop(cfg, family, data, run_dir, overrides=[])


def run_in_process(args: list[str], capsys,
                   cwd: Path | None = None) -> subprocess.CompletedProcess | None:
    """A bad command line through the code `python -m ganlab` runs, without a new process
    (seconds saved per call): the small commands, and train up to Hydra (None when the train
    preflight accepts the command line). cwd: run from there, with run_cli's GANLAB_DATA
    (cwd/data). tests/test_troubleshooting.py checks that it prints what the CLI prints."""
    from ganlab import __main__, preflight
    from ganlab.errors import UserError, fail

    capsys.readouterr()
    with in_dir(cwd) if cwd is not None else contextlib.nullcontext():
        if args[0] == "train":
            try:
                preflight.prepare_train_args(args[1:])
            except UserError as e:
                error = e
            else:
                return None
        with pytest.raises(SystemExit) as stop:
            if args[0] == "train":
                fail(str(error))  # what ganlab.__main__ does with it
            __main__.main(args)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, stop.value.code, out, err)


def job_dirs(sweep: Path) -> list[Path]:
    """A sweep's job folders (`<number>_<swept values>`, e.g. `0_loss-lsgan`) by job number."""
    jobs = [p for p in sweep.iterdir() if p.is_dir() and p.name.split("_")[0].isdigit()]
    return sorted(jobs, key=lambda p: int(p.name.split("_")[0]))


def read_events(tb_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def assert_bad_input(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit 2, exactly one `error: ...` line on stderr, no traceback."""
    assert result is not None, "run_in_process: the train preflight accepted the command line"
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a busy 2-core machine: intra-op threads only add overhead and stalls.
    Modules that want it: pytestmark = pytest.mark.usefixtures("one_thread")."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every torchvision MNIST/Fashion-MNIST and CIFAR-10/100 download fails at once
    (FashionMNIST inherits MNIST.download, CIFAR100 CIFAR10's); returns the classes that
    tried."""
    from torchvision import datasets

    calls: list[str] = []

    def fail(self: datasets.MNIST) -> None:
        calls.append(type(self).__name__)
        raise OSError("network disabled in tests")

    monkeypatch.setattr(datasets.MNIST, "download", fail)
    monkeypatch.setattr(datasets.CIFAR10, "download", fail)
    # and no Debian dataset-fashion-mnist package to fall back on, whatever this machine has
    from ganlab.data import mnist

    monkeypatch.setattr(mnist, "DEBIAN_FASHION_MNIST", Path("/nonexistent/fashion-mnist"))
    return calls


# --- comparing saved states ---------------------------------------------------------------


def assert_states_equal(a, b, path: str = "state") -> None:
    """Two saved states (checkpoints, state_dicts) hold the same keys and bit-identical values:
    recursive over dicts, lists and tuples; tensors by torch.equal, with dtype and shape (NaN
    equals NaN in the same place). Fails naming the first key path that differs, e.g.
    state['family']['opt_g']['state'][0]['exp_avg']."""
    import torch

    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            raise AssertionError(f"{path}: keys differ: only in the first "
                                 f"{sorted(map(repr, a.keys() - b.keys()))}, only in the second "
                                 f"{sorted(map(repr, b.keys() - a.keys()))}")
        for key in a:
            assert_states_equal(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), (
            f"{path}: {type(a).__name__} of {len(a)} vs {type(b).__name__} of {len(b)}")
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_states_equal(x, y, f"{path}[{i}]")
    elif torch.is_tensor(a) or torch.is_tensor(b):
        assert torch.is_tensor(a) and torch.is_tensor(b), (
            f"{path}: {type(a).__name__} vs {type(b).__name__}")
        assert (a.dtype, a.shape) == (b.dtype, b.shape), (
            f"{path}: {a.dtype} {tuple(a.shape)} vs {b.dtype} {tuple(b.shape)}")
        if torch.equal(a, b):
            return
        if a.is_floating_point():
            nan = a.isnan()
            if torch.equal(nan, b.isnan()) and torch.equal(a[~nan], b[~nan]):
                return
            differ = (a != b) & ~(nan & b.isnan())
            worst = (a - b).abs()[differ].max().item() if differ.any() else float("nan")
            raise AssertionError(f"{path}: {int(differ.sum())} of {a.numel()} values differ "
                                 f"(by up to {worst:.3g})")
        raise AssertionError(f"{path}: {int((a != b).sum())} of {a.numel()} values differ")
    elif isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return
    else:
        assert type(a) is type(b) and a == b, f"{path}: {a!r} != {b!r}"


# --- in-process building blocks -------------------------------------------------------------


def batch(n: int = 8, seed: int = 0, shape: tuple[int, ...] = (1, 28, 28), classes: int = 10,
          floats: bool = False):
    """A seeded (images, labels) pair from one generator: uint8 images in [0, 255] (floats:
    [0, 1] floats) of the given shape, then labels in [0, classes)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    if floats:
        x = torch.rand((n, *shape), generator=g)
    else:
        x = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)
    return x, torch.randint(0, classes, (n,), generator=g)


def compose_cfg(*overrides: str):
    """The run config Hydra composes from conf/ for these overrides (no preflight)."""
    from hydra import compose, initialize_config_dir

    from ganlab.config import CONF_DIR
    from ganlab.plugins import discover

    discover()  # every schema registered, as train does, whichever tests ran before
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def build_family(model, spec=None, dataset=None, **settings):
    """A family on the CPU from a model config instance (DcganConfig(g_features=8), ...),
    initialised after torch.manual_seed(0), 4 logged samples, run length 100. settings: dotted
    config keys, **{"loss.name": "wgan_gp", "model.ema": 0.9}. spec: 28-px digits with 10
    classes by default."""
    import torch
    from omegaconf import OmegaConf

    from ganlab.config import SyntheticDatasetConfig
    from ganlab.data.base import DataSpec
    from ganlab.families import FAMILIES

    cfg = make_config(model, dataset or SyntheticDatasetConfig())
    cfg.log.n_samples = 4
    for key, value in settings.items():
        OmegaConf.update(cfg, key, value)
    torch.manual_seed(0)
    family = FAMILIES.get(cfg.model.family)(
        cfg, spec or DataSpec("synthetic", "image", (1, 28, 28), num_classes=10),
        torch.device("cpu"))
    family.run_length = 100
    return family


def gan_family(model=None, loss: str = "nonsaturating", spec=None, **gan):
    """build_family for a GAN: mlp_gan by default; the loss with its usual extra (wgan: clipping
    at 0.01, wgan_gp: penalty weight 10); gan: model.* settings by name (ema=0.9)."""
    from ganlab.families.gan import MlpGanConfig

    extra = {"wgan": {"loss.clip_value": 0.01}, "wgan_gp": {"loss.gp_weight": 10.0}}
    settings = {"loss.name": loss, **extra.get(loss, {}),
                **{f"model.{key}": value for key, value in gan.items()}}
    return build_family(model or MlpGanConfig(), spec, **settings)


# --- files ----------------------------------------------------------------------------------


def idx_bytes(tensor) -> bytes:
    """An unsigned-byte IDX file: two zero bytes, type 0x08, ndim, big-endian dims, data."""
    import torch

    header = struct.pack(">BBBB", 0, 0, 0x08, tensor.dim())
    header += b"".join(struct.pack(">I", d) for d in tensor.shape)
    return header + tensor.to(torch.uint8).contiguous().numpy().tobytes()


def write_idx(raw: Path, split: str, images, labels, gz: bool = True) -> None:
    """<split>-images-idx3-ubyte and <split>-labels-idx1-ubyte in raw/, gzip'ed (.gz) as
    distributed unless gz=False."""
    raw.mkdir(parents=True, exist_ok=True)
    for name, tensor in ((f"{split}-images-idx3-ubyte", images),
                         (f"{split}-labels-idx1-ubyte", labels)):
        data = idx_bytes(tensor)
        if gz:
            (raw / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (raw / name).write_bytes(data)


def make_job(sweep: Path, num, overrides: list[str], metrics: dict | None = None,
             log: str = "") -> Path:
    """A job dir of a Hydra sweep as ganlab leaves it: .hydra/overrides.yaml and config.yaml
    (trainer.max_steps 100), train.log holding `log`, and metrics.json when metrics is given
    (a finished job)."""
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (job / ".hydra" / "config.yaml").write_text("trainer:\n  max_steps: 100\n")
    (job / "train.log").write_text(log)
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    return job


class FullDisk:
    """A file on a disk that fills up after `room` bytes: later writes fail with ENOSPC."""

    def __init__(self, f, room: int = 4096) -> None:
        self._f, self._written, self._room = f, 0, room

    def write(self, data) -> int:
        if self._written + len(data) > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._written += len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()
