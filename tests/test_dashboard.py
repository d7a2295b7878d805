"""What a user sees in TensorBoard: run names that say what the run is, a chart layout per
family, an HParams table of what was trained and how well, sample grids from step 0 and a
cadence that gives curves and sliders to short runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import read_events, train_in_process
from omegaconf import OmegaConf
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import plugin_data_pb2

from ganlab.logging import hparam_metrics
from ganlab.loop import cadences
from ganlab.run_names import fixed_keys

RING = ["model=mlp_gan", "dataset=ring", "dataset.n_samples=512", "model.g_hidden=[16]",
        "model.d_hidden=[16]", "trainer.batch_size=32", "log.progress=false", "device=cpu"]


@pytest.fixture(scope="module")
def ring_run(tmp_path_factory) -> Path:
    """A 20-step toy GAN with every log cadence left at its default, named by ganlab."""
    home = tmp_path_factory.mktemp("dashboard")
    train_in_process([*RING, "loss=hinge", "trainer.max_steps=20"], home)
    (run,) = (home / "outputs").glob("*/*")
    return run


def test_the_run_dir_names_the_model_loss_and_overrides(ring_run: Path) -> None:
    time, name = ring_run.name.split("_", 1)
    assert len(time) == len("15-28-02")
    # model and loss first; then what else the command line changed, short; device and the
    # progress bar say nothing about the run and are left out
    assert name == ("mlp_gan_hinge_ring_n_samples-512_g_hidden-16_d_hidden-16_batch_size-32"
                    "_max_steps-20")


def test_a_run_dir_is_a_valid_resume_value() -> None:
    """resume=<run dir> as typed: no `=`, `,` or brackets, which Hydra reads as syntax."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from ganlab.run_names import _short

    name = "_".join(_short(o) for o in ["model.g_hidden=[16,32]", "dataset.path=/a/b c",
                                       "model.lr_d=1e-4", "model.clip=-0.5"])
    assert name == "g_hidden-16+32_path-a-b-c_lr_d-1e-4_clip--0.5"
    (parsed,) = OverridesParser.create().parse_overrides([f"resume=outputs/{name}"])
    assert parsed.value() == f"outputs/{name}" and not parsed.is_sweep_override()


def test_a_sweep_names_its_jobs_by_what_they_vary() -> None:
    assert fixed_keys(["loss=lsgan,hinge", "trainer.max_steps=2", "model.lr_d=interval(1e-5,1e-3)",
                       "trainer.seed=range(3)", "dataset=ring"]) == [
        "trainer.max_steps", "dataset"]


def test_short_runs_get_curves_and_a_slider(ring_run: Path) -> None:
    events = read_events(ring_run / "tb")
    assert len(events.Scalars("loss/D")) == 20  # every step: 20 // 50 rounds up to 1
    # every 2 steps (20 // 10), and step 0: where training starts
    assert [e.step for e in events.Images("samples")] == list(range(0, 21, 2))
    assert "same fixed z" in events.SummaryMetadata("samples").summary_description
    long = OmegaConf.create({"log": {"every": None, "sample_every": None}, "eval": {"every": 0},
                             "trainer": {"ckpt_every": 1000}})
    assert cadences(long, 100_000) == {"log.every": 50, "log.sample_every": 500,
                                       "eval.every": 0, "trainer.ckpt_every": 1000}
    long.log.every = 7  # a cadence the user sets is kept
    assert cadences(long, 20)["log.every"] == 7


def test_the_gan_layout_puts_d_against_g(ring_run: Path) -> None:
    events = read_events(ring_run / "tb")
    (config,) = events.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(config.tensor_proto.string_val[0])
    charts = {chart.title: list(chart.multiline.tag) for category in layout.category
              for chart in category.chart}
    assert charts["D and G losses"] == [r"^loss/(D|G)$"]
    assert charts["D(x) and D(G(z))"] == [r"^D/(real|fake|wrong_label)$"]


def test_hparams_compare_what_was_trained_and_how_well(ring_run: Path) -> None:
    table = read_events(ring_run / "tb" / "hparams")
    tags = table.PluginTagToContent("hparams")
    # no experiment summary: TensorBoard builds the table from every run's session, with the
    # keys whose values differ between runs first
    assert "_hparams_/experiment" not in tags
    session = plugin_data_pb2.HParamsPluginData.FromString(
        tags["_hparams_/session_start_info"]).session_start_info
    names = set(session.hparams)
    # what names the run (group choices by their name), what the command line set, and what
    # the chosen model reads
    assert {"model.name", "dataset.name", "loss.name", "dataset.n_samples", "model.g_hidden",
            "model.lr_d", "trainer.seed"} <= names
    assert not [n for n in names if n.startswith(("log.", "eval.", "data.", "device"))]
    assert "dataset.std" not in names  # the dataset's settings only where the command set them
    # the metrics: the primary one, at the run's last step, under the run's own eval/ name
    assert table.Tags()["scalars"] == ["eval/modes_covered"]
    (final,) = table.Scalars("eval/modes_covered")
    assert final.step == 20
    scalars = read_events(ring_run / "tb").Tags()["scalars"]
    assert "eval/modes_covered" in scalars and not [s for s in scalars if "hparam" in s]
    assert hparam_metrics({"accuracy": 0.9, "step": 5, "steps_per_second": 3.0,
                           "kid": float("nan"), "precision": 0.5}) == ["accuracy", "precision"]
