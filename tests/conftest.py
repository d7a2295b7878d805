"""Shared helpers: run the real CLI in a subprocess on tiny data, read TensorBoard back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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
    cfg.log.sample_every = 0
    cfg.eval.every = eval_every
    cfg.trainer.update(trainer)
    data = InMemoryDataset(DataSpec("synthetic", "image", (1, 4, 4)),
                           torch.randint(0, 255, (16, 1, 4, 4), dtype=torch.uint8))
    return Loop(cfg, family, data, run_dir, overrides=[])


def run_in_process(args: list[str], capsys) -> subprocess.CompletedProcess | None:
    """A bad command line through the code `python -m ganlab` runs, without a new process
    (seconds saved per call): the small commands, and train up to Hydra (None when the train
    preflight accepts the command line). tests/test_troubleshooting.py checks that it prints
    what the CLI prints."""
    from ganlab import __main__, preflight
    from ganlab.errors import UserError, fail

    capsys.readouterr()
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


def read_events(tb_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def assert_bad_input(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit 2, exactly one `error: ...` line on stderr, no traceback."""
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
    """Every torchvision MNIST/Fashion-MNIST download fails at once (FashionMNIST inherits
    MNIST.download); returns the classes that tried."""
    from torchvision import datasets

    calls: list[str] = []

    def fail(self: datasets.MNIST) -> None:
        calls.append(type(self).__name__)
        raise OSError("network disabled in tests")

    monkeypatch.setattr(datasets.MNIST, "download", fail)
    return calls
