"""VQ-VAE: the straight-through gradient, the EMA codebook against a hand computation, dead-code
restarts, the PixelCNN prior's raster-order causality and what it learns, sampling by inverse
CDF, a run end to end (TensorBoard, eval, sample) and bad input. Resume with the codebook's
statistics is in test_resume.py (every model)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import (
    assert_bad_input,
    build_family,
    read_events,
    train_in_process,
    train_refused_in_process,
)

from ganlab.distributed import Replicas
from ganlab.families.vqvae import (
    VqvaeConfig,
    ema_update,
    perplexity,
    restart_dead_codes,
)
from ganlab.models.vqvae import Codebook, GatedPixelCNN

TINY = {"hidden": 8, "residual_hidden": 4, "residual_layers": 1, "codebook_size": 16,
        "embedding_dim": 4, "prior_channels": 8, "prior_layers": 3}


def tiny_family(**settings):
    return build_family(VqvaeConfig(**{**TINY, **settings}))


def test_straight_through_gradient_reaches_the_encoder():
    """With no commitment loss, the only path from the reconstruction to the encoder is the
    straight-through copy of the decoder's gradient at the codes."""
    family = tiny_family(commitment=0.0, restart_threshold=0.0)
    x = torch.rand(4, 1, 28, 28)
    family.opt.zero_grad()
    z = family.encoder(x)
    quantised = family.codebook.lookup(family.codebook.nearest(z))
    straight = z + (quantised - z).detach()
    z.retain_grad()
    straight.retain_grad()
    family.reconstruction_nll(family.decoder(straight), x).sum().backward()
    assert straight.grad.abs().sum() > 0
    assert torch.equal(z.grad, straight.grad)  # copied unchanged through the quantisation
    first_conv = family.encoder[0].weight
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0


def test_ema_update_matches_a_hand_computation():
    codebook = Codebook(3, 2, ema=True)
    codebook.vectors.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]))
    codebook.ema_sum.copy_(codebook.vectors)
    codebook.cluster_size.fill_(1.0)
    # four 1x1 "images": two vectors go to code 0, two to code 1, none to code 2
    z = torch.tensor([[0.2, 0.0], [0.0, 0.4], [1.0, 2.0], [3.0, 1.0]])[:, :, None, None]
    codes = codebook.nearest(z)
    assert codes.flatten().tolist() == [0, 0, 1, 1]
    decay, eps = 0.9, 1e-5
    counts = ema_update(codebook, z, codes, decay, eps, Replicas())
    assert counts.tolist() == [2.0, 2.0, 0.0]
    size = torch.tensor([0.9 + 0.1 * 2, 0.9 + 0.1 * 2, 0.9])
    sums = torch.tensor([[0.1 * 0.2, 0.1 * 0.4], [0.9 + 0.1 * 4, 0.9 + 0.1 * 3],
                         [0.9 * 5, 0.9 * 5]])
    total = size.sum()
    smoothed = (size + eps) / (total + 3 * eps) * total
    torch.testing.assert_close(codebook.cluster_size, size)
    torch.testing.assert_close(codebook.ema_sum, sums)
    torch.testing.assert_close(codebook.vectors, sums / smoothed[:, None])


def test_dead_codes_restart_on_encoder_outputs():
    codebook = Codebook(4, 2, ema=True)
    codebook.cluster_size.copy_(torch.tensor([3.0, 0.5, 2.0, 0.1]))
    alive = codebook.vectors[[0, 2]].clone()
    z = torch.randn(2, 2, 3, 3)
    moved = restart_dead_codes(codebook, z, threshold=1.0, replicas=Replicas())
    assert moved == 2
    outputs = z.permute(0, 2, 3, 1).reshape(-1, 2)
    for i in (1, 3):  # each dead code now sits on one of the batch's encoder outputs
        assert (outputs - codebook.vectors[i]).abs().sum(1).min() == 0
        torch.testing.assert_close(codebook.ema_sum[i], codebook.vectors[i])
    assert torch.equal(codebook.vectors[[0, 2]], alive)
    assert codebook.cluster_size.tolist() == [3.0, 1.0, 2.0, 1.0]


def test_perplexity_counts_codes_in_use():
    assert float(perplexity(torch.tensor([5.0, 5.0, 5.0, 5.0]))) == pytest.approx(4.0)
    assert float(perplexity(torch.tensor([7.0, 0.0, 0.0]))) == pytest.approx(1.0)


def test_prior_sees_every_earlier_code_and_no_later_one():
    """d logits(r, c) / d input(r', c') is nonzero exactly for (r', c') before (r, c) in raster
    order: autoregressive, without the masked PixelCNN's blind spot."""
    torch.manual_seed(0)
    prior = GatedPixelCNN(codes=5, channels=6, layers=4)
    h = w = 5
    x = torch.randn(1, 6, h, w, requires_grad=True)
    for r, c in [(0, 0), (2, 2), (4, 1), (4, 4)]:
        (grad,) = torch.autograd.grad(prior.logits(x)[0, :, r, c].sum(), x)
        seen = grad[0].abs().sum(0) > 0
        expected = torch.arange(h * w).view(h, w) < r * w + c
        assert torch.equal(seen, expected), (r, c)


def test_prior_learns_a_code_pattern():
    """Codes that count up along the raster order from a random start: predictable from the
    code before, so the prior's NLL falls to about log K for the first code alone."""
    torch.manual_seed(0)
    k, h, w = 6, 3, 3
    prior = GatedPixelCNN(codes=k, channels=16, layers=2)
    opt = torch.optim.Adam(prior.parameters(), lr=1e-2)
    for _ in range(150):
        start = torch.randint(k, (32, 1))
        codes = ((start + torch.arange(h * w)) % k).view(32, h, w)
        nll = torch.nn.functional.cross_entropy(prior(codes), codes, reduction="none")
        opt.zero_grad()
        nll.sum((1, 2)).mean().backward()
        opt.step()
    assert float(nll.detach().sum((1, 2)).mean()) < torch.log(torch.tensor(float(k))) + 0.3


def test_row_by_row_sampling_equals_full_passes():
    """sample_codes computes the prior a row at a time; the codes are those of the plain
    ancestral loop, one full pass of the network per position."""
    family = tiny_family(prior_layers=2)
    family.eval()
    u = family.sample_noise(5, torch.Generator().manual_seed(1))
    codes = torch.zeros(5, 7, 7, dtype=torch.long)
    with torch.no_grad():
        for i in range(49):
            r, c = divmod(i, 7)
            cdf = torch.softmax(family.prior(codes)[:, :, r, c], dim=1).cumsum(dim=1)
            codes[:, r, c] = torch.searchsorted(cdf, u[:, i : i + 1] * cdf[:, -1:]).squeeze(1)
    assert torch.equal(family.sample_codes(u), codes)


def test_sampling_follows_the_prior_and_its_uniforms():
    family = tiny_family()
    family.eval()
    u = family.sample_noise(6, torch.Generator().manual_seed(3))
    assert u.shape == (6, 49) and 0 <= float(u.min()) and float(u.max()) < 1
    state = torch.get_rng_state()
    images = family.generate(u)
    assert torch.equal(torch.get_rng_state(), state)
    assert images.shape == (6, 1, 28, 28) and 0 <= float(images.min()) <= float(images.max()) <= 1
    assert torch.equal(family.generate(u), images)
    # inverse CDF: with all mass on one code, every uniform picks it
    with torch.no_grad():
        family.prior.out[-1].weight.zero_()
        family.prior.out[-1].bias.copy_(torch.full((16,), -30.0))
        family.prior.out[-1].bias[7] = 30.0
    assert family.sample_codes(u).unique().tolist() == [7]


def test_a_run_trains_both_stages_and_samples(workdir, capsys):
    from ganlab import __main__

    run = workdir / "run"
    train_in_process(["model=vqvae", "dataset=synthetic", "dataset.n_samples=48",
                      "trainer.batch_size=8", "trainer.max_steps=8", "log.every=1",
                      "log.sample_every=8", "log.n_samples=4", "eval.every=8",
                      "eval.n_samples=16", "device=cpu", "log.progress=false",
                      *[f"model.{k}={v}" for k, v in TINY.items()],
                      f"hydra.run.dir={run}"], workdir)
    events = read_events(run / "tb")
    scalars = set(events.Tags()["scalars"])
    assert {"loss/recon", "loss/commitment", "vq/perplexity", "loss/prior"} <= scalars
    # stage 1 for the first half of the run, the prior for the second
    assert [e.step for e in events.Scalars("loss/recon")] == [1, 2, 3, 4]
    assert [e.step for e in events.Scalars("loss/prior")] == [5, 6, 7, 8]
    assert {"reconstructions", "samples"} <= set(events.Tags()["images"])
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("heldout_neg_elbo", "heldout_bits_per_dim", "heldout_perplexity",
                "heldout_codebook_usage", "heldout_mse"):
        assert key in metrics
    assert metrics["heldout_neg_elbo"] == pytest.approx(
        metrics["heldout_recon"] + metrics["heldout_prior_nll"])
    assert 0 < metrics["heldout_codebook_usage"] <= 1
    capsys.readouterr()
    __main__.main(["sample", f"ckpt={run}", "n=4", f"out={workdir / 's.npz'}"])
    import numpy as np
    assert np.load(workdir / "s.npz")["images"].shape == (4, 1, 28, 28)
    # the decoder leaves ganlab (any batch size) and decodes as the family does
    from ganlab import load_checkpoint
    __main__.main(["export", f"ckpt={run}", f"out={workdir / 'decoder.pt2'}"])
    decoder = torch.export.load(workdir / "decoder.pt2").module()
    family = load_checkpoint(run)
    codes = family.encode(torch.rand(3, 1, 28, 28))
    torch.testing.assert_close(decoder(codes), family.decode(codes))


@pytest.mark.parametrize(("override", "fragment"), [
    ("model.codebook_size=1", "codebook_size"),
    ("model.downsample=3", "not divisible by 8"),
])
def test_bad_settings_are_refused(workdir, capsys, override, fragment):
    result = train_refused_in_process(["model=vqvae", "dataset=synthetic", override,
                                       "trainer.max_steps=1"], workdir, capsys)
    assert_bad_input(result, fragment)
    assert not (workdir / "outputs").exists()


def test_codebook_loss_variant_moves_the_vectors_by_gradient():
    family = tiny_family(codebook="loss", restart_threshold=0.0)
    x = torch.rand(8, 1, 28, 28)
    family.train_step((x, None))  # the first step puts the codes on encoder outputs
    before = family.codebook.vectors.detach().clone()
    out = family.train_step((x, None))
    assert "loss/codebook" in out and float(out["loss/codebook"]) > 0
    assert isinstance(family.codebook.vectors, torch.nn.Parameter)
    assert not torch.equal(family.codebook.vectors.detach(), before)
    assert any(p is family.codebook.vectors for g in family.opt.param_groups for p in g["params"])


def test_once_the_prior_trains_the_codes_stay_frozen():
    """A resume with a longer run moves model.prior_start's step later; a run already in the
    prior's stage stays there."""
    family = tiny_family(restart_threshold=0.0)
    family.run_length = 4
    x = torch.rand(8, 1, 28, 28)
    stages = [next(iter(family.train_step((x, None)))) for _ in range(3)]
    assert stages == ["loss/recon", "loss/recon", "loss/prior"]
    family.run_length = 100  # resumed with trainer.max_steps=100: prior_from is now 50
    frozen = family.codebook.vectors.clone()
    assert next(iter(family.train_step((x, None)))) == "loss/prior"
    assert torch.equal(family.codebook.vectors, frozen)
