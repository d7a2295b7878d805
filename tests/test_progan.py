"""Progressive growing (model=progan): the schedule, the networks at every stage, the family's
view of real and generated images, and the CLI end to end (logging, resume in a fade-in, the
wgan_gp default, bad input)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import (
    TINY,
    assert_bad_input,
    assert_states_equal,
    compose_cfg,
    make_config,
    read_events,
    run_cli,
    run_in_process,
)

from ganlab.config import SyntheticDatasetConfig
from ganlab.data.base import DataSpec
from ganlab.errors import UserError
from ganlab.families.progan import ProganConfig, ProganFamily, schedule, stage_starts
from ganlab.models.progan import (
    EqualizedConv2d,
    EqualizedLinear,
    PixelNorm,
    ProganDiscriminator,
    ProganGenerator,
    features,
    n_stages_for,
    padded_size,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# tiny networks: the CLI runs below use the same widths
SMALL = ["model=progan", "model.max_features=8", "model.min_features=4", "model.latent_dim=8"]


@pytest.fixture
def single_threaded_cli(monkeypatch):
    """The CLI runs' torch uses one intra-op thread: tiny convs on a busy 2-core machine only
    wait for each other with two."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


# --- the schedule -----------------------------------------------------------------------------


def test_schedule_equal_shares_exact_values():
    # 120 steps, 3 stages (4, 8, 16 px): stages start at 0, 40, 80; fades last 20 steps
    assert stage_starts(120, 3, None) == [0, 40, 80]
    expected = {0: (0, 1.0), 39: (0, 1.0),  # the first stage has nothing to fade in
                40: (1, 0.0), 45: (1, 0.25), 50: (1, 0.5), 59: (1, 0.95), 60: (1, 1.0),
                79: (1, 1.0),
                80: (2, 0.0), 90: (2, 0.5), 100: (2, 1.0), 119: (2, 1.0), 120: (2, 1.0)}
    for step, value in expected.items():
        assert schedule(step, 120, 3, None, 0.5) == value, step
    # shares that do not divide: 100 steps in 4 stages of 25; fade_fraction 1: the whole stage
    assert stage_starts(100, 4, None) == [0, 25, 50, 75]
    assert schedule(30, 100, 4, None, 1.0) == (1, 0.2)
    assert schedule(99, 100, 4, None, 1.0) == (3, 0.96)
    stage, alpha = schedule(41, 100, 3, None, 0.5)  # starts 0, 33, 66: a 16.5-step fade
    assert stage == 1 and alpha == pytest.approx(8 / 16.5)
    assert schedule(75, 100, 3, None, 0.5)[1] == pytest.approx(9 / 17)  # last stage: 34 steps
    # no fade at all
    assert schedule(40, 120, 3, None, 0.0) == (1, 1.0)
    # a run shorter than the number of stages still ends at the final resolution
    assert stage_starts(2, 3, None) == [0, 0, 1]
    assert schedule(1, 2, 3, None, 0.5) == (2, 0.0)


def test_schedule_stage_steps_does_not_depend_on_the_run_length():
    for total in (None, 30, 1000):
        assert schedule(9, total, 3, 10, 0.5) == (0, 1.0)
        assert schedule(10, total, 3, 10, 0.5) == (1, 0.0)
        assert schedule(12, total, 3, 10, 0.5) == (1, 0.4)
        assert schedule(15, total, 3, 10, 0.5) == (1, 1.0)
        assert schedule(20, total, 3, 10, 0.5) == (2, 0.0)
        assert schedule(24, total, 3, 10, 0.5) == (2, 0.8)
        assert schedule(999, total, 3, 10, 0.5) == (2, 1.0)  # the last stage takes the rest
    with pytest.raises(ValueError, match="total"):
        schedule(0, None, 3, None, 0.5)


# --- the networks -----------------------------------------------------------------------------


def test_sizes_stages_and_widths():
    assert [padded_size(s) for s in (8, 9, 16, 28, 32, 64)] == [8, 16, 16, 32, 32, 64]
    assert [n_stages_for(s) for s in (8, 16, 28, 32, 64)] == [2, 3, 4, 4, 5]
    # max_features up to 16 px, halved per doubling above, floored at min_features
    assert [features(r, 128, 32) for r in (4, 8, 16, 32, 64, 128)] == [128, 128, 128, 64, 32, 32]


def _nets(channels=3, n_stages=3):
    torch.manual_seed(0)
    return (ProganGenerator(8, channels, n_stages, 8, 4),
            ProganDiscriminator(channels, n_stages, 8, 4))


def test_shapes_at_every_stage():
    G, D = _nets()
    z = torch.randn(5, 8)
    for stage, res in enumerate((4, 8, 16)):
        for alpha in (0.0, 0.5, 1.0):
            G.set_progress(stage, alpha)
            D.set_progress(stage, alpha)
            x = G(z)
            assert x.shape == (5, 3, res, res)
            assert D(x).shape == (5,)
        with pytest.raises(ValueError, match=f"{res} px"):
            D(torch.zeros(5, 3, 2 * res, 2 * res))  # D takes the current resolution only
    with pytest.raises(ValueError):
        G.set_progress(3, 1.0)
    with pytest.raises(ValueError):
        G.set_progress(1, 1.5)


def test_fade_in_starts_at_the_previous_stage_and_ends_on_the_new_layers():
    G, D = _nets()
    z = torch.randn(4, 8)
    for stage in (1, 2):
        G.set_progress(stage - 1, 1.0)
        previous = G(z)
        G.set_progress(stage, 0.0)
        start = G(z)
        # alpha 0: exactly the previous stage's images, upsampled: the fade-in starts smoothly
        assert torch.equal(start, F.interpolate(previous, scale_factor=2, mode="nearest"))
        G.set_progress(stage, 1.0)
        end = G(z)
        assert not torch.allclose(start, end)
        G.set_progress(stage, 0.25)
        assert torch.allclose(G(z), start + 0.25 * (end - start), atol=1e-6)
        # alpha 1 is the new toRGB path alone: the previous stage's toRGB no longer counts
        with torch.no_grad():
            G.to_rgb[stage - 1].weight.add_(1.0)
        G.set_progress(stage, 1.0)
        assert torch.equal(G(z), end)
        G.set_progress(stage, 0.25)
        assert not torch.allclose(G(z), start + 0.25 * (end - start), atol=1e-3)

    x = torch.randn(4, 3, 16, 16)
    D.set_progress(2, 0.0)  # D at alpha 0: the previous stage's D on the pooled image
    faded = D(x)
    D.set_progress(1, 1.0)
    assert torch.equal(faded, D(F.avg_pool2d(x, 2)))
    D.set_progress(2, 1.0)
    new = D(x)
    with torch.no_grad():
        D.from_rgb[1][0].weight.add_(1.0)
    assert torch.equal(D(x), new)


def test_equalised_learning_rate():
    torch.manual_seed(0)
    conv = EqualizedConv2d(64, 32, 3, padding=1)
    # stored as N(0, 1), biases 0
    weight = conv.weight.detach()
    assert float(weight.mean()) == pytest.approx(0.0, abs=0.02)
    assert float(weight.std()) == pytest.approx(1.0, abs=0.02)
    assert torch.count_nonzero(conv.bias) == 0
    # He's constant applied at runtime: sqrt(2 / fan_in), fan_in = 64 * 3 * 3
    assert conv.scale == pytest.approx(math.sqrt(2 / 576))
    x = torch.randn(2, 64, 8, 8)
    assert torch.allclose(conv(x), F.conv2d(x, conv.weight * math.sqrt(2 / 576), padding=1),
                          atol=1e-6)
    # so a unit-variance input gives outputs of variance about 2 (away from the zero padding)
    with torch.no_grad():
        assert float(conv(torch.randn(16, 64, 8, 8))[..., 1:-1, 1:-1].var()) == pytest.approx(
            2.0, rel=0.1)
    linear = EqualizedLinear(100, 10, gain=1.0)
    assert linear.scale == pytest.approx(0.1)
    # every weight of both networks is stored N(0, 1) with its runtime scale
    G, D = _nets()
    layers = [m for net in (G, D) for m in net.modules()
              if isinstance(m, (EqualizedConv2d, EqualizedLinear))]
    weights = torch.cat([m.weight.detach().flatten() for m in layers])
    assert float(weights.std()) == pytest.approx(1.0, abs=0.05)
    assert all(not isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) or m in layers
               for net in (G, D) for m in net.modules())
    assert G.to_rgb[0].scale == pytest.approx(1 / math.sqrt(8))  # toRGB: gain 1


def test_pixel_norm_gives_unit_mean_square_features():
    x = 7.0 * torch.randn(3, 16, 5, 5) + 2.0
    y = PixelNorm()(x)
    assert torch.allclose(y.pow(2).mean(dim=1), torch.ones(3, 5, 5), atol=1e-5)
    # inside G: every block's output (after its last conv) is pixel-normalised
    G, _ = _nets()
    G.set_progress(2, 1.0)
    seen = []
    for block in G.blocks:
        block.register_forward_hook(lambda m, i, out: seen.append(out))
    G(torch.randn(4, 8))
    assert len(seen) == 3
    for out in seen:
        assert torch.allclose(out.pow(2).mean(dim=1), torch.ones_like(out[:, 0]), atol=1e-4)


# --- the family -------------------------------------------------------------------------------


def family(size=28, **model) -> ProganFamily:
    cfg = make_config(
        dataset=SyntheticDatasetConfig(image_size=size),
        model=ProganConfig(max_features=8, min_features=4, latent_dim=8, **model))
    cfg.loss.name, cfg.loss.gp_weight = "wgan_gp", 10.0
    cfg.log.n_samples = 4
    torch.manual_seed(0)
    return ProganFamily(cfg, DataSpec("synthetic", "image", (1, size, size)),
                        torch.device("cpu"))


def test_family_pads_pools_and_fades_real_images():
    f = family(28, stage_steps=10, fade_fraction=0.5)
    f.run_length = 100
    x = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8)
    as_float = x.float() / 127.5 - 1.0
    padded = F.pad(as_float, (2, 2, 2, 2), value=-1.0)  # 28 px digits: 32 px, background -1
    f.updates = 35  # stage 3 (32 px) at alpha 1
    out = f.prepare_step()
    assert {k: float(v) for k, v in out.items()} == {
        "progan/stage": 3.0, "progan/alpha": 1.0, "progan/resolution": 32.0}
    assert torch.allclose(f._real(x), padded, atol=1e-6)
    f.updates = 0  # stage 0: 4 px, the 8x8 average of the padded image
    f.prepare_step()
    assert torch.allclose(f._real(x), F.avg_pool2d(padded, 8), atol=1e-6)
    f.updates = 12  # stage 1 at alpha 0.4: Karras' blend of 8 px and 4 px upsampled
    f.prepare_step()
    assert (f.stage, f.alpha) == (1, pytest.approx(0.4))
    eight = F.avg_pool2d(padded, 4)
    four_up = F.interpolate(F.avg_pool2d(eight, 2), scale_factor=2, mode="nearest")
    assert torch.allclose(f._real(x), 0.6 * four_up + 0.4 * eight, atol=1e-6)
    # what D sees and what G makes have the same size, so the gradient penalty works too
    assert f.G(torch.randn(6, 8)).shape == f._real(x).shape == (6, 1, 8, 8)
    out = f.train_step([(x, None)] * 5)
    assert math.isfinite(float(out["loss/gp"]))
    assert float(out["progan/resolution"]) == 8.0 and f.updates == 13


def test_generated_images_have_the_data_size_at_every_stage():
    f = family(28, stage_steps=10)
    f.run_length = 40
    sizes = set()
    for updates in (0, 10, 15, 25, 39):
        f.updates = updates
        f.prepare_step()
        images = f.generate(torch.randn(4, 8))
        assert images.shape == (4, 1, 28, 28)
        sizes.add(tuple(f.visuals()["samples"].shape))
    assert len(sizes) == 1  # grids compare over the run
    # at 4 px each generated pixel is an 8x8 block (nearest), cropped by the 2-px padding
    f.updates = 0
    f.prepare_step()
    raw = f.G(torch.randn(1, 8))
    shown = f.shown(raw)
    assert shown.shape == (1, 1, 28, 28)
    assert torch.equal(shown[0, 0, :6, :6], raw[0, 0, 0, 0].expand(6, 6))
    assert torch.equal(shown[0, 0, 6:14, 6:14], raw[0, 0, 1, 1].expand(8, 8))


def test_drift_penalty_and_a_loaded_family_samples_where_it_stopped():
    f = family(16, drift=0.5)
    d_real = torch.tensor([1.0, -3.0])
    assert float(f.d_regulariser(d_real)) == pytest.approx(0.5 * 5.0)
    assert family(16, drift=0.0).d_regulariser(d_real) is None

    f.run_length = 30  # 3 stages of 10 steps
    f.updates = 14
    state = f.state_dict()
    assert state["run_length"] == 30
    loaded = family(16, drift=0.5)  # like load_checkpoint: no loop, no run length
    loaded.load_state_dict(state)
    assert (loaded.stage, loaded.alpha) == (1, pytest.approx(0.8))
    assert loaded.generate(torch.randn(2, 8)).shape == (2, 1, 16, 16)
    state["run_length"] = None  # unknown length: the final stage
    loaded.load_state_dict(state)
    assert (loaded.stage, loaded.alpha) == (2, 1.0)


def test_check_config_refuses_what_progan_cannot_do():
    def cfg(*overrides: str):
        return compose_cfg("model=progan", "dataset=synthetic", *overrides)

    ProganFamily.check_config(cfg())  # 28 px: padded to 32
    with pytest.raises(UserError, match="at least 8 px"):
        ProganFamily.check_config(cfg("dataset.image_size=6"))
    with pytest.raises(UserError, match="image dataset"):
        ProganFamily.check_config(cfg("dataset=ring"))
    with pytest.raises(UserError, match=r"model\.history"):
        ProganFamily.check_config(cfg("model.history=10"))
    with pytest.raises(UserError, match=r"model\.d_dropout"):
        ProganFamily.check_config(cfg("model.d_dropout=0.2"))
    with pytest.raises(UserError, match="min_features"):
        ProganFamily.check_config(cfg("model.min_features=256"))


def test_karras_settings_are_the_default_and_the_command_line_wins():
    from ganlab.preflight import compose_all

    (cfg,) = compose_all(["model=progan"])
    assert (cfg.loss.name, cfg.loss.gp_weight, cfg.model.d_steps) == ("wgan_gp", 10.0, 1)
    assert (cfg.model.lr_g, cfg.model.lr_d, list(cfg.model.betas)) == (1e-3, 1e-3, [0.0, 0.99])
    (cfg,) = compose_all(["model=progan", "loss=lsgan", "model.d_steps=2"])
    assert (cfg.loss.name, cfg.loss.gp_weight, cfg.model.d_steps) == ("lsgan", 0.0, 2)
    assert cfg.model.lr_g == 1e-3
    # Gulrajani's preset on top of progan's file: the experiment's optimiser wins
    (cfg,) = compose_all(["model=progan", "experiment=wgan_gp"])
    assert (cfg.model.d_steps, cfg.model.lr_g, list(cfg.model.betas)) == (5, 1e-4, [0.0, 0.9])
    (cfg,) = compose_all(["model=dcgan", "loss=wgan_gp"])  # the loss alone: DCGAN's optimiser
    assert (cfg.loss.gp_weight, cfg.model.d_steps, cfg.model.lr_g) == (10.0, 1, 2e-4)


# --- the CLI ----------------------------------------------------------------------------------


def _scalars(events, tag):
    return {e.step: e.value for e in events.Scalars(tag)}


@pytest.mark.usefixtures("single_threaded_cli")
def test_train_grows_to_the_final_size_and_logs_the_schedule(workdir):
    """A 6-step run on 16 px images passes 4, 8 and 16 px (equal shares of 2 steps, each
    fading in for 1 step), logs stage/alpha/resolution and 16-px grids from the first one."""
    result = run_cli(["train", *TINY, *SMALL, "dataset.image_size=16", "trainer.max_steps=6",
                      "hydra.run.dir=run"], workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    run = workdir / "run"
    assert "name: wgan_gp" in (run / ".hydra/config.yaml").read_text()  # the model's default
    events = read_events(run / "tb")
    # step N logs update N - 1: updates 0-1 at 4 px, 2-3 at 8 px, 4-5 at 16 px
    assert _scalars(events, "progan/stage") == {1: 0, 2: 0, 3: 1, 4: 1, 5: 2, 6: 2}
    assert _scalars(events, "progan/alpha") == {1: 1, 2: 1, 3: 0, 4: 1, 5: 0, 6: 1}
    assert _scalars(events, "progan/resolution") == {1: 4, 2: 4, 3: 8, 4: 8, 5: 16, 6: 16}
    assert "loss/gp" in events.Tags()["scalars"]
    images = events.Images("samples")
    assert [e.step for e in images] == [0, 2, 4, 6]  # step 0: where training starts
    grid = 4 * 16 + 5 * 2  # 16 samples of 16 px, 4 to a row, 2-px padding
    assert {(e.width, e.height) for e in images} == {(grid, grid)}
    from PIL import Image

    assert Image.open(run / "samples/step_2.png").size == (grid, grid)
    # the trained family samples at the data size, at its final stage
    import ganlab

    loaded = ganlab.load_checkpoint(run)
    assert loaded.generate(torch.randn(3, 8)).shape == (3, 1, 16, 16)
    assert (loaded.stage, loaded.alpha) == (2, 1.0)


@pytest.mark.usefixtures("single_threaded_cli")
def test_resume_in_a_fade_in_is_bit_exact(workdir):
    """stage_steps=4, fade 3 steps: updates 4, 5, 6, 7 have alpha 0, 1/3, 2/3, 1. A run
    stopped after 6 steps (mid-fade) and resumed to 8 matches an 8-step run exactly."""
    common = [*TINY, *SMALL, "dataset.image_size=8", "model.stage_steps=4",
              "model.fade_fraction=0.75", "model.ema=0.9", "trainer.ckpt_every=100"]
    assert run_cli(["train", *common, "trainer.max_steps=8", "hydra.run.dir=full"],
                   workdir).returncode == 0
    assert run_cli(["train", *common, "trainer.max_steps=6", "hydra.run.dir=half"],
                   workdir).returncode == 0
    half_alpha = _scalars(read_events(workdir / "half/tb"), "progan/alpha")
    assert half_alpha[6] == pytest.approx(1 / 3)  # stopped in the middle of the fade-in
    result = run_cli(["train", "resume=half", "trainer.max_steps=8"], workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed_alpha = _scalars(read_events(workdir / "half/tb"), "progan/alpha")
    assert resumed_alpha[7] == pytest.approx(2 / 3) and resumed_alpha[8] == 1.0
    full = torch.load(workdir / "full/checkpoints/last.pt", weights_only=True)
    resumed = torch.load(workdir / "half/checkpoints/last.pt", weights_only=True)
    assert resumed["step"] == full["step"] == 8
    for state in (full, resumed):
        del state["config"], state["overrides"]  # trainer.max_steps and resume differ
    assert_states_equal(full, resumed)


@pytest.mark.usefixtures("single_threaded_cli")
@pytest.mark.parametrize(("args", "fragment"), [
    (["dataset=synthetic", "dataset.image_size=6"], "at least 8 px"),
    (["dataset=ring"], "needs an image dataset"),
])
def test_bad_input_exits_2_with_one_line(workdir, args, fragment, capsys):
    result = run_in_process(["train", "model=progan", *args, "device=cpu"], capsys, workdir)
    assert_bad_input(result, fragment, "model=progan")
    assert not (workdir / "outputs").exists()  # refused before any run dir
