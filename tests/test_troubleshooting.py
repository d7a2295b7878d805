"""The README's Troubleshooting table, run row by row: each bad input exits 2 with exactly the
message the table shows (one `error: ...` line, no traceback).

The rows come from README.md (between the troubleshooting:start/end markers), so the table and
the tests cannot drift apart. Rows that fail in the train preflight, and the small commands
(sample, translate, attack), run in-process through the same code the CLI runs (one test shows
the CLI prints the same line); the rest run the real CLI, with downloads disabled and, for the
full-disk and read-only rows, a simulated failing filesystem under ganlab.checkpoint.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY, assert_bad_input, run_cli, run_in_process

from ganlab import checkpoint

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- troubleshooting:start -->", "<!-- troubleshooting:end -->"

# rows that need a broken environment, by their "situation" cell; every key must be a row
FAULTS = {
    "the disk fills up while a checkpoint is saved": "enospc",
    "the run's `checkpoints/` folder is not writable": "readonly",
}

# the real CLI (`python -m ganlab`), offline, optionally with checkpoint writes failing after
# the first one, as on a full disk (ENOSPC after a few KB) or a read-only folder (EACCES at open)
PRELUDE = r"""
import errno, os, runpy, sys
from torchvision import datasets

def _offline(*args, **kwargs):
    raise OSError("network disabled in tests")

datasets.MNIST.download = _offline  # FashionMNIST inherits it
datasets.CelebA.download = _offline
datasets.CIFAR10.download = _offline  # CIFAR100 inherits it
fault = os.environ.get("GANLAB_TEST_FAULT")
if fault:
    from ganlab import checkpoint

    sys.path.insert(0, os.environ["GANLAB_TEST_HELPERS"])
    from conftest import FullDisk  # the tests' own: ENOSPC after 4 KB

    opened = []

    def faulty_open(file, mode="r", *args, **kwargs):
        if not any(m in mode for m in "wax+"):
            return open(file, mode, *args, **kwargs)
        opened.append(file)
        if len(opened) == 1:
            return open(file, mode, *args, **kwargs)
        if fault == "readonly":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
        return FullDisk(open(file, mode, *args, **kwargs))

    checkpoint.open = faulty_open
runpy.run_module("ganlab", run_name="__main__", alter_sys=True)
"""


def _cells(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [c.strip().replace("\\|", "|") for c in cells]


def _code(cell: str) -> str:
    assert cell.startswith("`") and cell.endswith("`"), cell
    return cell[1:-1]


def table_rows() -> list[tuple[str, str, str]]:
    """(situation, command, message) for every row of the README table."""
    text = README.read_text()
    assert text.count(START) == 1 and text.count(END) == 1, "troubleshooting markers missing"
    lines = [line for line in text.split(START)[1].split(END)[0].splitlines()
             if line.startswith("|")]
    header = [c.lower() for c in _cells(lines[0])]
    col = {name: next(i for i, c in enumerate(header) if c.startswith(name))
           for name in ("situation", "command", "message")}
    rows = []
    for line in lines[2:]:
        cells = _cells(line)
        rows.append((cells[col["situation"]], _code(cells[col["command"]]),
                     _code(cells[col["message"]])))
    return rows


ROWS = table_rows()


def test_the_table_is_whole():
    situations = [s for s, _, _ in ROWS]
    assert len(ROWS) >= 15
    assert len(set(situations)) == len(situations), "situations must be unique"
    assert set(FAULTS) <= set(situations), set(FAULTS) - set(situations)
    for _, command, message in ROWS:
        assert command.startswith("python -m ganlab "), command
        assert not message.startswith("error:"), message


@pytest.fixture(scope="module")
def dcgan_run(tmp_path_factory) -> Path:
    """A finished two-step DCGAN run (a GAN checkpoint for the wrong-family rows)."""
    home = tmp_path_factory.mktemp("dcgan")
    run = home / "run"
    result = run_cli(["train", *TINY, "trainer.max_steps=2", f"hydra.run.dir={run}"], home)
    assert result.returncode == 0, result.stderr[-2000:]
    return run


def places(tmp_path: Path, dcgan_run: Path) -> dict[str, str]:
    """The README's placeholders, made real."""
    empty = tmp_path / "empty"
    empty.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    whole = (dcgan_run / "checkpoints" / "last.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(whole[: len(whole) // 2])
    model = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2), model)
    return {"<data_dir>": str(data), "<dcgan run>": str(dcgan_run), "<run>": str(tmp_path / "run"),
            "<empty dir>": str(empty), "<truncated.pt>": str(truncated), "<model.pt>": str(model)}


def fill(text: str, values: dict[str, str]) -> str:
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text


def cli(args: list[str], cwd: Path, data_dir: str, fault: str | None = None):
    env = {**os.environ, "GANLAB_DATA": data_dir, "PYTHONWARNINGS": "default"}
    env.pop("HYDRA_FULL_ERROR", None)
    env.pop("GANLAB_TEST_FAULT", None)
    if fault:
        env["GANLAB_TEST_FAULT"] = fault
        env["GANLAB_TEST_HELPERS"] = str(Path(__file__).parent)  # for conftest.FullDisk
    if args[0] == "train" and not any(a.startswith("log.progress=") for a in args):
        args = [*args, "log.progress=false"]  # a progress bar also writes to stderr
    return subprocess.run([sys.executable, "-c", PRELUDE, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize("situation, command, message", ROWS, ids=[r[0] for r in ROWS])
def test_row(situation, command, message, tmp_path, dcgan_run, capsys, monkeypatch):
    if "device=cuda" in command and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    if "hydra/launcher=" in command:  # the `sweep` extra's launchers, skipped without it as in
        pytest.importorskip("hydra_plugins.hydra_joblib_launcher")  # test_sweep_launchers.py
        pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    if "hydra/sweeper=" in command:
        pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    values = places(tmp_path, dcgan_run)
    monkeypatch.setenv("GANLAB_DATA", values["<data_dir>"])
    monkeypatch.chdir(tmp_path)
    args = shlex.split(fill(command, values))[3:]  # after python -m ganlab
    fault = FAULTS.get(situation)
    result = None if fault else run_in_process(args, capsys)
    if result is None:
        result = cli(args, tmp_path, values["<data_dir>"], fault)
    assert_bad_input(result)
    assert result.stderr.strip() == "error: " + fill(message, values)
    if fault:  # the previous checkpoint is intact, and no temp file is left behind
        folder = tmp_path / "run" / "checkpoints"
        assert checkpoint.load(folder / "last.pt")["step"] > 0
        assert not list(folder.glob("*.tmp"))


def test_cli_prints_what_the_in_process_rows_print(tmp_path, dcgan_run, capsys, monkeypatch):
    """The in-process shortcut is faithful: a preflight row and a small-command row give the
    same stderr through `python -m ganlab`."""
    values = places(tmp_path, dcgan_run)
    monkeypatch.setenv("GANLAB_DATA", values["<data_dir>"])
    monkeypatch.chdir(tmp_path)
    chosen = [r for r in ROWS if r[0] in ("a typo in a key",
                                          "a checkpoint of another family (translate)")]
    assert len(chosen) == 2
    for _, command, _ in chosen:
        args = shlex.split(fill(command, values))[3:]
        inside = run_in_process(args, capsys)
        assert inside is not None
        outside = run_cli(args, tmp_path)
        assert_bad_input(outside)
        assert (outside.returncode, outside.stderr) == (inside.returncode, inside.stderr)
