"""The GAN toolbox: minibatch std, spectral norm, EMA, history, instance noise, and cgan."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY, assert_bad_input, batch, build_family, gan_family, run_cli
from torch import nn

from ganlab.data.base import DataSpec
from ganlab.errors import UserError
from ganlab.families.gan import CganConfig, DcganConfig, ema_update
from ganlab.models.base import MinibatchStd

SPEC = DataSpec("synthetic", "image", (1, 28, 28), num_classes=10)
TWO = DataSpec("two", "image", (1, 28, 28), num_classes=2)


# --- minibatch standard deviation ------------------------------------------------------------


def test_minibatch_std_appends_the_group_std_as_a_feature():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 5, 5)
    out = MinibatchStd(group_size=4)(x)
    assert out.shape == (8, 4, 5, 5) and torch.equal(out[:, :3], x)
    # example i is in group i % 2; the value: mean over features of the biased std in-group
    for group in range(2):
        members = x[group::2]
        expected = (members - members.mean(0)).pow(2).mean(0).add(1e-8).sqrt().mean()
        for i in range(group, 8, 2):
            assert torch.allclose(out[i, 3], expected.expand(5, 5))
    flat = MinibatchStd()(torch.randn(6, 10))  # 6 examples: groups of gcd(6, 4) = 2
    assert flat.shape == (6, 11)


def test_minibatch_std_tells_a_collapsed_batch_from_a_diverse_one():
    collapsed = torch.randn(1, 16).repeat(8, 1)
    diverse = torch.randn(8, 16)
    layer = MinibatchStd()
    assert layer(collapsed)[:, -1].max() < 1e-3
    assert layer(diverse)[:, -1].min() > 0.5
    assert layer(torch.randn(1, 16))[0, -1] < 1e-3  # one example: no spread to measure


def test_minibatch_std_and_dropout_options_build_into_the_discriminators():
    dc = gan_family(DcganConfig(g_features=8, d_features=8), minibatch_std=True, d_dropout=0.3)
    assert sum(isinstance(m, MinibatchStd) for m in dc.D.modules()) == 1
    assert dc.D.net[-1].in_channels == 16 + 1  # one extra plane before the scoring conv
    assert all(m.p == pytest.approx(0.3) for m in dc.D.modules()
               if isinstance(m, (nn.Dropout, nn.Dropout2d)))
    mlp = gan_family(minibatch_std=True)
    assert mlp.D.net[-1].in_features == 100 + 1
    assert mlp.train_step(batch())["loss/D"].isfinite()


# --- spectral norm ---------------------------------------------------------------------------


def test_spectral_norm_bounds_every_discriminator_layer():
    fam = gan_family(DcganConfig(g_features=8, d_features=8), spectral_norm=True)
    layers = [m for m in fam.D.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and all(hasattr(m, "parametrizations") for m in layers)
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    fam.D.train()
    with torch.no_grad():
        for _ in range(30):  # one power iteration per training-mode forward pass
            fam.D(x)
    for m in layers:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        assert sigma == pytest.approx(1.0, abs=0.05)
    plain = gan_family(DcganConfig(g_features=8, d_features=8))
    assert not any(hasattr(m, "parametrizations") for m in plain.D.modules())


# --- EMA -------------------------------------------------------------------------------------


def test_ema_update_rule():
    average, current = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    with torch.no_grad():
        average.weight.fill_(1.0)
        current.weight.fill_(3.0)
        current.running_mean.fill_(7.0)
    ema_update(average, current, decay=0.75)
    assert torch.allclose(average.weight, torch.full((3,), 1.5))  # 0.75 * 1 + 0.25 * 3
    assert torch.equal(average.running_mean, current.running_mean)  # buffers copied


def test_ema_generator_is_averaged_used_for_samples_and_saved():
    fam = gan_family(ema=0.9)
    before = [p.clone() for p in fam.G_ema.parameters()]
    fam.train_step(batch())
    for old, avg, cur in zip(before, fam.G_ema.parameters(), fam.G.parameters(), strict=True):
        assert torch.allclose(avg, 0.9 * old + 0.1 * cur, atol=1e-6)
    z = torch.randn(4, 100)
    with torch.no_grad():
        assert torch.equal(fam.generate(z), fam.G_ema.eval()(z))
        assert not torch.allclose(fam.generate(z), fam.G.eval()(z))
    state = fam.state_dict()
    assert "G_ema" in state
    again = gan_family(ema=0.9)
    again.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(again.G_ema.parameters(),
                                                 fam.G_ema.parameters(), strict=True))
    with pytest.raises(KeyError, match=r"without model\.ema"):
        again.load_state_dict(gan_family().state_dict())


# --- history and instance noise --------------------------------------------------------------


def test_history_pool_feeds_the_discriminator_and_is_checkpointed():
    fam = gan_family(history=20)
    seen, asked, given = [], [], []
    forward, query = fam.D.forward, fam.history.query
    fam.D.forward = lambda x: (seen.append(x.detach().clone()), forward(x))[1]
    fam.history.query = lambda x: (asked.append(x.clone()), given.append(query(x)), given[-1])[2]
    for i in range(4):
        fam.train_step(batch(8, seed=i))
    assert fam.history.count == 20  # 4 steps x 8 fakes, capped at 20
    # the last D step judged the pool's answer, in which some fakes are older ones
    assert any(torch.equal(x, given[-1]) for x in seen)
    assert not torch.equal(asked[-1], given[-1])
    state = fam.state_dict()
    assert state["history"]["images"].shape == (20, 1, 28, 28)
    restored = gan_family(history=20)
    restored.load_state_dict(state)
    assert torch.equal(restored.history.images, fam.history.images)


def test_instance_noise_anneals_to_zero_and_reaches_every_d_input():
    fam = gan_family(instance_noise=0.5)
    assert fam._noise_std() == pytest.approx(0.5)
    fam.updates = 50
    assert fam._noise_std() == pytest.approx(0.25)
    fam.updates = 100
    assert fam._noise_std() == 0.0
    fam.updates = 0
    seen = []
    forward = fam.D.forward
    fam.D.forward = lambda x: (seen.append(x.detach().clone()), forward(x))[1]
    x, y = batch(64)
    out = fam.train_step((x, y))
    assert out["instance_noise"] == pytest.approx(0.5)
    real = x.float() / 255  # mlp_gan images are [0, 1]
    assert (seen[0] - real.view_as(seen[0])).std() == pytest.approx(0.5, rel=0.05)


# --- conditional GAN -------------------------------------------------------------------------


def two_class_batch(n: int, g: torch.Generator):
    """Class 0: a bright left half; class 1: a bright right half (noisy)."""
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randint(0, 40, (n, 1, 28, 28), generator=g)
    bright = torch.zeros(n, 1, 28, 28, dtype=torch.bool)
    bright[y == 0, :, :, :14] = True
    bright[y == 1, :, :, 14:] = True
    return torch.where(bright, x + 200, x).to(torch.uint8), y


@pytest.mark.parametrize("conditioning", ["projection", "concat"])
def test_cgan_produces_the_requested_class(conditioning, one_thread):
    model = CganConfig(g_features=16, d_features=8, latent_dim=16, embed_dim=8,
                       conditioning=conditioning)
    fam = gan_family(model, spec=TWO)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        fam.train_step(two_class_batch(32, g))
    z = torch.randn(64, 16, generator=g)
    for label, bright, dark in ((0, slice(0, 14), slice(14, 28)),
                                (1, slice(14, 28), slice(0, 14))):
        images = fam.generate(z, torch.full((64,), label))
        # the same noise, another label: the requested half is the bright one
        assert images[..., bright].mean() - images[..., dark].mean() > 0.5, (label, conditioning)


def test_cgan_d_sees_real_images_with_wrong_labels_as_fakes():
    """model.mismatch (Reed et al.'s matching-aware D, on by default): D's step scores the
    real batch with its labels, fakes with random labels, and the real images again with a
    label that is never their own; the last two make D's fake term, as their mean."""
    softplus = torch.nn.functional.softplus

    def recorded(fam):
        calls, forward = [], fam.D.forward
        fam.D.forward = lambda x, labels: calls.append(
            (x.detach().clone(), labels.clone(), forward(x, labels))) or calls[-1][2]
        return calls

    x, y = batch(16)
    fam = gan_family(CganConfig(g_features=8, d_features=8, latent_dim=8), spec=SPEC)
    calls = recorded(fam)
    out = fam.train_step((x, y))
    (real, real_labels, d_real), (_, _, d_fake), (wrong, wrong_labels, d_wrong) = calls[:3]
    assert torch.equal(real_labels, y) and torch.equal(wrong, real)
    assert (wrong_labels != y).all() and len(set(wrong_labels.tolist())) > 1
    # -log D(x, y) - (log(1 - D(G(z), y')) + log(1 - D(x, wrong))) / 2, averaged
    expected = softplus(-d_real).mean() + (softplus(d_fake).mean() + softplus(d_wrong).mean()) / 2
    assert float(out["loss/D"]) == pytest.approx(expected.item(), rel=1e-5)
    assert float(out["D/wrong_label"]) == pytest.approx(torch.sigmoid(d_wrong).mean().item())

    off = gan_family(CganConfig(g_features=8, d_features=8, latent_dim=8, mismatch=False),
                     spec=SPEC)
    calls = recorded(off)
    out = off.train_step((x, y))
    assert "D/wrong_label" not in out and len(calls) == 3  # D: real, fake; G: fake


def test_cgan_grid_has_one_row_per_class_with_shared_noise():
    fam = gan_family(CganConfig(g_features=8, d_features=8), spec=SPEC)  # 10 classes, 4 samples
    assert fam.fixed_labels.tolist() == list(range(10))  # max(1, 4 // 10) = 1 column
    wide = build_family(CganConfig(g_features=8, d_features=8), **{"log.n_samples": 30})
    assert wide.fixed_labels.tolist() == [c for c in range(10) for _ in range(3)]
    assert torch.equal(wide.fixed_z[:3], wide.fixed_z[3:6])  # every row: the same 3 noises
    grid = wide.visuals()["samples"]
    assert grid.shape[1:] == (10 * 30 + 2, 3 * 30 + 2)  # 10 rows of 3 columns


def test_cgan_with_the_gradient_penalty_and_refusals():
    fam = gan_family(CganConfig(g_features=8, d_features=8), loss="wgan_gp")
    out = fam.train_step(batch(8))
    assert out["loss/gp"].isfinite() and out["loss/gp"] > 0
    with pytest.raises(UserError, match="needs a labelled dataset"):
        gan_family(CganConfig(), spec=DataSpec("faces", "image", (3, 64, 64)))
    with pytest.raises(UserError, match="does not combine with the class-conditional"):
        gan_family(CganConfig(g_features=8, d_features=8), history=10)


def test_cgan_on_toy_points_exits_2(workdir):
    assert_bad_input(run_cli(["train", "model=cgan", "dataset=ring", "device=cpu"], workdir),
                     "cgan needs an image dataset")


def test_cgan_trains_end_to_end_with_every_tool(workdir):
    result = run_cli(["train", *TINY, "model=cgan", "model.g_features=8", "model.d_features=8",
                      "model.ema=0.9", "model.minibatch_std=true", "model.spectral_norm=true",
                      "model.instance_noise=0.1", "model.d_dropout=0.2", "hydra.run.dir=run"],
                     workdir)
    assert result.returncode == 0, result.stderr[-2000:]
    state = torch.load(workdir / "run/checkpoints/last.pt", weights_only=True)
    assert {"G_ema", "updates"} <= set(state["family"]) and state["family"]["updates"] == 4
    # `sample`: one row per class without label=, one class with it
    grid = run_cli(["sample", "ckpt=run", "n=20", "out=grid.png"], workdir)
    assert grid.returncode == 0, grid.stderr[-2000:]
    from PIL import Image

    assert Image.open(workdir / "grid.png").size == (2 * 30 + 2, 10 * 30 + 2)
    sevens = run_cli(["sample", "ckpt=run", "n=6", "label=7", "out=sevens.npz"], workdir)
    assert sevens.returncode == 0, sevens.stderr[-2000:]
    import numpy as np

    assert np.load(workdir / "sevens.npz")["images"].shape == (6, 1, 28, 28)


# --- the lectures' and Lab 4's details -------------------------------------------------------


def adam_steps(optimizer) -> int:
    return int(next(iter(optimizer.state.values()))["step"])


def test_g_steps_update_g_several_times_per_d_step():
    fam = gan_family(g_steps=3)
    fam.train_step(batch(8))
    assert adam_steps(fam.opt_g) == 3 and adam_steps(fam.opt_d) == 1
    assert fam.updates == 1  # the step counter (schedules) counts steps, not G updates


def test_g_label_noise_flips_gs_targets_and_needs_a_label_loss():
    fam = gan_family(g_label_noise=0.3)
    torch.manual_seed(0)
    targets = fam._g_targets(20_000).real
    assert set(targets.unique().tolist()) == {0.0, 1.0}
    assert float((targets == 0).double().mean()) == pytest.approx(0.3, abs=0.02)
    assert gan_family()._g_targets(4).real == 1.0  # off: the plain real label
    with pytest.raises(UserError, match="g_label_noise"):
        gan_family(loss="wgan", g_label_noise=0.1)


def test_uniform_latent_prior_for_training_sampling_and_the_fixed_grid():
    fam = gan_family(DcganConfig(g_features=8, d_features=8, latent_dim=16,
                                 latent_dist="uniform"), spec=SPEC)
    z = fam.sample_noise(4000, torch.Generator().manual_seed(0))
    assert z.min() >= -1 and z.max() <= 1
    assert float(z.var()) == pytest.approx(1 / 3, rel=0.05)  # U(-1, 1), not N(0, 1)
    assert fam.fixed_z.abs().max() <= 1 and fam._noise(64).abs().max() <= 1
    normal = gan_family(DcganConfig(g_features=8, d_features=8, latent_dim=16), spec=SPEC)
    assert normal.sample_noise(4000, torch.Generator().manual_seed(0)).abs().max() > 2


def test_d_pretraining_trains_d_alone_on_real_against_random_images():
    fam = gan_family(DcganConfig(g_features=8, d_features=8, latent_dim=8, d_pretrain_steps=2),
                     spec=SPEC)
    g_before = [p.detach().clone() for p in fam.G.parameters()]
    d_before = [p.detach().clone() for p in fam.D.parameters()]
    calls = []
    forward = fam.D.forward
    fam.D.forward = lambda x: calls.append(x.detach().clone()) or forward(x)
    for seed in range(2):
        out = fam.train_step(batch(8, seed=seed))
        assert "loss/G" not in out and "loss/D" in out
    assert all(torch.equal(a, b) for a, b in zip(g_before, fam.G.parameters(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(d_before, fam.D.parameters(), strict=True))
    noise = calls[1]  # D's fakes in pretraining: uniform noise over the real batch's range
    assert noise.min() >= -1 and noise.max() <= 1 and float(noise.std()) > 0.5
    assert fam.extra_state()["d_pretrained"] == 2 and fam.updates == 0
    assert "loss/G" in fam.train_step(batch(8, seed=2))  # then the GAN game
    fam.run_length = 3
    with pytest.raises(UserError, match="d_pretrain_steps=2 leaves no step for the GAN"):
        fam.run_length = 2  # what the loop sets before training: a run of pretraining only


def test_a_run_of_pretraining_only_is_bad_input_before_training(workdir):
    result = run_cli(["train", *TINY, "model.d_pretrain_steps=4", "hydra.run.dir=run"],
                     workdir)
    assert_bad_input(result, "model.d_pretrain_steps=4 leaves no step for the GAN")
    assert not (workdir / "run" / "checkpoints").exists()


def test_ds_decisions_as_a_confusion_matrix_real_is_positive():
    fam = gan_family()
    d_real, d_fake = torch.tensor([2.0, 1.0, -1.0]), torch.tensor([-3.0])
    out = {k: float(v) for k, v in fam._d_decisions(d_real, d_fake).items()}
    assert out == pytest.approx({"D/accuracy": 0.75, "D/TP": 0.5, "D/FN": 0.25, "D/TN": 0.25,
                                 "D/FP": 0.0})
    flipped = gan_family(real_label=0.0, fake_label=1.0)  # the lectures' flipped labels
    out = {k: float(v) for k, v in flipped._d_decisions(d_real, d_fake).items()}
    assert out == pytest.approx({"D/accuracy": 0.25, "D/TP": 0.25, "D/FN": 0.5, "D/TN": 0.0,
                                 "D/FP": 0.25})
    lsgan = gan_family(loss="lsgan")  # scores regress onto 1 and 0: the boundary is 0.5
    out = lsgan._d_decisions(torch.tensor([0.6, 0.4]), torch.tensor([0.45]))
    assert float(out["D/TP"]) == pytest.approx(1 / 3) and float(out["D/TN"]) == pytest.approx(1 / 3)
    assert gan_family(loss="wgan")._d_decisions(d_real, d_fake) == {}  # a critic: no boundary
    assert "D/accuracy" in gan_family().train_step(batch(8))


def test_batch_variance_shows_d_each_pixels_variance_over_the_batch():
    from ganlab.models.base import BatchVariance

    same = torch.rand(1, 3, 4, 4).repeat(5, 1, 1, 1)
    out = BatchVariance()(same)
    assert out.shape == (5, 4, 4, 4) and out[:, 3].abs().max() < 1e-7  # collapsed: zeros
    varied = torch.rand(6, 3, 4, 4)
    plane = BatchVariance()(varied)[0, 3]
    torch.testing.assert_close(plane, varied.var(dim=0, unbiased=False).mean(dim=0))
    flat = BatchVariance()(torch.rand(6, 10))
    assert flat.shape == (6, 20)
    for model in (DcganConfig(g_features=8, d_features=8, batch_variance=True),
                  CganConfig(g_features=8, d_features=8, batch_variance=True)):
        fam = gan_family(model, spec=SPEC)
        assert isinstance(fam.D.net[0] if hasattr(fam.D, "net") else fam.D.base.net[0],
                          BatchVariance)
        assert torch.isfinite(fam.train_step(batch(8))["loss/D"])
    mlp = gan_family(batch_variance=True)
    assert isinstance(mlp.D.net[0], BatchVariance)
    assert torch.isfinite(mlp.train_step(batch(8))["loss/D"])


def test_progan_refuses_the_batch_variance():
    from ganlab.families.progan import ProganConfig

    with pytest.raises(UserError, match="batch_variance"):
        build_family(ProganConfig(batch_variance=True), SPEC)
