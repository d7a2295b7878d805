"""BigGAN (model=biggan): the networks' shapes and wiring (class-conditional BN from the shared
embedding and a chunk of z, self-attention where asked, projection D, spectral norm), one
training step with the orthogonal regularisation and the moving average with start, the
truncation trick (resampling into range; psi = 1 is plain sampling), the CLI (sample label= and
truncation=) and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import assert_bad_input, make_config, run_in_process, train_in_process
from torch.nn.utils import parametrize

from ganlab.config import SyntheticDatasetConfig
from ganlab.data.base import DataSpec
from ganlab.errors import UserError
from ganlab.families import FAMILIES
from ganlab.families.biggan import BigganConfig, truncation_threshold
from ganlab.families.capabilities import ConditionalSampler, TruncatedSampler
from ganlab.losses import LossConfig
from ganlab.models.biggan import (
    BigganDiscriminator,
    BigganGenerator,
    ConditionalBatchNorm,
    SelfAttention,
    d_resolutions,
    g_resolutions,
    n_up_blocks,
    orthogonal_penalty,
    refresh_spectral_norm,
    z_chunks,
)

pytestmark = pytest.mark.usefixtures("one_thread")

LATENT = 20  # four chunks of 5 at 32 px


def make_family(size: int = 32, **model):
    """A BigGAN family on the CPU over 10-class synthetic images of `size` px, narrow
    networks; model: model.* settings."""
    settings = {"latent_dim": LATENT, "g_ch": 2, "d_ch": 2, "shared_dim": 6, "attention": 16,
                "d_steps": 2, "ema": 0.5, "ema_start": 2, **model}
    cfg = make_config(BigganConfig(**settings), SyntheticDatasetConfig(image_size=size),
                      loss=LossConfig(name="hinge"))
    cfg.log.n_samples = 10
    torch.manual_seed(0)
    spec = DataSpec("synthetic", "image", (1, size, size), num_classes=10)
    family = FAMILIES.get("biggan")(cfg, spec, torch.device("cpu"))
    family.run_length = 100
    return family


def batches(n: int, size: int = 32, k: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=g),
             torch.randint(0, 10, (n,), generator=g)) for _ in range(k)]


def generator(attention: int = 16, hier: bool = True, channels: int = 1) -> BigganGenerator:
    torch.manual_seed(0)
    return BigganGenerator(LATENT, 10, channels, 32, 2, 6, hier, attention)


# --- the networks -----------------------------------------------------------------------------


def test_sizes_chunks_and_resolutions():
    assert [n_up_blocks(s) for s in (16, 32, 64)] == [2, 3, 4]
    for bad in (8, 24, 28, 48):
        with pytest.raises(UserError, match="16, 32"):
            n_up_blocks(bad)
    assert g_resolutions(32) == [8, 16, 32]
    assert d_resolutions(32) == [16, 8, 8, 8]  # the reference's CIFAR D: down, down, -, -
    assert d_resolutions(64) == [32, 16, 8, 8, 8]
    assert z_chunks(20, 3, True) == [5, 5, 5, 5]
    assert z_chunks(130, 3, True) == [34, 32, 32, 32]  # the rest goes to the input layer
    assert z_chunks(20, 3, False) == [20]


def test_shapes_at_32_and_16_px():
    for size, channels in ((32, 1), (32, 3), (16, 3)):
        torch.manual_seed(0)
        G = BigganGenerator(LATENT, 10, channels, size, 2, 6, True, 8)
        D = BigganDiscriminator(channels, size, 2, 10, 8)
        z, y = torch.randn(5, LATENT), torch.randint(0, 10, (5,))
        x = G(z, y)
        assert x.shape == (5, channels, size, size)
        assert x.abs().max() <= 1
        assert D(x, y).shape == (5,)
    assert [b.down for b in D.blocks] == [True, False, False]  # 16 px: one down-block
    D = BigganDiscriminator(1, 32, 2, 10, 0)
    assert [(b.down, b.preactivation, b.shortcut is None) for b in D.blocks] == [
        (True, False, False), (True, True, False), (False, True, True), (False, True, True)]


def test_spectral_norm_everywhere_but_the_shared_embedding():
    family = make_family()
    G, D = family.G, family.D
    layers = (torch.nn.Conv2d, torch.nn.Linear, torch.nn.Embedding)
    for net in (G, D):
        for name, m in net.named_modules():
            if isinstance(m, layers) and name != "shared":
                assert parametrize.is_parametrized(m, "weight"), name
    assert not parametrize.is_parametrized(G.shared, "weight")
    # the GAN family's model.spectral_norm did not wrap D a second time
    assert all(len(m.parametrizations.weight) == 1 for m in D.modules()
               if parametrize.is_parametrized(m, "weight"))
    plain = make_family(spectral_norm=False)
    assert not any(parametrize.is_parametrized(m) for m in plain.G.modules())
    assert not any(parametrize.is_parametrized(m) for m in plain.D.modules())


def test_projection_discriminator_uses_the_label():
    torch.manual_seed(0)
    D = BigganDiscriminator(1, 32, 2, 10, 16)
    x = torch.randn(4, 1, 32, 32)
    three, seven = torch.full((4,), 3), torch.full((4,), 7)
    phi = D.features(x)
    torch.testing.assert_close(D(x, three), D.linear(phi).squeeze(1) + phi @ D.embed.weight[3])
    assert (D(x, three) - D(x, seven)).abs().min() > 0


def test_conditional_bn_uses_the_label_and_the_blocks_chunk_of_z():
    G = generator().eval()  # running statistics: each image on its own
    z = torch.randn(6, LATENT)
    three, seven = torch.full((6,), 3), torch.full((6,), 7)
    # changing the label changes every image; the same label and z give the same image
    assert (G(z, three) - G(z, seven)).flatten(1).abs().amax(1).min() > 1e-3
    torch.testing.assert_close(G(z, three), G(z, three), atol=0, rtol=0)

    # block i is conditioned on [shared(y), z chunk i+1]
    conditions = G.conditions(z, three)
    assert len(conditions) == 3
    for i, c in enumerate(conditions):
        torch.testing.assert_close(c, torch.cat([G.shared(three), z[:, 5 * (i + 1):5 * (i + 2)]],
                                                1))
    # each norm of a block sees that condition
    seen: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda m, args, out, name=name: seen.update({name: args[1]}))
             for name, m in G.named_modules() if isinstance(m, ConditionalBatchNorm)]
    G(z, three)
    for h in hooks:
        h.remove()
    assert len(seen) == 6
    for i in range(3):
        for norm in ("bn1", "bn2"):
            torch.testing.assert_close(seen[f"blocks.{i}.{norm}"], conditions[i])

    # the gains and biases move with the label and with the block's own chunk only
    bn = G.blocks[1].bn1
    moved = z.clone()
    moved[:, 10:15] += 1.0  # the chunk of block 1
    gain, bias = bn.affine(G.conditions(z, three)[1])
    for other in (G.conditions(z, seven)[1], G.conditions(moved, three)[1]):
        gain2, bias2 = bn.affine(other)
        assert (gain - gain2).abs().amax(1).min() > 0 and (bias - bias2).abs().amax(1).min() > 0
    torch.testing.assert_close(G.conditions(moved, three)[0], conditions[0])  # block 0: same
    torch.testing.assert_close(G.conditions(moved, three)[2], conditions[2])
    assert (G(moved, three) - G(z, three)).abs().max() > 1e-3  # and the image follows
    # without hierarchical z the norms see the embedding alone
    flat = generator(hier=False)
    assert all(torch.equal(c, flat.shared(three)) for c in flat.conditions(z, three))


def test_self_attention_block():
    torch.manual_seed(0)
    block = SelfAttention(16)
    x = torch.randn(3, 16, 8, 8)
    torch.testing.assert_close(block(x), x, atol=0, rtol=0)  # gamma starts at 0: identity
    weights = block.attention_map(x)
    assert weights.shape == (3, 64, 16)  # every position over the 2x2-pooled ones
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 64))
    with torch.no_grad():
        block.gamma.fill_(1.0)
    out = block(x)
    assert out.shape == x.shape and (out - x).abs().max() > 1e-3


@pytest.mark.parametrize(("attention", "g_at", "d_at"), [(16, 16, 16), (8, 8, 8), (32, 32, None),
                                                          (0, None, None)])
def test_attention_sits_at_the_chosen_resolution(attention, g_at, d_at):
    G = generator(attention)
    D = BigganDiscriminator(1, 32, 2, 10, attention)
    sizes = []
    for net in (G, D):
        if net.attention is not None:
            net.attention.register_forward_hook(lambda m, args, out: sizes.append(args[0].shape))
    z, y = torch.randn(2, LATENT), torch.randint(0, 10, (2,))
    D(G(z, y), y)
    expected = [(2, 8, r, r) for r in (g_at, d_at) if r is not None]
    assert sizes == expected
    if attention:  # used: G's image changes once the block's gamma leaves 0
        before = G.eval()(z, y)
        with torch.no_grad():
            G.attention.gamma.fill_(1.0)
        assert (G(z, y) - before).abs().max() > 1e-4


# --- training ---------------------------------------------------------------------------------


def test_orthogonal_penalty_is_the_references_off_diagonal_gradient():
    torch.manual_seed(0)
    w = torch.randn(6, 4, 3, 3, requires_grad=True)
    orthogonal_penalty([w]).backward()
    flat = w.detach().flatten(1)
    off = 1 - torch.eye(6)
    torch.testing.assert_close(w.grad, (2 * ((flat @ flat.T) * off) @ flat).view_as(w))
    # only the angles between rows count, not their norms (BigGAN's variant)
    assert orthogonal_penalty([torch.diag(torch.tensor([3.0, 0.5, 2.0]))]) == 0
    assert orthogonal_penalty([torch.tensor([[1.0, 1.0], [1.0, 0.0]])]) == 1.0  # (1^2 * 2) / 2


def test_one_training_step_with_orthogonal_regularisation_and_ema():
    family = make_family()
    G = family.G
    names = {id(p): n for n, p in G.named_parameters()}
    assert "shared.weight" not in {names[id(p)] for p in family.ortho_weights}
    assert len(family.ortho_weights) == sum(p.ndim > 1 for p in G.parameters()) - 1
    expected_ortho = orthogonal_penalty(family.ortho_weights).detach()
    before = {n: p.detach().clone() for n, p in G.named_parameters()}
    assert family.batches_per_step == 2  # d_steps: two real batches per step

    out = family.train_step(batches(8))
    assert {"loss/D", "loss/G", "loss/ortho"} <= set(out)
    assert all(torch.isfinite(v) for v in out.values())
    torch.testing.assert_close(out["loss/ortho"], expected_ortho)  # G's weights before its step
    # every weight moved (the shared embedding too) but attention's: its gamma starts at 0
    moved = {n for n, p in G.named_parameters() if not torch.equal(before[n], p)}
    assert moved >= {n for n, p in G.named_parameters()
                     if p.ndim > 1 and not n.startswith("attention.")}
    # step 1 of a run whose average starts at step 2: the average is G
    for (n, a), b in zip(family.G_ema.named_parameters(), G.parameters(), strict=True):
        assert torch.equal(a, b), n
    ema_before = [p.clone() for p in family.G_ema.parameters()]
    family.train_step(batches(8, seed=1))
    for old, a, b in zip(ema_before, family.G_ema.parameters(), G.parameters(), strict=True):
        torch.testing.assert_close(a, 0.5 * old + 0.5 * b)  # decay 0.5 from step 2
    assert family.sampler is family.G_ema


def test_no_ortho_no_penalty():
    out = make_family(ortho=0.0).train_step(batches(8))
    assert "loss/ortho" not in out


def test_the_averages_spectral_norms_follow_its_own_weights():
    family = make_family(ema=0.9, ema_start=0)
    for seed in range(2):
        family.train_step(batches(8, seed=seed))
    conv = family.G_ema.blocks[0].conv1
    sn = conv.parametrizations.weight[0]
    w = sn._reshape_weight_to_matrix(conv.parametrizations.weight.original)

    def estimate():
        return float(sn._u @ w @ sn._v)

    for _ in range(50):
        refresh_spectral_norm(family.G_ema)
    assert estimate() == pytest.approx(float(torch.linalg.matrix_norm(w, 2)), rel=1e-4)


# --- truncation -------------------------------------------------------------------------------


def test_truncation_threshold_is_the_share_of_the_normal_kept():
    assert math.isinf(truncation_threshold(1.0))
    assert truncation_threshold(math.erf(2 / math.sqrt(2))) == pytest.approx(2.0)  # 2 sigma
    assert truncation_threshold(0.5) == pytest.approx(0.6745, abs=1e-4)
    assert truncation_threshold(0.7) == pytest.approx(1.0364, abs=1e-4)


def test_truncation_resamples_out_of_range_z_and_psi_1_is_plain_sampling():
    family = make_family()
    assert isinstance(family, TruncatedSampler) and isinstance(family, ConditionalSampler)

    def draw(n=4000):
        return family.sample_noise(n, torch.Generator().manual_seed(7))

    plain = draw()
    torch.testing.assert_close(plain, torch.randn((4000, LATENT),
                                                  generator=torch.Generator().manual_seed(7)),
                               atol=0, rtol=0)
    with family.truncated(1.0):
        torch.testing.assert_close(draw(), plain, atol=0, rtol=0)
    with family.truncated(0.5):
        z, again = draw(), draw()
    t = truncation_threshold(0.5)
    torch.testing.assert_close(z, again, atol=0, rtol=0)  # seeded by the generator given
    assert z.abs().max() <= t
    inside = plain.abs() <= t
    assert torch.equal(z[inside], plain[inside])  # only the out-of-range values are redrawn
    assert 0.3 < inside.float().mean() < 0.7
    # the redrawn values follow N(0, 1) restricted to [-t, t]: its variance
    phi = math.exp(-t * t / 2) / math.sqrt(2 * math.pi)
    assert float(z.var()) == pytest.approx(1 - 2 * t * phi / 0.5, rel=0.03)
    torch.testing.assert_close(draw(), plain, atol=0, rtol=0)  # undone after the block
    with family.truncated(1e-4):  # beyond the resampling rounds: still in range
        tiny = draw(200)
    assert tiny.abs().max() <= truncation_threshold(1e-4) and torch.isfinite(tiny).all()
    for bad in (0.0, 1.5):
        with pytest.raises(UserError, match=r"\(0, 1\]"), family.truncated(bad):
            pass


# --- the CLI ----------------------------------------------------------------------------------

TINY_BIGGAN = ["model=biggan", "dataset=synthetic", "dataset.n_samples=32",
               "dataset.image_size=16", "trainer.batch_size=8", "trainer.max_steps=2",
               "model.g_ch=2", "model.d_ch=2", "model.latent_dim=6", "model.shared_dim=4",
               "model.attention=8", "log.progress=false", "log.sample_every=0", "eval.every=0",
               "device=cpu"]


def test_train_then_sample_a_label_with_truncation(tmp_path):
    from ganlab import __main__

    train_in_process([*TINY_BIGGAN, "hydra.run.dir=run"], tmp_path)
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"

    def sample(*args):
        out = tmp_path / f"s{len(list(tmp_path.glob('s*.npz')))}.npz"
        __main__.main(["sample", f"ckpt={ckpt}", "n=12", "seed=1", f"out={out}", *args])
        return np.load(out)

    drawn = sample("label=3", "truncation=0.5")
    assert drawn["images"].shape == (12, 1, 16, 16) and (drawn["labels"] == 3).all()
    plain, psi_one = sample("label=3"), sample("label=3", "truncation=1")
    assert np.array_equal(plain["images"], psi_one["images"])
    assert not np.array_equal(plain["images"], drawn["images"])


@pytest.mark.parametrize(("args", "fragment"), [
    (["dataset.image_size=32", "model.attention=64"], "never be reached"),
    (["dataset.image_size=32", "model.attention=12"], "never be reached"),
    (["dataset.image_size=16", "model.attention=32"], "never be reached"),
    ([], "image sizes 16, 32"),  # synthetic's 28 px
    (["dataset.image_size=32", "model.minibatch_std=true"], "does not apply"),
    (["dataset.image_size=32", "model.latent_dist=uniform"], "N(0, I)"),
    (["dataset.image_size=32", "model.g_ch=1"], "at least 2"),
    (["dataset.image_size=32", "model.latent_dim=3"], "too small"),
    (["dataset=ring"], "needs an image dataset"),
])
def test_bad_input_exits_2_before_training(tmp_path, capsys, args, fragment):
    result = run_in_process(["train", "model=biggan", "dataset=synthetic", *args, "device=cpu"],
                            capsys, tmp_path)
    assert_bad_input(result, fragment)
    assert not (tmp_path / "outputs").exists()
