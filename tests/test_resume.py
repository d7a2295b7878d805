"""resume=auto (preempted cluster jobs) and the stored config compared on resume."""

from __future__ import annotations

import os
import signal

import torch
from conftest import TINY, assert_bad_input, log_shows, run_cli, signal_training

from ganlab.loop import config_changes


def weights(run_dir):
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    return state["step"], state["family"]["G"]


def test_resume_auto_starts_fresh_then_continues_its_own_run_dir(workdir):
    common = [*TINY, "trainer.ckpt_every=100", "hydra.run.dir=job", "resume=auto"]
    first = run_cli(["train", *common, "trainer.max_steps=3"], workdir)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "no checkpoint in" in (workdir / "job" / "train.log").read_text()
    second = run_cli(["train", *common, "trainer.max_steps=6"], workdir)  # requeued, longer
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resume=auto: continuing" in (workdir / "job" / "train.log").read_text()
    straight = run_cli(["train", *TINY, "trainer.ckpt_every=100", "trainer.max_steps=6",
                        "hydra.run.dir=straight"], workdir)
    assert straight.returncode == 0
    (step_a, g_a), (step_b, g_b) = weights(workdir / "job"), weights(workdir / "straight")
    assert step_a == step_b == 6
    assert all(torch.equal(g_a[k], g_b[k]) for k in g_a)


def test_resume_auto_after_a_preemption_signal(workdir):
    """SIGTERM (what Slurm sends before preempting): the run saves and exits 130; the same
    command line, run again, finishes the job from there."""
    args = [*TINY, "trainer.max_steps=400", "trainer.ckpt_every=1000", "log.every=1",
            "hydra.run.dir=job", "resume=auto"]
    ready = log_shows(workdir / "job" / "train.log", "step 5/")
    code, err = signal_training(args, workdir, ready, signal.SIGTERM)
    assert code == 130, err[-2000:]
    stopped, _ = weights(workdir / "job")
    assert 5 <= stopped < 400
    again = run_cli(["train", *args], workdir)
    assert again.returncode == 0, again.stderr[-2000:]
    assert weights(workdir / "job")[0] == 400


def test_resume_refuses_a_shape_change_naming_the_keys_and_logs_harmless_ones(workdir):
    base = [*TINY, "model=dcgan", "model.g_features=8", "model.d_features=8",
            "hydra.run.dir=run"]
    assert run_cli(["train", *base], workdir).returncode == 0
    result = run_cli(["train", "resume=run", "model.g_features=16", "trainer.max_steps=6"],
                     workdir)
    assert_bad_input(result, "cannot resume", "model.g_features: 8 -> 16")
    ok = run_cli(["train", "resume=run", "trainer.max_steps=6", "log.every=2",
                  "model.lr_g=1e-4"], workdir)
    assert ok.returncode == 0, ok.stderr[-2000:]
    text = (workdir / "run" / "train.log").read_text()
    assert "WARNING" in text and "resuming with model.lr_g changed: 0.0002 -> 0.0001" in text
    assert "resuming with log.every changed: 1 -> 2" in text


def test_config_changes_lists_every_differing_key():
    stored = {"model": {"g": 8, "h": [1, 2]}, "log": {"every": 1}}
    current = {"model": {"g": 16, "h": [1, 2]}, "log": {"every": 1}, "extra": 3}
    assert config_changes(stored, current) == [("extra", "<absent>", 3), ("model.g", 8, 16)]


def test_a_run_dir_that_cannot_be_created_is_one_error_line(workdir, monkeypatch):
    from ganlab import preflight
    from ganlab.errors import UserError

    locked = workdir / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(preflight.os, "access",  # root ignores chmod: say no for this folder
                        lambda p, mode: False if str(p) == str(locked) else real_access(p, mode))
    try:
        preflight._check_writable([f"hydra.run.dir={locked / 'a' / 'b'}"])
    except UserError as e:
        assert f"cannot create the run dir {locked / 'a' / 'b'}: {locked} is not writable" in str(e)
    else:
        raise AssertionError("no error")
    preflight._check_writable([f"hydra.run.dir={workdir / 'fine'}"])  # writable: no error


def test_a_checkpoint_from_before_newer_config_keys_still_loads(tmp_path):
    """Runs trained before model.ema, model.history, trainer.precision ... existed."""
    from conftest import make_config
    from omegaconf import OmegaConf

    from ganlab import checkpoint
    from ganlab.config import SyntheticDatasetConfig
    from ganlab.data.base import DataSpec
    from ganlab.families.gan import GanFamily, MlpGanConfig

    cfg = make_config(dataset=SyntheticDatasetConfig(), model=MlpGanConfig())
    spec = DataSpec("synthetic", "image", (1, 28, 28), num_classes=10)
    family = GanFamily(cfg, spec, torch.device("cpu"))
    old = OmegaConf.to_container(cfg, enum_to_str=True)
    for key in ("ema", "history", "minibatch_std", "instance_noise", "spectral_norm"):
        del old["model"][key]
    del old["trainer"]["precision"]
    del old["loss"]["clip_value"]
    path = tmp_path / "old.pt"
    checkpoint.save({"step": 3, "config": old, "spec": spec.to_dict(),
                     "family": family.state_dict()}, path)
    loaded = checkpoint.load_checkpoint(path)
    assert loaded.step == 3 and loaded.G_ema is None and loaded.config.model.ema == 0.0
    assert torch.equal(loaded.generate(torch.zeros(1, 100)), family.generate(torch.zeros(1, 100)))
