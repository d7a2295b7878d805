"""The loop on its own (with a stand-in family), and interrupts through the CLI (every model's
resume: tests/test_resume.py)."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from conftest import TINY, log_shows, signal_training, tiny_loop

from ganlab import checkpoint
from ganlab.errors import UserError
from ganlab.families.base import Family
from ganlab.loop import Loop


class CountingFamily(Family):
    """One parameter that counts steps; its loss turns NaN at a chosen step."""

    def __init__(self, nan_at: int | None = None) -> None:
        self.w = torch.zeros(())
        self.steps = 0
        self.nan_at = nan_at

    def train_step(self, batch):
        x, _ = batch
        self.steps += 1
        self.w += 1
        loss = torch.tensor(float("nan")) if self.steps == self.nan_at else x.float().mean()
        return {"loss/main": loss}

    def state_dict(self):
        return {"w": self.w.clone(), "steps": self.steps}

    def load_state_dict(self, state):
        self.w, self.steps = state["w"].clone(), state["steps"]


def _loop(tmp_path, family, **trainer) -> Loop:
    return tiny_loop(tmp_path, family, **trainer)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    loop = _loop(tmp_path, CountingFamily(nan_at=5), max_steps=10)
    with pytest.raises(UserError, match=r"non-finite loss at step 5 \(loss/main; at step 6: "):
        loop.run()
    state = checkpoint.load(tmp_path / "checkpoints" / "last.pt")
    assert state["step"] == 4  # the checkpoint from before the NaN, untouched
    assert float(state["family"]["w"]) == 4


def test_epochs_set_the_number_of_steps(tmp_path):
    family = CountingFamily()
    result = _loop(tmp_path, family, epochs=3).run()  # 16 examples / batch 4 = 4 steps per epoch
    assert result["step"] == 12 and family.steps == 12


def test_sigint_saves_a_checkpoint_and_exits_130(workdir):
    args = [*TINY, "trainer.max_steps=100000", "trainer.ckpt_every=100000", "log.every=1",
            "hydra.run.dir=run"]
    code, err = signal_training(args, workdir, log_shows(workdir / "run" / "train.log",
                                                         "step 3/"))
    assert code == 130, err[-3000:]
    state = torch.load(workdir / "run/checkpoints/last.pt", weights_only=True)
    assert state["step"] >= 3
    assert "Traceback" not in err


class SignallingFamily(CountingFamily):
    """Sends this process a signal at chosen steps, as Slurm would during a step."""

    def __init__(self, signals: dict[int, int]) -> None:
        super().__init__()
        self.signals = signals

    def train_step(self, batch):
        out = super().train_step(batch)
        if self.steps in self.signals:
            os.kill(os.getpid(), self.signals[self.steps])
        return out


@pytest.fixture
def launcher_handler():
    """A stand-in for submitit's SIGUSR2 handler (it requeues the job); restored afterwards."""
    calls = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    yield calls
    signal.signal(signal.SIGUSR2, previous)


def test_under_a_launcher_sigterm_saves_and_goes_on_then_sigusr2_saves_and_hands_on(
        tmp_path, launcher_handler):
    family = SignallingFamily({3: signal.SIGTERM, 6: signal.SIGUSR2})
    loop = _loop(tmp_path, family, max_steps=20, ckpt_every=1000, keep_last=5)
    with pytest.raises(SystemExit) as exit_info:
        loop.run()
    assert exit_info.value.code == 130
    assert launcher_handler == [signal.SIGUSR2]  # called once, after the save
    saved = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*.pt"))
    assert saved == ["step_3.pt", "step_6.pt"]  # SIGTERM: a save, and training went on
    assert checkpoint.load(tmp_path / "checkpoints" / "last.pt")["step"] == 6
    handler = signal.getsignal(signal.SIGUSR2)  # the loop's handlers are gone again
    assert getattr(handler, "__self__", None) is None, handler


def test_without_a_launcher_sigusr2_saves_and_exits_130(tmp_path):
    family = SignallingFamily({4: signal.SIGUSR2})
    loop = _loop(tmp_path, family, max_steps=20, ckpt_every=1000)
    with pytest.raises(SystemExit) as exit_info:
        loop.run()
    assert exit_info.value.code == 130
    assert checkpoint.load(tmp_path / "checkpoints" / "last.pt")["step"] == 4
    assert family.steps == 4


def test_a_launcher_that_does_not_requeue_leaves_a_saved_run_and_exit_130(tmp_path, caplog):
    def give_up(signum, frame):
        raise RuntimeError("Job not requeued because: timed-out too many times")

    previous = signal.signal(signal.SIGUSR2, give_up)
    try:
        loop = _loop(tmp_path, SignallingFamily({2: signal.SIGUSR2}), max_steps=20)
        with pytest.raises(SystemExit) as exit_info:
            loop.run()
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert exit_info.value.code == 130
    assert checkpoint.load(tmp_path / "checkpoints" / "last.pt")["step"] == 2
    assert "did not requeue this job (RuntimeError: Job not requeued because" in caplog.text
