"""The GAN family's training maths on tiny data, in-process."""

from __future__ import annotations

import pytest
import torch
from conftest import batch, gan_family

from ganlab.errors import UserError
from ganlab.families.gan import DcganConfig


def test_discriminator_targets_smoothing_flipping_and_noise():
    t = gan_family(label_smoothing=0.1)._d_targets(4)
    assert (t.real, t.fake) == (pytest.approx(0.9), 0.0)  # one-sided: fakes stay at 0
    t = gan_family(real_label=0.0, fake_label=1.0, label_smoothing=0.1)._d_targets(4)
    assert (t.real, t.fake) == (pytest.approx(0.1), 1.0)  # the lecture's flipped labels
    torch.manual_seed(0)
    t = gan_family(label_noise=0.25)._d_targets(20_000)
    assert float((t.real == 0.0).float().mean()) == pytest.approx(0.25, abs=0.02)
    assert float((t.fake == 1.0).float().mean()) == pytest.approx(0.25, abs=0.02)


def test_label_options_rejected_for_losses_without_labels():
    with pytest.raises(UserError, match="loss=wgan"):
        gan_family(loss="wgan", label_noise=0.1)


def test_train_step_consumes_d_steps_batches_and_updates_both_nets():
    f = gan_family(d_steps=3)
    assert f.batches_per_step == 3
    g_before = [p.clone() for p in f.G.parameters()]
    d_before = [p.clone() for p in f.D.parameters()]
    out = f.train_step([batch(seed=i) for i in range(3)])
    assert f.opt_d.state[f.opt_d.param_groups[0]["params"][0]]["step"] == 3  # 3 D updates
    assert f.opt_g.state[f.opt_g.param_groups[0]["params"][0]]["step"] == 1  # 1 G update
    assert all(not torch.equal(a, b) for a, b in zip(g_before, f.G.parameters(), strict=True))
    assert all(not torch.equal(a, b) for a, b in zip(d_before, f.D.parameters(), strict=True))
    assert {"loss/D", "loss/G", "D/real", "D/fake", "grad_norm/D", "grad_norm/G"} <= set(out)
    assert all(v.dim() == 0 and not v.requires_grad for v in out.values())
    assert 0 < float(out["D/real"]) < 1  # BCE losses report probabilities


def test_wgan_clips_critic_weights_and_gp_is_reported():
    f = gan_family(loss="wgan")
    f.train_step([batch(seed=i) for i in range(5)])
    assert max(float(p.detach().abs().max()) for p in f.D.parameters()) <= 0.01 + 1e-9
    f = gan_family(loss="wgan_gp", model=DcganConfig(g_features=8, d_features=8))
    out = f.train_step([batch(seed=i) for i in range(5)])
    assert float(out["loss/gp"]) >= 0
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in f.D.modules())


def test_visuals_and_evaluation_leave_the_global_rng_alone():
    f = gan_family()
    state = torch.get_rng_state()
    grid = f.visuals()["samples"]
    assert grid.dtype == torch.uint8 and grid.shape == (3, 2 * 30 + 2, 2 * 30 + 2)  # 2x2 of 28 px
    assert torch.equal(state, torch.get_rng_state())
    assert f.G.training  # generate() restores the mode it found
