"""The registered architectures: DCGAN shapes, norms, init and size; the lecture's MLP GAN."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from ganlab.data.base import DataSpec
from ganlab.errors import UserError
from ganlab.families.gan import DcganConfig, MlpGanConfig
from ganlab.models import MODELS, GanNetworks
from ganlab.models.base import count_parameters
from ganlab.models.dcgan import Norm, Upsample, discriminator_norm
from ganlab.models.mlp import Output


def dcgan(channels: int = 1, size: int = 28, *, gradient_penalty: bool = False,
          **overrides) -> GanNetworks:
    cfg = OmegaConf.structured(DcganConfig(**overrides))
    # d_norm=auto as the GAN family resolves it for the builder
    cfg.d_norm = discriminator_norm(cfg, gradient_penalty)
    spec = DataSpec("x", "image", (channels, size, size))
    return MODELS.get("dcgan")(cfg, spec)


def mlp_gan(spec: DataSpec, **overrides) -> GanNetworks:
    return MODELS.get("mlp_gan")(OmegaConf.structured(MlpGanConfig(**overrides)), spec)


MNIST = DataSpec("mnist", "image", (1, 28, 28))
RING = DataSpec("ring", "points", (2,))


def count(module: nn.Module, kind: type | tuple[type, ...]) -> int:
    return sum(isinstance(m, kind) for m in module.modules())


def test_registered_models() -> None:
    assert {"dcgan", "mlp_gan"} <= set(MODELS.names())


# --- DCGAN ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("upsample", list(Upsample))
def test_dcgan_shapes_and_range(size: int, channels: int, upsample: Upsample) -> None:
    torch.manual_seed(0)
    nets = dcgan(channels, size, upsample=upsample, g_features=16, d_features=16)
    assert nets.latent_dim == 100
    assert nets.value_range == (-1.0, 1.0)
    z = torch.randn(3, 100)
    x = nets.G(z)
    assert x.shape == (3, channels, size, size)
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert x.std() > 0  # not a constant output
    out = nets.D(x)
    assert out.shape == (3,)
    assert torch.isfinite(out).all()
    # one example at a time too (eval mode, so batch norm uses its running stats)
    nets.G.eval()
    nets.D.eval()
    assert nets.D(nets.G(z[:1])).shape == (1,)


@pytest.mark.parametrize("upsample", [Upsample.transposed, Upsample.nearest])
def test_dcgan_generator_output_is_bounded_by_tanh(upsample: Upsample) -> None:
    # at init the outputs are tiny; blow up the last conv so an unbounded G would show it
    torch.manual_seed(0)
    G = dcgan(3, 32, upsample=upsample, g_features=16).G
    assert isinstance(G.net[-1], nn.Tanh)
    last = [m for m in G.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))][-1]
    with torch.no_grad():
        last.weight.mul_(1000.0)
        x = G(torch.randn(4, 100))
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert x.min() < -0.99 and x.max() > 0.99


def test_dcgan_latent_dim() -> None:
    nets = dcgan(3, 32, latent_dim=16)
    assert nets.latent_dim == 16
    assert nets.G(torch.randn(2, 16)).shape == (2, 3, 32, 32)
    with pytest.raises(RuntimeError):
        nets.G(torch.randn(2, 100))


@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("mode", [Upsample.nearest, Upsample.bilinear])
def test_dcgan_resize_upsampling_has_no_transposed_conv_after_the_first_layer(
        size: int, mode: Upsample) -> None:
    transposed = dcgan(1, size).G
    nearest = dcgan(1, size, upsample=mode).G
    doublings = {28: 2, 32: 3, 64: 4}[size]
    # the latent projection stays a transposed conv (1x1 -> base size)
    assert isinstance(nearest.net[0], nn.ConvTranspose2d)
    assert count(nearest.net[1:], nn.ConvTranspose2d) == 0
    assert count(nearest, nn.ConvTranspose2d) == 1
    upsamples = [m for m in nearest.modules() if isinstance(m, nn.Upsample)]
    assert len(upsamples) == doublings
    assert all(m.mode == mode.value and m.scale_factor == 2 for m in upsamples)
    # the transposed generator: one per doubling plus the projection, and no Upsample
    assert count(transposed, nn.ConvTranspose2d) == doublings + 1
    assert count(transposed, nn.Upsample) == 0


def test_dcgan_dropout() -> None:
    plain = dcgan(1, 32).D
    assert count(plain, (nn.Dropout, nn.Dropout2d)) == 0
    nets = dcgan(1, 32, d_dropout=0.3)
    drops = [m for m in nets.D.modules() if isinstance(m, (nn.Dropout, nn.Dropout2d))]
    assert len(drops) >= 1
    assert all(m.p == pytest.approx(0.3) for m in drops)
    assert count(nets.G, (nn.Dropout, nn.Dropout2d)) == 0  # only the discriminator
    # dropout makes D stochastic in training and deterministic in eval
    torch.manual_seed(0)
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    nets.D.train()
    assert not torch.allclose(nets.D(x), nets.D(x))
    nets.D.eval()
    torch.testing.assert_close(nets.D(x), nets.D(x))


@pytest.mark.parametrize("shape", [(1, 48, 48), (3, 16, 16), (1, 128, 128)])
def test_dcgan_unsupported_size(shape: tuple[int, int, int]) -> None:
    cfg = OmegaConf.structured(DcganConfig())
    with pytest.raises(UserError, match="size"):
        MODELS.get("dcgan")(cfg, DataSpec("x", "image", shape))


def test_dcgan_rejects_non_square_images_and_points() -> None:
    cfg = OmegaConf.structured(DcganConfig())
    with pytest.raises(UserError):
        MODELS.get("dcgan")(cfg, DataSpec("x", "image", (1, 32, 28)))
    with pytest.raises(UserError):
        MODELS.get("dcgan")(cfg, RING)


def test_dcgan_norm_auto_follows_the_gradient_penalty() -> None:
    D = dcgan(3, 64).D
    assert count(D, nn.BatchNorm2d) == 3
    assert count(D, nn.GroupNorm) == 0
    D = dcgan(3, 64, gradient_penalty=True).D
    assert count(D, nn.BatchNorm2d) == 0
    norms = [m for m in D.modules() if isinstance(m, nn.GroupNorm)]
    assert len(norms) == 3
    assert all(m.num_groups == 1 for m in norms)  # layer norm over (C, H, W)
    # the generator is not penalised: it keeps batch norm either way
    assert count(dcgan(3, 64, gradient_penalty=True).G, nn.BatchNorm2d) == 4


def test_dcgan_explicit_norms() -> None:
    D = dcgan(1, 32, d_norm=Norm.none).D
    assert count(D, (nn.BatchNorm2d, nn.GroupNorm)) == 0
    D = dcgan(1, 32, d_norm=Norm.layer).D
    assert count(D, nn.GroupNorm) == 2 and count(D, nn.BatchNorm2d) == 0
    # an explicit choice wins over the gradient-penalty default
    D = dcgan(1, 32, d_norm=Norm.batch, gradient_penalty=True).D
    assert count(D, nn.BatchNorm2d) == 2


def test_dcgan_under_a_gradient_penalty_scores_each_example_on_its_own() -> None:
    # the per-example gradient the penalty needs: D(x_i) must not depend on x_j (j != i)
    torch.manual_seed(0)
    D = dcgan(1, 28, gradient_penalty=True, d_features=8).D.train()
    x = torch.randn(4, 1, 28, 28, requires_grad=True)
    (grad,) = torch.autograd.grad(D(x)[0], x)
    assert grad[0].abs().sum() > 0
    assert grad[1:].abs().max() == 0
    # ... whereas batch norm in training mode mixes the batch
    D = dcgan(1, 28, d_features=8).D.train()
    (grad,) = torch.autograd.grad(D(x)[0], x)
    assert grad[1:].abs().max() > 0


def test_dcgan_init() -> None:
    torch.manual_seed(0)
    nets = dcgan(3, 64, gradient_penalty=True)
    convs = [m for net in (nets.G, nets.D) for m in net.modules()
             if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert len(convs) == 10
    big = nets.G.net[3]  # ConvTranspose2d(512, 256, 4): 2.1M weights
    assert isinstance(big, nn.ConvTranspose2d) and big.weight.numel() == 2_097_152
    assert 0.0195 < big.weight.std().item() < 0.0205
    assert abs(big.weight.mean().item()) < 1e-3
    for conv in convs:
        w = conv.weight
        assert conv.bias is None
        if w.numel() >= 3000:
            assert 0.015 < w.std().item() < 0.025, conv
            assert abs(w.mean().item()) < 0.003, conv
        assert w.abs().max() < 0.2  # N(0, 0.02) never reaches 10 sigma
    for m in [m for net in (nets.G, nets.D) for m in net.modules()
              if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]:
        assert abs(m.weight.mean().item() - 1.0) < 0.02
        assert 0 < m.weight.std().item() < 0.04
        assert m.bias.abs().max() == 0


def test_dcgan_parameter_counts() -> None:
    nets = dcgan(3, 64)
    # the figures of the PyTorch DCGAN tutorial (nz=100, ngf=ndf=64, 3x64x64)
    assert count_parameters(nets.G) == 3_576_704
    assert count_parameters(nets.D) == 2_765_568


# --- the lecture's MLP GAN -------------------------------------------------------------------


def layer_types(seq: nn.Sequential) -> list[type]:
    return [type(m) for m in seq]


def test_mlp_gan_is_the_lecture_network() -> None:
    nets = mlp_gan(MNIST)
    D, G = nets.D.net, nets.G.net
    assert layer_types(D) == [nn.Linear, nn.LeakyReLU, nn.Linear, nn.LeakyReLU, nn.Linear]
    assert [(m.in_features, m.out_features) for m in D if isinstance(m, nn.Linear)] == [
        (784, 300), (300, 100), (100, 1)]
    assert layer_types(G) == [nn.Linear, nn.LeakyReLU, nn.Linear, nn.Sigmoid]
    assert [(m.in_features, m.out_features) for m in G if isinstance(m, nn.Linear)] == [
        (100, 300), (300, 784)]
    for m in [*D, *G]:
        if isinstance(m, nn.LeakyReLU):
            assert m.negative_slope == pytest.approx(0.2)
    assert count_parameters(nets.D) == 265_701
    assert count_parameters(nets.G) == 266_284
    assert nets.latent_dim == 100
    assert nets.value_range == (0.0, 1.0)


def test_mlp_gan_on_images() -> None:
    torch.manual_seed(0)
    nets = mlp_gan(MNIST)
    x = nets.G(torch.randn(5, 100))
    assert x.shape == (5, 1, 28, 28)
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert nets.D(x).shape == (5,)
    # D scores each example from its flattened pixels
    flat = nets.D.net(x.flatten(1)).squeeze(1)
    torch.testing.assert_close(nets.D(x), flat)


def test_mlp_gan_tanh_and_linear_outputs_on_images() -> None:
    nets = mlp_gan(MNIST, output=Output.tanh)
    assert isinstance(nets.G.net[-1], nn.Tanh)
    assert nets.value_range == (-1.0, 1.0)
    with pytest.raises(UserError):
        mlp_gan(MNIST, output=Output.linear)


def test_mlp_gan_on_points() -> None:
    torch.manual_seed(0)
    nets = mlp_gan(RING)
    assert nets.value_range is None
    assert count(nets.G, (nn.Sigmoid, nn.Tanh)) == 0
    linears = [m for m in nets.G.net if isinstance(m, nn.Linear)]
    assert (linears[0].in_features, linears[-1].out_features) == (100, 2)
    assert [(m.in_features, m.out_features) for m in nets.D.net if isinstance(m, nn.Linear)] == [
        (2, 300), (300, 100), (100, 1)]
    pts = nets.G(torch.randn(1000, 100))
    assert pts.shape == (1000, 2)
    # a linear output: negative values (impossible under a sigmoid) do occur
    assert (pts < 0).any() and (pts > 0).any()
    assert nets.D(pts).shape == (1000,)
    assert nets.D(torch.tensor([[5.0, -7.0]])).shape == (1,)


def test_mlp_gan_hidden_sizes_and_dropout() -> None:
    nets = mlp_gan(RING, g_hidden=[32, 16], d_hidden=[8], d_dropout=0.5, latent_dim=4)
    assert [(m.in_features, m.out_features) for m in nets.G.net if isinstance(m, nn.Linear)] == [
        (4, 32), (32, 16), (16, 2)]
    assert layer_types(nets.D.net) == [nn.Linear, nn.LeakyReLU, nn.Dropout, nn.Linear]
    assert nets.D.net[2].p == pytest.approx(0.5)
    assert count(nets.G, nn.Dropout) == 0
    assert nets.G(torch.randn(3, 4)).shape == (3, 2)
