"""End-to-end `python -m ganlab train` runs on tiny data, read back from the run dir."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import TINY, in_dir, job_dirs, read_events, run_cli, train_in_process

LOSSES = ["minimax", "nonsaturating", "lsgan", "hinge", "wgan", "wgan_gp"]


def _check_run_dir(run, steps: int) -> None:
    for path in (".hydra/config.yaml", "checkpoints/last.pt", "metrics.json", "train.log",
                 f"samples/step_{steps}.png"):
        assert (run / path).is_file(), path
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["step"] == steps
    assert metrics["steady_steps_per_second"] > 0  # the loop's own rate, for scripts/bench.py
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == steps
    assert "step 1/" in (run / "train.log").read_text()


@pytest.fixture(scope="module")
def loss_sweep(tmp_path_factory):
    """One sweep over every loss (one process, job i: LOSSES[i]), two D steps per G step, the
    same seed: loss -> run dir."""
    root = tmp_path_factory.mktemp("losses")
    result = run_cli(["train", "-m", *TINY, f"loss={','.join(LOSSES)}", "model.d_steps=2",
                      f"hydra.sweep.dir={root / 'sweep'}"], root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Warning" not in result.stderr and "warn(" not in result.stderr, result.stderr
    return dict(zip(LOSSES, job_dirs(root / "sweep"), strict=True))


def _first_step(run) -> dict[str, float]:
    """The scalars of step 1; D/real, D/fake and loss/D come from one forward pass of D (the
    last D step's, before its update)."""
    events = read_events(run / "tb")
    return {tag: events.Scalars(tag)[0].value for tag in events.Tags()["scalars"]}


@pytest.mark.parametrize("loss", LOSSES)
def test_train_every_loss_logs_scalars_and_images(loss_sweep, loss):
    run = loss_sweep[loss]
    _check_run_dir(run, steps=4)
    events = read_events(run / "tb")
    scalars = set(events.Tags()["scalars"])
    expected = {"loss/D", "loss/G", "D/real", "D/fake", "grad_norm/D", "grad_norm/G"}
    assert expected <= scalars, scalars
    assert ("loss/gp" in scalars) == (loss == "wgan_gp")  # the penalty: wgan_gp's alone
    assert [e.step for e in events.Scalars("loss/G")] == [1, 2, 3, 4]
    assert all(np.isfinite(e.value) for e in events.Scalars("loss/D"))
    images = events.Images("samples")
    assert [e.step for e in images] == [0, 2, 4]  # step 0: where training starts
    assert images[0].width == images[0].height > 28  # a grid of 16 28-px samples
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert f"name: {loss}" in text  # the resolved config as text
    assert "_hparams_/session_start_info" in read_events(run / "tb" / "hparams"
                                                         ).PluginTagToContent("hparams")

    # what only this loss gives: D's loss from the scores logged beside it (their batch
    # means; a mean of a convex loss is at least the loss of the mean), the sign of G's loss
    first = _first_step(run)
    real, fake, d_loss, g_loss = (first[k] for k in ("D/real", "D/fake", "loss/D", "loss/G"))
    if loss in ("minimax", "nonsaturating"):  # D's probabilities, binary cross-entropy
        assert 0 < real < 1 and 0 < fake < 1
        assert d_loss >= -math.log(real) - math.log(1 - fake) - 1e-5
        # G: -log D(G(z)) > 0, or minimax's log(1 - D(G(z))) < 0
        assert (g_loss > 0) == (loss == "nonsaturating"), g_loss
    elif loss == "lsgan":  # 1/2 (D(x) - 1)^2 + 1/2 D(G(z))^2; G: 1/2 (D(G(z)) - 1)^2
        assert d_loss >= 0.5 * (real - 1) ** 2 + 0.5 * fake**2 - 1e-5 and g_loss >= 0
    elif loss == "hinge":  # relu(1 - D(x)) + relu(1 + D(G(z))): not the critic's linear loss
        assert d_loss >= 2 - real + fake - 1e-5 > fake - real
    else:  # the critic's linear loss, exactly
        assert d_loss == pytest.approx(fake - real, abs=1e-5)
        assert first.get("loss/gp", 1.0) > 0
    # wgan clips every critic weight to [-0.01, 0.01] after each step; the others do not
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["family"]["D"]
    largest = max(t.abs().max().item() for k, t in state.items() if "running_" not in k
                  and t.is_floating_point())  # BatchNorm's statistics are no weights
    assert (largest <= 0.01) == (loss == "wgan"), largest


def test_the_losses_train_d_differently_from_the_same_start(loss_sweep):
    """The same seed, data and networks: minimax and nonsaturating share D's objective (the
    same first step) and differ in G's; every other loss gives D other numbers."""
    first = {loss: _first_step(run) for loss, run in loss_sweep.items()}
    shared = ("D/real", "D/fake", "loss/D")
    assert [first["minimax"][k] for k in shared] == [first["nonsaturating"][k] for k in shared]
    assert first["minimax"]["loss/G"] != first["nonsaturating"]["loss/G"]
    d_losses = [first[loss]["loss/D"] for loss in LOSSES if loss != "minimax"]
    assert len(set(d_losses)) == len(d_losses), dict(zip(LOSSES[1:], d_losses, strict=True))


def test_lecture_mlp_gan_with_flipped_labels(workdir):
    result = run_cli(["train", *TINY, "model=mlp_gan", "loss=minimax", "model.real_label=0",
                      "model.fake_label=1", "hydra.run.dir=run"], workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    _check_run_dir(workdir / "run", steps=4)
    events = read_events(workdir / "run" / "tb")
    real, fake, d_loss = ([e.value for e in events.Scalars(tag)] for tag in
                          ("D/real", "D/fake", "loss/D"))
    # step 1's D loss is the cross-entropy against the flipped targets (real 0, fake 1) of the
    # probabilities logged beside it (nearly constant over the batch: the mean's loss is
    # within 1e-3), not against the usual ones (0.007 away)
    flipped = -math.log(1 - real[0]) - math.log(fake[0])
    usual = -math.log(real[0]) - math.log(1 - fake[0])
    assert d_loss[0] == pytest.approx(flipped, abs=1e-3)
    assert abs(d_loss[0] - usual) > 3e-3
    # and D learns them: from its first update on it scores the fakes above the real images
    assert all(f > r for r, f in zip(real[1:], fake[1:], strict=True)), (real, fake)


def test_toy_ring_records_mode_metrics(workdir):
    result = run_cli(["train", *[a for a in TINY if not a.startswith("dataset")],
                      "model=mlp_gan", "dataset=ring", "dataset.n_samples=256",
                      "eval.n_samples=500", "eval.every=2", "hydra.run.dir=run"], workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    run = workdir / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["modes_total"] == 8
    # metrics.json holds exactly what the toy metric gives on the trained generator's samples
    import ganlab
    from ganlab.metrics.toy import mode_metrics

    family = ganlab.load_checkpoint(run)
    # the sample metrics' own seed: trainer.seed + 2 (metrics/samples.SampleMetrics)
    z = family.sample_noise(500, torch.Generator().manual_seed(family.config.trainer.seed + 2))
    expected = mode_metrics(family.generate(z), torch.tensor(family.spec.modes),
                            family.spec.mode_std, 0.2)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, nan_ok=True), key
    events = read_events(run / "tb")
    assert {"eval/modes_covered", "eval/high_quality_fraction"} <= set(events.Tags()["scalars"])
    scatter = events.Images("samples")[-1]
    assert scatter.width > 100  # a scatter plot, not a 2-pixel "image"


def test_multirun_sweep_writes_one_dir_per_job(workdir):
    result = run_cli(["train", "-m", *TINY, "trainer.max_steps=2", "loss=lsgan,hinge"], workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (workdir / "outputs" / "multirun").glob("*/*")
    jobs = job_dirs(sweep)
    assert [j.name for j in jobs] == ["0_loss-lsgan", "1_loss-hinge"]  # the swept value
    for job, loss in zip(jobs, ["lsgan", "hinge"], strict=False):
        assert f"name: {loss}" in (job / ".hydra" / "config.yaml").read_text()
        assert (job / "checkpoints" / "last.pt").is_file()


def test_sample_png_npz_and_interpolation(workdir):
    train_in_process([*TINY, "hydra.run.dir=run"], workdir)
    result = run_cli(["sample", "ckpt=run/checkpoints/last.pt", "n=10", "out=s.npz"], workdir)
    assert result.returncode == 0, result.stderr
    images = np.load(workdir / "s.npz")["images"]
    assert images.shape == (10, 1, 28, 28) and images.dtype == np.uint8
    assert images.max() > images.min()
    from ganlab import __main__

    with in_dir(workdir):  # the other variants in this process: seconds each saved
        __main__.main(["sample", "ckpt=run", "n=10", "out=t.npz"])  # a run dir works too
        __main__.main(["sample", "ckpt=run", "n=16", "out=g.png"])
        __main__.main(["sample", "ckpt=run", "n=3", "interpolate=true", "steps=5", "out=i.png"])
    assert np.array_equal(images, np.load(workdir / "t.npz")["images"])  # same seed, same images
    from PIL import Image

    grid = Image.open(workdir / "g.png")
    assert grid.size == (4 * 30 + 2, 4 * 30 + 2)  # 4x4 grid of 28 px with 2 px padding
    assert Image.open(workdir / "i.png").size == (5 * 30 + 2, 3 * 30 + 2)  # 3 rows of 5


def test_load_checkpoint_api(workdir):
    train_in_process([*TINY, "hydra.run.dir=run"], workdir)
    import ganlab

    family = ganlab.load_checkpoint(workdir / "run")
    assert not family.G.training and not family.D.training
    z = torch.randn(5, 100)
    with torch.no_grad():
        out = family.G(z)
    assert out.shape == (5, 1, 28, 28)
    assert out.min() >= -1 and out.max() <= 1


def test_a_failed_sweep_job_does_not_stop_the_others(workdir):
    result = run_cli(["train", "-m", *TINY, "trainer.max_steps=2", "model.lr_g=1e30,2e-4",
                      "loss=lsgan"], workdir)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: 1 sweep job(s) failed: job 0")
    jobs = job_dirs(sorted((workdir / "outputs" / "multirun").glob("*/*"))[-1])
    assert "non-finite loss" in (jobs[0] / "train.log").read_text()
    assert (jobs[1] / "checkpoints" / "last.pt").is_file()  # the second job still trained


def test_the_command_and_the_source_lead_train_log_and_the_text_tab(tmp_path):
    from conftest import read_events, train_in_process

    import ganlab

    args = [*TINY, "model.lr_d=3e-4", "hydra.run.dir=run"]
    train_in_process(args, tmp_path)
    lines = (tmp_path / "run" / "train.log").read_text().splitlines()
    command = "python -m ganlab train " + " ".join(args[:-1])  # hydra.* settings aside
    assert lines[0].endswith(f"command: {command}"), lines[:2]
    assert f"source: ganlab {ganlab.__version__}" in lines[1], lines[:2]
    events = read_events(tmp_path / "run" / "tb")
    text = events.Tensors("command/text_summary")[0].tensor_proto.string_val[0].decode()
    assert command in text and f"ganlab {ganlab.__version__}" in text
