"""A family, a loss and a dataset defined outside ganlab (tests/fixtures/plugin, the README's
"Extending ganlab" examples) train from the command line without editing ganlab."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from conftest import TINY, assert_bad_input, run_cli

PLUGIN_ROOT = Path(__file__).parent / "fixtures" / "plugin"
ENV = {"GANLAB_PLUGINS": "ganlab_example_plugin",
       "PYTHONPATH": os.pathsep.join([str(PLUGIN_ROOT), os.environ.get("PYTHONPATH", "")])}


def test_a_plugin_family_trains_samples_and_learns_the_pixel_distribution(workdir):
    args = ["train", *TINY, "model=pixel_gaussian", "trainer.max_steps=150", "log.every=50",
            "log.sample_every=50", "trainer.ckpt_every=150", "hydra.run.dir=run"]
    result = run_cli(args, workdir, env=ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    net = torch.load(workdir / "run" / "checkpoints" / "last.pt", weights_only=True)
    # the synthetic images are uniform on 0..255, i.e. on [-1, 1]: std 1/sqrt(3) per pixel
    std = net["family"]["net"]["log_std"].exp()
    assert abs(float(std.mean()) - 3 ** -0.5) < 0.05, float(std.mean())
    assert (workdir / "run" / "samples" / "step_150.png").is_file()
    sample = run_cli(["sample", "ckpt=run", "n=5", "out=s.npz"], workdir, env=ENV)
    assert sample.returncode == 0, sample.stderr[-2000:]
    assert np.load(workdir / "s.npz")["images"].shape == (5, 1, 28, 28)


def test_a_plugin_loss_and_dataset_train_a_gan(workdir):
    result = run_cli(["train", *TINY, "model=mlp_gan", "dataset=moons", "dataset.n_samples=64",
                      "loss=lsgan_pearson", "hydra.run.dir=run"], workdir, env=ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    log = (workdir / "run" / "train.log").read_text()
    assert "moons: 64 points" in log and "loss/D=" in log


def test_plugin_choices_show_and_a_missing_plugin_is_bad_input(workdir):
    listed = run_cli(["train", "--help"], workdir, env=ENV)
    assert "pixel_gaussian" in listed.stdout and "lsgan_pearson" in listed.stdout
    assert "moons" in listed.stdout
    without = run_cli(["train", "model=pixel_gaussian"], workdir)
    assert_bad_input(without, "unknown model 'pixel_gaussian'")
    missing = run_cli(["train", *TINY], workdir, env={"GANLAB_PLUGINS": "no_such_plugin"})
    assert_bad_input(missing, "plugin 'no_such_plugin'", "cannot be imported")
