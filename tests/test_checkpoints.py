"""Checkpoints: the last K step files plus best, unreadable files, kill -9 during a write and
during training, a full disk and a read-only folder."""

from __future__ import annotations

import errno
import os
import pickle
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY, FullDisk, run_cli, signal_training, tiny_loop

from ganlab import checkpoint
from ganlab.errors import UserError
from ganlab.families.base import Family
from ganlab.loop import Loop

pytestmark = pytest.mark.usefixtures("one_thread")

ENOSPC = os.strerror(errno.ENOSPC)  # "No space left on device"
EACCES = os.strerror(errno.EACCES)  # "Permission denied"


class StepFamily(Family):
    """One parameter that counts steps; evaluate() reports a chosen fid per step."""

    def __init__(self, fids: dict[int, float] | None = None) -> None:
        self.w = torch.zeros(())
        self.steps = 0
        self.fids = fids or {}

    def train_step(self, batch):
        self.steps += 1
        self.w += 1
        return {"loss/main": batch[0].float().mean()}

    def evaluate(self):
        return {"fid": self.fids.get(self.steps, 100.0)} if self.fids else {}

    def state_dict(self):
        return {"w": self.w.clone(), "steps": self.steps}

    def load_state_dict(self, state):
        self.w, self.steps = state["w"].clone(), state["steps"]


def make_loop(run_dir: Path, family: Family, eval_every: int = 0, **trainer) -> Loop:
    return tiny_loop(run_dir, family, eval_every, **trainer)


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- the last K plus best --------------------------------------------------------------------


def test_keeps_the_last_k_step_files_plus_best(tmp_path):
    family = StepFamily(fids={2: 10.0, 4: 5.0, 6: 7.0})
    make_loop(tmp_path, family, eval_every=2, max_steps=7, ckpt_every=1, keep_last=3).run()
    folder = tmp_path / "checkpoints"
    assert names(folder) == ["best.pt", "last.pt", "step_5.pt", "step_6.pt", "step_7.pt"]
    assert checkpoint.load(folder / "last.pt")["step"] == 7
    for step in (5, 6, 7):
        state = checkpoint.load(folder / f"step_{step}.pt")
        assert state["step"] == step and float(state["family"]["w"]) == step
    best = checkpoint.load(folder / "best.pt")
    assert best["step"] == 4 and best["best"]["value"] == 5.0
    # a hard link to the file last.pt was when it was written: no second copy on disk
    assert os.path.samefile(folder / "step_7.pt", folder / "last.pt")


def test_keep_last_zero_keeps_only_last_and_best(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "step_1.pt").write_bytes(b"from an earlier part of the run")
    make_loop(tmp_path, StepFamily(fids={2: 1.0}), eval_every=2, max_steps=4, keep_last=0).run()
    assert names(folder) == ["best.pt", "last.pt"]


@pytest.mark.parametrize("keep, kept", [(2, ["step_4.pt", "step_6.pt"]), (1, ["step_4.pt"])])
def test_a_run_resumed_from_an_earlier_step_file_keeps_its_new_saves(tmp_path, keep, kept):
    make_loop(tmp_path, StepFamily(), max_steps=6, keep_last=3).run()  # step_2, 4, 6
    folder = tmp_path / "checkpoints"
    loop = make_loop(tmp_path, StepFamily(), max_steps=4, keep_last=keep)
    loop.run(resume=str(folder / "step_2.pt"))  # back to step 2, e.g. before a divergence
    assert names(folder) == ["last.pt", *kept]  # the abandoned step 6 goes first
    assert os.path.samefile(folder / "step_4.pt", folder / "last.pt")  # the new step 4


def test_resume_restores_a_step_link_a_kill_left_missing(tmp_path):
    # kill -9 between last.pt's rename and its step_<N>.pt link (seen once in CI)
    make_loop(tmp_path, StepFamily(), max_steps=3, ckpt_every=1, keep_last=3).run()
    folder = tmp_path / "checkpoints"
    (folder / "step_3.pt").unlink()
    make_loop(tmp_path, StepFamily(), max_steps=5, ckpt_every=1, keep_last=3).run(
        resume=str(tmp_path))
    assert names(folder) == ["last.pt", "step_3.pt", "step_4.pt", "step_5.pt"]
    assert checkpoint.load(folder / "step_3.pt")["step"] == 3


def test_step_files_are_copies_where_hard_links_fail(tmp_path, monkeypatch):
    def no_links(src, dst, *args, **kwargs):
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(os, "link", no_links)
    make_loop(tmp_path, StepFamily(), max_steps=6, keep_last=2).run()
    folder = tmp_path / "checkpoints"
    assert names(folder) == ["last.pt", "step_4.pt", "step_6.pt"]
    assert not os.path.samefile(folder / "step_6.pt", folder / "last.pt")
    assert (folder / "step_6.pt").read_bytes() == (folder / "last.pt").read_bytes()
    assert checkpoint.load(folder / "step_4.pt")["step"] == 4


def test_save_syncs_the_file_then_the_folder_after_the_rename(tmp_path, monkeypatch):
    """Without the folder's fsync a power cut can undo the rename, and leave no last.pt."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", "folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"))
        return real_fsync(fd)

    def replace(src, dst, *args, **kwargs):
        events.append(("rename", Path(dst).name))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    last = tmp_path / "checkpoints" / "last.pt"
    checkpoint.save({"step": 1}, last)
    assert events == [("fsync", "file"), ("rename", "last.pt"), ("fsync", "folder")]
    events.clear()
    checkpoint.keep_recent(last, 1, keep=3)  # a hard link: nothing to sync but the folder
    assert events == [("rename", "step_1.pt"), ("fsync", "folder")]


# --- files that are not readable checkpoints -------------------------------------------------


def _unreadable(kind: str, path: Path, good: bytes) -> None:
    if kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "truncated at the end":
        path.write_bytes(good[:-5])
    elif kind == "zero bytes":
        path.write_bytes(b"")
    elif kind == "random bytes":
        path.write_bytes(b"\x00" + random.Random(0).randbytes(4000))
    elif kind == "text":
        path.write_text("hello world\n")
    elif kind == "plain pickle":  # protocol 4: torch warns before refusing it
        path.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}, protocol=4))
    elif kind == "pickled module":
        torch.save(torch.nn.Linear(2, 2), path)
    elif kind == "another program's state dict":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, path)


@pytest.mark.parametrize("kind, message", [
    ("truncated", "checkpoint {} is corrupt or incomplete (RuntimeError)"),
    ("truncated at the end", "checkpoint {} is corrupt or incomplete (OSError)"),
    ("zero bytes", "checkpoint {} is corrupt or incomplete (an empty file)"),
    ("random bytes", "{} is not a ganlab checkpoint (not a file written by torch.save)"),
    ("text", "{} is not a ganlab checkpoint (not a file written by torch.save)"),
    ("plain pickle", "{} is not a ganlab checkpoint (not a file written by torch.save)"),
    ("pickled module", "{} is not a ganlab checkpoint (it holds "
                       "torch.nn.modules.linear.Linear objects, which the safe weights-only "
                       "loader does not read)"),
    ("another program's state dict", "{} is not a ganlab checkpoint"),
])
def test_unreadable_files_are_one_line_errors(tmp_path, kind, message, recwarn):
    good = tmp_path / "good.pt"
    checkpoint.save({"step": 1, "w": torch.randn(1000)}, good)
    path = tmp_path / "bad.pt"
    _unreadable(kind, path, good.read_bytes())
    with pytest.raises(UserError) as caught:
        checkpoint.load(path)
    assert str(caught.value) == message.format(path)
    assert not recwarn.list  # nothing else on stderr beside the error line


def test_a_damaged_checkpoint_names_the_step_files_beside_it(tmp_path):
    make_loop(tmp_path, StepFamily(), max_steps=6).run()
    last = tmp_path / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:100])  # not through the link: a new file
    with pytest.raises(UserError, match=r"corrupt or incomplete \(RuntimeError\); other "
                                        r"checkpoints beside it: step_2.pt, step_4.pt, step_6.pt"):
        checkpoint.load(tmp_path)


# --- kill -9 ---------------------------------------------------------------------------------

WRITER = r"""
import sys, torch
from pathlib import Path
from ganlab import checkpoint

path, step = Path(sys.argv[1]), int(sys.argv[2])
big = torch.arange(4_000_000, dtype=torch.float32)  # 16 MB: most of the time goes to writing
while True:
    step += 1
    checkpoint.save({"step": step, "big": big + step}, path)
    print(step, flush=True)
"""


def test_temp_files_left_behind_are_ignored_then_removed(tmp_path):
    folder = tmp_path / "checkpoints"
    checkpoint.save({"step": 1}, folder / "last.pt")
    for name in ("last.pt.tmp", "best.pt.tmp", "step_3.pt.tmp"):
        (folder / name).write_bytes(b"PK\x03\x04 half a file")
    assert checkpoint.load(tmp_path)["step"] == 1
    assert checkpoint.step_checkpoints(folder) == []
    checkpoint.save({"step": 2}, folder / "last.pt")
    assert names(folder) == ["last.pt"]


def test_kill_9_during_writes_never_leaves_last_unreadable(tmp_path):
    path = tmp_path / "checkpoints" / "last.pt"
    tmp = path.with_name("last.pt.tmp")
    rng = random.Random(1)
    step, mid_write = 0, 0
    for _ in range(5):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(step)],
                                  stdout=subprocess.PIPE, text=True)
        first = int(writer.stdout.readline())  # at least one save has completed
        time.sleep(rng.uniform(0.0, 0.3))
        writer.kill()
        writer.wait()
        writer.stdout.close()
        mid_write += tmp.exists()
        state = checkpoint.load(path)  # a temp file left behind is never read
        assert state["step"] >= first
        assert torch.equal(state["big"], torch.arange(4_000_000, dtype=torch.float32)
                           + state["step"])
        step = state["step"]
    assert mid_write, "no kill landed during a write: the test proved nothing"
    checkpoint.save({"step": step + 1}, path)  # the next save removes the leftover
    assert names(path.parent) == ["last.pt"]


def test_kill_9_during_training_then_resume(workdir):
    args = [*TINY, "trainer.max_steps=100000", "trainer.ckpt_every=1", "log.sample_every=0",
            "hydra.run.dir=run"]
    folder = workdir / "run" / "checkpoints"
    delay = random.Random(2).uniform(0.0, 0.2)

    def saved_thrice() -> bool:  # then a random moment later, maybe mid-write
        if not (folder / "step_3.pt").exists():
            return False
        time.sleep(delay)
        return True

    code, err = signal_training(args, workdir, saved_thrice, signal.SIGKILL)
    assert code == -signal.SIGKILL, err[-2000:]
    killed_at = checkpoint.load(folder / "last.pt")["step"]
    assert killed_at >= 3
    for step, path in checkpoint.step_checkpoints(folder):  # none of them half-written
        assert checkpoint.load(path)["step"] == step
    result = run_cli(["train", "resume=run", f"trainer.max_steps={killed_at + 2}"], workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert checkpoint.load(folder / "last.pt")["step"] == killed_at + 2
    assert not list(folder.glob("*.tmp"))
    kept = [step for step, _ in checkpoint.step_checkpoints(folder)]
    assert kept[-3:] == [killed_at, killed_at + 1, killed_at + 2] and len(kept) == 3


# --- a full disk, a read-only folder ---------------------------------------------------------


@pytest.mark.parametrize("where", ["write", "fsync", "step copy"])
def test_full_disk_is_one_error_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, where):
    loop = make_loop(tmp_path, StepFamily(), max_steps=6, ckpt_every=2)
    full = lambda: loop.step >= 4  # noqa: E731  (the disk fills up after the first save)
    real_open, real_fsync, real_link = open, os.fsync, os.link

    def faulty_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        copy = Path(file).name.startswith("step_")
        fails = where == "write" or (where == "step copy" and copy)
        return FullDisk(f) if full() and "w" in mode and fails else f

    def faulty_fsync(fd):
        if full() and where == "fsync":
            raise OSError(errno.ENOSPC, ENOSPC)
        return real_fsync(fd)

    def faulty_link(src, dst, *args, **kwargs):
        if full() and where == "step copy":  # no hard links: the step file is a copy
            raise OSError(errno.EPERM, os.strerror(errno.EPERM))
        return real_link(src, dst, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "open", faulty_open, raising=False)
    monkeypatch.setattr(os, "fsync", faulty_fsync)
    monkeypatch.setattr(os, "link", faulty_link)
    folder = tmp_path / "checkpoints"
    failed = folder / ("step_4.pt" if where == "step copy" else "last.pt")
    with pytest.raises(UserError) as caught:
        loop.run()
    assert str(caught.value) == f"could not write checkpoint {failed}: {ENOSPC}"
    monkeypatch.undo()
    # last.pt is whole: the previous save, or (a failed step copy) the one just written
    assert checkpoint.load(folder / "last.pt")["step"] == (4 if where == "step copy" else 2)
    assert names(folder) == ["last.pt", "step_2.pt"]  # no temp file left behind


def test_read_only_checkpoint_folder_is_one_error(tmp_path, monkeypatch):
    make_loop(tmp_path, StepFamily(), max_steps=2).run()
    folder = tmp_path / "checkpoints"
    before = (folder / "last.pt").read_bytes()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):  # root ignores the mode: refuse the way the OS would
            real_open = open

            def read_only(file, mode="r", *args, **kwargs):
                if "w" in mode:
                    raise PermissionError(errno.EACCES, EACCES, str(file))
                return real_open(file, mode, *args, **kwargs)

            monkeypatch.setattr(checkpoint, "open", read_only, raising=False)
        loop = make_loop(tmp_path, StepFamily(), max_steps=4)
        with pytest.raises(UserError) as caught:
            loop.run(resume=str(folder / "last.pt"))
    finally:
        folder.chmod(0o755)
    assert str(caught.value) == f"could not write checkpoint {folder / 'last.pt'}: {EACCES}"
    assert (folder / "last.pt").read_bytes() == before
    assert names(folder) == ["last.pt", "step_2.pt"]
