"""StyleGAN2 (model=stylegan): the networks at every size, the training phases (lazy R1, path
length, their optimizer correction, style mixing, the ramped EMA, the mean w), the truncation
trick, the style-mixing figure, resume inside the lazy-regularisation cycle, and bad input."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from conftest import (
    assert_bad_input,
    assert_states_equal,
    batch,
    build_family,
    run_in_process,
    train_in_process,
    train_refused_in_process,
)

from ganlab.data.base import DataSpec
from ganlab.errors import UserError
from ganlab.families.capabilities import Sampler, StyleMixer, TruncatedSampler
from ganlab.families.stylegan import StyleganConfig, StyleganFamily, style_mixing_figure
from ganlab.models.stylegan import (
    MappingNetwork,
    StyleDiscriminator,
    StyleGenerator,
    downsample2d,
    num_ws,
    upsample2d,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# tiny networks: 16 channels at most, z and w of 8, two mapping layers
SMALL = dict(latent_dim=8, w_dim=8, mapping_layers=2, channel_base=64, channel_max=16)
# the CLI runs: 16-px images (num_ws 6), 8 channels at most, batches of 4
TINY_CLI = ["model=stylegan", "model.latent_dim=8", "model.w_dim=8", "model.mapping_layers=2",
            "model.channel_base=32", "model.channel_max=8", "dataset=synthetic",
            "dataset.image_size=16", "dataset.n_samples=16", "trainer.batch_size=4",
            "log.progress=false", "device=cpu", "log.n_samples=4", "eval.n_samples=8",
            "eval.classifier_metrics=false"]


def family(**settings) -> StyleganFamily:
    model = StyleganConfig(**{**SMALL, **settings.pop("model", {})})
    return build_family(model, **settings)


# --- the networks ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [8, 16, 32, 64])
def test_shapes_at_every_supported_size(size):
    torch.manual_seed(0)
    G = StyleGenerator(8, 8, 2, 0.01, size, 3, 128, 16)
    D = StyleDiscriminator(size, 3, 128, 16)
    assert G.num_ws == num_ws(size) == 2 * int(math.log2(size)) - 2
    z = torch.randn(5, 8)
    ws = G.styles(z)
    assert ws.shape == (5, G.num_ws, 8)
    images = G(z)
    assert images.shape == (5, 3, size, size)
    assert D(images).shape == (5,)
    with pytest.raises(ValueError, match="styles"):
        G.synthesis(ws[:, 1:])
    with pytest.raises(ValueError, match=f"{size} px"):
        D(torch.zeros(2, 3, 2 * size, 2 * size))


def test_28_px_digits_are_padded_to_32_and_cropped_back():
    f = family()
    assert f.resolution == 32 and f.num_styles == 8 and f.size == 28
    x, _ = batch(4)
    real = f._real(x)
    assert real.shape == (4, 1, 32, 32)
    assert torch.all(real[..., :2, :] == -1) and torch.all(real[..., -2:, :] == -1)
    assert torch.allclose(real[..., 2:30, 2:30], x.float() / 127.5 - 1, atol=1e-6)
    z = f.sample_noise(3, torch.Generator().manual_seed(0))
    assert f.generate(z).shape == (3, 1, 28, 28)
    assert isinstance(f, Sampler) and isinstance(f, TruncatedSampler)
    assert isinstance(f, StyleMixer)


def test_resampling_filters_keep_a_constant_and_the_mapping_lr_multiplier():
    ones = torch.ones(1, 2, 8, 8)
    assert torch.allclose(upsample2d(ones)[..., 2:-2, 2:-2], torch.ones(1, 2, 12, 12))
    assert torch.allclose(downsample2d(ones)[..., 1:-1, 1:-1], torch.ones(1, 2, 2, 2))
    torch.manual_seed(0)
    mapping = MappingNetwork(16, 16, 3, lr_mult=0.01)
    layer = mapping.net[0]
    # stored as N(0, 1/0.01^2), used as N(0, 1/fan_in): equalised lr, 100 times slower
    assert 80 < float(layer.weight.detach().std()) < 120
    assert layer.weight_gain == pytest.approx(0.01 / 4)
    assert 0.2 < float((layer.weight.detach() * layer.weight_gain).std()) < 0.3


# --- training ----------------------------------------------------------------------------------


def test_lazy_regularisers_run_on_their_intervals_with_the_optimizer_correction(monkeypatch):
    f = family(**{"model.r1_interval": 4, "model.pl_weight": 2.0, "model.pl_interval": 2})
    # lr and betas ** (interval / (interval + 1)), as the reference
    assert f.opt_d.param_groups[0]["lr"] == pytest.approx(0.0025 * 4 / 5)
    assert f.opt_d.param_groups[0]["betas"][1] == pytest.approx(0.99 ** (4 / 5))
    assert f.opt_g.param_groups[0]["lr"] == pytest.approx(0.0025 * 2 / 3)
    assert f.opt_d.param_groups[0]["betas"][0] == 0.0
    assert f.double_backward == {"D", "G"}
    calls = []
    r1, pl = f._r1_step, f._pl_step
    monkeypatch.setattr(f, "_r1_step", lambda real: (calls.append(("r1", f.updates)), r1(real)))
    monkeypatch.setattr(f, "_pl_step", lambda n: (calls.append(("pl", f.updates)), pl(n)))
    torch.manual_seed(1)
    out = [f.train_step(batch(8, seed=i)) for i in range(5)]
    assert calls == [("r1", 0), ("pl", 0), ("pl", 2), ("r1", 4), ("pl", 4)]
    assert out[0]["loss/r1"] > 0 and out[0]["loss/pl"] > 0
    assert out[1]["loss/r1"] == out[0]["loss/r1"]  # the latest value, until the next R1 step
    assert out[4]["loss/r1"] != out[0]["loss/r1"]
    assert float(f.pl_mean) > 0 and all(torch.isfinite(v).all() for v in out[-1].values())

    plain = family()  # no path length: G's optimizer is not corrected
    assert plain.opt_g.param_groups[0]["lr"] == 0.0025
    assert plain.opt_d.param_groups[0]["lr"] == pytest.approx(0.0025 * 16 / 17)
    assert plain.double_backward == {"D"}


def test_the_r1_step_penalises_ds_input_gradient():
    """One R1 step against a hand-computed one: Adam's first step moves each weight by lr
    times the sign of its gradient, so a step of the penalty alone shows its gradient."""
    f = family(**{"model.r1_gamma": 1.0, "model.r1_interval": 1})
    real = f._real(batch(8)[0])
    before = {k: v.clone() for k, v in f.D.state_dict().items()}
    x = real.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(f.D(x).sum(), x, create_graph=True)
    expected = grad.square().sum(dim=(1, 2, 3)).mean()
    (weight_grad,) = torch.autograd.grad(expected, f.D.out.weight)
    expected = expected.detach()
    f._r1_step(real)
    assert float(f.last_r1) == pytest.approx(float(expected), rel=1e-5)
    moved = f.D.state_dict()["out.weight"] - before["out.weight"]
    lr = f.opt_d.param_groups[0]["lr"]
    assert torch.allclose(moved, -lr * torch.sign(weight_grad), atol=lr * 1e-2)


def test_style_mixing_uses_two_ws_split_at_a_crossover():
    f = family(**{"model.style_mixing": 1.0})
    f.G.eval()  # the mean w stays put: only the split is looked at here
    torch.manual_seed(3)
    crossovers = set()
    for _ in range(12):
        ws = f._mixed_styles(4)
        first, last = ws[:, 0], ws[:, -1]
        assert not torch.allclose(first, last)
        same_as_first = [torch.equal(ws[:, i], first) for i in range(f.num_styles)]
        same_as_last = [torch.equal(ws[:, i], last) for i in range(f.num_styles)]
        k = same_as_first.index(False)  # the crossover: layers 0..k-1 one w, k.. the other
        assert all(same_as_first[:k]) and all(same_as_last[k:]) and 1 <= k < f.num_styles
        crossovers.add(k)
    assert len(crossovers) > 2  # a random crossover each batch
    no_mixing = family(**{"model.style_mixing": 0.0})
    ws = no_mixing._mixed_styles(4)
    assert all(torch.equal(ws[:, i], ws[:, 0]) for i in range(no_mixing.num_styles))


def test_mix_takes_the_first_ws_coarse_styles_and_the_seconds_fine_ones():
    f = family()
    g = torch.Generator().manual_seed(0)
    a, b, c = (f.sample_noise(2, g) for _ in range(3))
    mixed = f.mix(a, b, 3)
    wa, wb = f.G_ema.styles(a), f.G_ema.styles(b)
    expected = f._crop(f.G_ema.synthesis(torch.cat([wa[:, :3], wb[:, 3:]], dim=1)))
    assert torch.equal(mixed, expected)
    # the layers after the crossover come from the second z: changing only the first z's
    # fine layers' source changes nothing, changing the second z changes the image
    assert torch.equal(f.mix(a, b, 3), f.mix(a, b, 3))
    assert not torch.allclose(f.mix(a, c, 3), mixed)
    assert not torch.allclose(f.mix(c, b, 3), mixed)
    assert torch.equal(f.mix(a, a, 3), f.generate(a))
    with pytest.raises(UserError, match="crossover"):
        f.mix(a, b, f.num_styles)


def test_w_avg_moves_in_training_and_the_ema_follows_g_with_its_ramp():
    f = family()
    assert torch.count_nonzero(f.G.mapping.w_avg) == 0
    torch.manual_seed(0)
    out = f.train_step(batch(8))
    # the first step: no image seen yet, so the half-life is 0 and G_ema is G
    assert float(out["stylegan/ema_beta"]) == 0.0
    for p, q in zip(f.G_ema.parameters(), f.G.parameters(), strict=True):
        assert torch.equal(p, q)
    moved = f.G.mapping.w_avg.clone()
    assert torch.count_nonzero(moved) > 0
    assert torch.equal(f.G_ema.mapping.w_avg, moved)  # buffers copied to G_ema
    out = f.train_step(batch(8, seed=1))
    # half-life min(10,000, 0.05 * 8 images seen) = 0.4 images: beta = 0.5 ** (8 / 0.4)
    assert float(out["stylegan/ema_beta"]) == pytest.approx(0.5 ** 20)
    assert not torch.equal(f.G.mapping.w_avg, moved)
    f.images_seen = 10**7
    assert f.ema_beta(8) == pytest.approx(0.5 ** (8 / 10_000))  # the full half-life
    # the tracker's rule: w_avg <- lerp(mean w of the batch, w_avg, 0.995)
    mapping = f.G.mapping.train()
    z, before = torch.randn(6, 8), mapping.w_avg.clone()
    w = mapping(z)
    assert torch.allclose(mapping.w_avg, w.mean(0).lerp(before, 0.995), atol=1e-6)
    mapping(z, track=False)  # the style-mixing draw leaves it alone
    assert torch.allclose(mapping.w_avg, w.mean(0).lerp(before, 0.995), atol=1e-6)


def test_truncation_psi_1_is_plain_sampling_and_psi_to_0_the_image_of_the_mean_w():
    f = family()
    torch.manual_seed(0)
    for i in range(3):
        f.train_step(batch(8, seed=i))
    f.eval()
    z = f.sample_noise(4, torch.Generator().manual_seed(5))
    plain = f.generate(z)
    with f.truncated(1.0):
        assert torch.equal(f.generate(z), plain)
    w_avg = f.G_ema.mapping.w_avg
    mean_image = f._crop(f.G_ema.synthesis(w_avg.expand(1, f.num_styles, -1)))
    with f.truncated(1e-6):
        tight = f.generate(z)
    assert torch.allclose(tight, mean_image.expand_as(tight), atol=1e-4)
    with f.truncated(0.5):
        half = f.generate(z)
        w = f.G_ema.styles(z, 0.5)
    assert torch.allclose(w, (w_avg + 0.5 * (f.G_ema.styles(z) - w_avg)), atol=1e-6)
    # distance to the mean image shrinks with psi
    distance = [float((x - mean_image).abs().mean()) for x in (plain, half, tight)]
    assert distance[0] > distance[1] > distance[2]
    assert f.psi == 1.0 and torch.equal(f.generate(z), plain)  # the context restores psi


def test_style_mixing_figure_layout():
    f = family()
    g = torch.Generator().manual_seed(0)
    z_rows, z_cols = f.sample_noise(2, g), f.sample_noise(3, g)
    figure = style_mixing_figure(f, z_rows, z_cols, 4)
    cell = 28 + 2
    assert figure.shape == (3, 2 + 3 * cell, 2 + 4 * cell)  # (rows + 1) x (cols + 1) cells

    def at(r, c):
        return figure[0, 2 + r * cell: r * cell + cell, 2 + c * cell: c * cell + cell]

    def same(cell, image):  # one grey level apart at most: a batch of 1 and a batch of
        # several may round the last float bit differently
        return (cell.int() - image[0, 0].int()).abs().max().item() <= 1

    assert torch.all(at(0, 0) == 255)  # the blank corner
    assert same(at(0, 2), f.to_uint8(f.generate(z_cols[1:2])))  # top: columns
    assert same(at(2, 0), f.to_uint8(f.generate(z_rows[1:2])))  # left: rows
    assert same(at(2, 3), f.to_uint8(f.mix(z_rows[1:2], z_cols[2:3], 4)))
    assert not same(at(0, 2), f.to_uint8(f.generate(z_cols[2:3])))  # another column differs


# --- the CLI: train, resume in the lazy cycle, sample, bad input -------------------------------


def test_resume_in_the_middle_of_the_lazy_cycles_is_bit_exact(tmp_path):
    """Stopped at step 9 (R1 every 16 steps, path length every 4) and resumed to 18, through
    an R1 step (16) and path-length steps (12, 16): the same state as straight through, the
    mean w, the path-length average, the latest penalties and the EMA ramp included."""
    args = [*TINY_CLI, "model.pl_weight=2", "trainer.max_steps=18", "trainer.ckpt_every=9",
            "log.sample_every=0", "eval.every=0"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    train_in_process([*args, f"hydra.run.dir={straight}"], tmp_path)
    shutil.copytree(straight, split)
    saves = split / "checkpoints"
    (saves / "step_18.pt").unlink()
    (saves / "step_9.pt").replace(saves / "last.pt")
    halfway = torch.load(saves / "last.pt", weights_only=True)
    assert halfway["step"] == 9 and halfway["family"]["updates"] == 9
    assert torch.count_nonzero(halfway["family"]["G"]["mapping.w_avg"]) > 0
    train_in_process([f"resume={split}"], tmp_path)
    a, b = (torch.load(run / "checkpoints" / "last.pt", weights_only=True)
            for run in (straight, split))
    assert b["step"] == 18
    a.pop("config"), b.pop("config")
    assert_states_equal(a, b)


def test_sample_grid_truncation_and_mixing_figure_from_a_checkpoint(tmp_path, capsys):
    from PIL import Image

    from ganlab import sample

    run = tmp_path / "run"
    train_in_process([*TINY_CLI, "trainer.max_steps=2", "log.sample_every=2",
                      f"hydra.run.dir={run}"], tmp_path)
    assert (run / "samples" / "step_2_style_mixing.png").exists()
    sample.main([f"ckpt={run}", "n=4", f"out={tmp_path / 'plain.npz'}"])
    sample.main([f"ckpt={run}", "n=4", "truncation=0.5", f"out={tmp_path / 'half.npz'}"])
    import numpy as np

    plain, half = (np.load(tmp_path / f"{n}.npz")["images"] for n in ("plain", "half"))
    assert plain.shape == half.shape == (4, 1, 16, 16) and not np.array_equal(plain, half)
    out = tmp_path / "mixing.png"
    sample.main([f"ckpt={run}", "mixing=true", "mixing_rows=2", "mixing_cols=3",
                 "crossover=2", f"out={out}"])
    assert "layers 0..1" in capsys.readouterr().out
    assert Image.open(out).size == (2 + 4 * 18, 2 + 3 * 18)
    bad = run_in_process(["sample", f"ckpt={run}", "mixing=true", "crossover=6",
                          f"out={out}"], capsys)
    assert_bad_input(bad, "crossover=6", "1..5")
    bad = run_in_process(["sample", f"ckpt={run}", "mixing=true", f"out={tmp_path / 'm.npz'}"],
                         capsys)
    assert_bad_input(bad, "mixing=true", ".png")


@pytest.mark.parametrize(("override", "fragment"), [
    ("dataset.image_size=4", "at least 8 px"),
    ("dataset.image_size=2048", "at most at 1024 px"),
    ("model.mapping_layers=0", "model.mapping_layers=0"),
    ("model.style_mixing=1.5", "model.style_mixing=1.5"),
])
def test_bad_input_is_one_line_before_training(override, fragment, tmp_path, capsys):
    result = train_refused_in_process([*TINY_CLI, override, f"hydra.run.dir={tmp_path / 'r'}"],
                                      tmp_path, capsys)
    assert_bad_input(result, fragment)
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_points_and_non_stylegan_checkpoints_are_refused(tmp_path, capsys):
    result = train_refused_in_process(["model=stylegan", "dataset=ring", "device=cpu",
                                       f"hydra.run.dir={tmp_path / 'r'}"], tmp_path, capsys)
    assert_bad_input(result, "image dataset")
    with pytest.raises(UserError, match="at least 8 px"):
        StyleganFamily(_cfg(6), DataSpec("synthetic", "image", (1, 6, 6)), torch.device("cpu"))


def _cfg(size: int):
    from conftest import make_config

    from ganlab.config import SyntheticDatasetConfig

    return make_config(StyleganConfig(**SMALL), SyntheticDatasetConfig(image_size=size))
