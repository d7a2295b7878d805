"""CycleGAN networks: shapes, the reference's parameter counts, the PatchGAN's receptive field,
U-Net skips, init, per-image instance norm and the image-size checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ganlab.errors import UserError
from ganlab.models.base import count_parameters
from ganlab.models.cyclegan import (
    ResnetBlock,
    UnetBlock,
    build_discriminator,
    build_generator,
    check_image_size,
    init_weights,
    patch_discriminator,
    patch_output_size,
    receptive_field,
    resnet_generator,
    unet_depth,
    unet_generator,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def count(module: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in module.modules())


def images(n: int, size: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, size, size, generator=g) * 2 - 1


# --- ResNet generator ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet_9", "resnet_6"])
@pytest.mark.parametrize("size", [32, 64])
def test_resnet_shape_and_range(name: str, size: int) -> None:
    torch.manual_seed(0)
    G = build_generator(name, channels=3, features=8, norm="instance", dropout=False,
                        image_size=size)
    x = images(2 if size == 32 else 1, size)
    with torch.no_grad():
        y = G(x)
    assert y.shape == x.shape
    assert y.abs().max() < 1


def test_resnet_block_counts_and_reference_parameters() -> None:
    g9, g6 = resnet_generator(), resnet_generator(blocks=6)
    assert count(g9, ResnetBlock) == 9
    assert count(g6, ResnetBlock) == 6
    # the reference prints "Total number of parameters : 11.378 M" for resnet_9blocks
    assert count_parameters(g9) == 11_378_179
    assert count(resnet_generator(dropout=True), nn.Dropout) == 9
    assert count(g9, nn.Dropout) == 0
    assert isinstance(g9[-1], nn.Tanh)  # outputs in (-1, 1) whatever the weights


def test_build_generator_dispatches_by_name() -> None:
    assert count(build_generator("resnet_6", 3, 8, "instance", False, 32), ResnetBlock) == 6
    unet = build_generator("unet", 3, 8, "instance", False, 64)
    assert count(unet, UnetBlock) == unet_depth(64) == 6


# --- PatchGAN --------------------------------------------------------------------------------


def test_patchgan_reference_parameters_and_output_shape() -> None:
    D = build_discriminator(channels=3, features=64, layers=3, norm="instance")
    # the reference prints "Total number of parameters : 2.765 M" for the basic (n_layers=3) D
    assert count_parameters(D) == 2_764_737
    assert patch_output_size(256, 3) == 30
    with torch.no_grad():
        for size in (64, 256):
            n = patch_output_size(size, 3)
            assert D(images(1, size)).shape == (1, 1, n, n)


def gradient_extent(layers: int, size: int = 128) -> tuple[int, int, bool]:
    """Rows and columns of the input that one central score depends on, measured by backprop;
    and whether that patch lies strictly inside the image (so zero padding did not clip it)."""
    torch.manual_seed(0)
    # no norm: instance norm's per-map mean would make every score depend on every pixel
    D = build_discriminator(channels=1, features=4, layers=layers, norm="none").double()
    x = torch.zeros(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    out = D(x)
    c = out.shape[-1] // 2
    out[0, 0, c, c].backward()
    nonzero = x.grad[0, 0] != 0
    rows = nonzero.any(1).nonzero().flatten()
    cols = nonzero.any(0).nonzero().flatten()
    inside = min(rows[0], cols[0]) > 0 and max(rows[-1], cols[-1]) < size - 1
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1), bool(inside)


@pytest.mark.parametrize(("layers", "field"), [(1, 16), (2, 34), (3, 70)])
def test_receptive_field_matches_gradient(layers: int, field: int) -> None:
    height, width, inside = gradient_extent(layers)
    assert inside
    assert height == width == receptive_field(layers) == field


# --- U-Net -----------------------------------------------------------------------------------


def test_unet_depth_follows_reference() -> None:
    assert [unet_depth(s) for s in (32, 64, 128, 256, 512)] == [5, 6, 7, 8, 8]


@pytest.mark.parametrize(("size", "features"), [(32, 8), (128, 4)])
def test_unet_shape(size: int, features: int) -> None:
    torch.manual_seed(0)
    G = build_generator("unet", 3, features, "instance", False, size)
    assert count(G, UnetBlock) == unet_depth(size)
    x = images(2, size)
    with torch.no_grad():
        y = G(x)
    assert y.shape == x.shape
    assert y.abs().max() < 1


def test_unet_reference_widths() -> None:
    G = unet_generator(channels=3, features=64, depth=8)
    downs = [m for m in G.modules() if isinstance(m, nn.Conv2d)]
    assert [m.out_channels for m in downs] == [64, 128, 256, 512, 512, 512, 512, 512]


def test_unet_skip_connection_reaches_the_output_layer() -> None:
    torch.manual_seed(0)
    features = 8
    G = build_generator("unet", 3, features, "instance", False, 32)
    first_down = next(m for m in G.modules() if isinstance(m, nn.Conv2d))
    # modules() walks down before up, so the outermost up conv comes last
    last_up = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)][-1]
    seen: dict[str, torch.Tensor] = {}
    first_down.register_forward_hook(lambda m, i, o: seen.__setitem__("down", o.detach()))
    last_up.register_forward_pre_hook(lambda m, i: seen.__setitem__("up_in", i[0].detach()))
    with torch.no_grad():
        G(images(1, 32))
    assert last_up.in_channels == 2 * features
    assert seen["up_in"].shape[1] == 2 * features
    # the first half is the outermost features themselves (after the up path's ReLU)
    torch.testing.assert_close(seen["up_in"][:, :features], torch.relu(seen["down"]))


def test_unet_dropout_only_when_asked() -> None:
    assert count(unet_generator(features=4, depth=7, dropout=False), nn.Dropout) == 0
    # the reference's num_downs - 5 middle 512-wide levels
    assert count(unet_generator(features=4, depth=7, dropout=True), nn.Dropout) == 2
    assert count(unet_generator(features=4, depth=8, dropout=True), nn.Dropout) == 3


# --- init and norms --------------------------------------------------------------------------


def test_init_weights_normal() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(256, 256, 3), nn.BatchNorm2d(256),
                        nn.ConvTranspose2d(256, 128, 3), nn.Linear(64, 8))
    for p in net.parameters():
        nn.init.constant_(p, 0.5)
    init_weights(net)
    conv, bn, convt, linear = net
    assert conv.weight.std().item() == pytest.approx(0.02, rel=0.02)
    assert conv.weight.mean().abs().item() < 1e-3
    assert convt.weight.std().item() == pytest.approx(0.02, rel=0.02)
    assert bn.weight.mean().item() == pytest.approx(1.0, abs=0.01)
    assert bn.weight.std().item() == pytest.approx(0.02, rel=0.2)
    for m in (conv, bn, convt, linear):
        assert torch.count_nonzero(m.bias) == 0


def test_init_weights_applied_by_builders() -> None:
    D = build_discriminator(3, 64, 3, "instance")
    big = max((m for m in D.modules() if isinstance(m, nn.Conv2d)), key=lambda m: m.weight.numel())
    assert big.weight.std().item() == pytest.approx(0.02, rel=0.02)
    assert all(torch.count_nonzero(m.bias) == 0 for m in D.modules()
               if isinstance(m, nn.Conv2d) and m.bias is not None)


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_instance_norm_is_per_image(norm: str) -> None:
    torch.manual_seed(0)
    G = resnet_generator(channels=3, features=8, blocks=2, norm=norm).train()
    init_weights(G)
    x = images(2, 32)
    with torch.no_grad():
        together = G(x)
        apart = torch.cat([G(x[:1]), G(x[1:])])
    if norm == "instance":
        torch.testing.assert_close(together, apart)
    else:  # batch statistics mix the two images
        assert (together - apart).abs().max() > 1e-3


def test_instance_norm_has_no_running_stats_and_bias_rule() -> None:
    G = resnet_generator(norm="instance")
    norms = [m for m in G.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert norms and all(not m.affine and not m.track_running_stats for m in norms)
    assert all(m.bias is not None for m in G.modules() if isinstance(m, nn.Conv2d))
    Gb = resnet_generator(norm="batch")
    convs = [m for m in Gb.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    # only the output conv, which has no norm after it, keeps a bias under batch norm
    assert [m.bias is not None for m in convs].count(True) == 1


# --- image-size checks -----------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 64, 128, 256])
@pytest.mark.parametrize("generator", ["resnet_9", "resnet_6", "unet"])
def test_check_image_size_accepts(size: int, generator: str) -> None:
    check_image_size(size, generator, 3)


def test_check_image_size_rejects_resnet_size() -> None:
    with pytest.raises(UserError) as err:
        check_image_size(30, "resnet_9", 3)
    message = str(err.value)
    assert "dataset.image_size=30" in message
    assert "model.generator=resnet_9" in message
    assert "divisible by 4" in message
    assert "\n" not in message


def test_check_image_size_rejects_unet_size() -> None:
    for size in (96, 16):
        with pytest.raises(UserError, match=rf"dataset.image_size={size}.*power of two"):
            check_image_size(size, "unet", 3)


def test_check_image_size_rejects_tiny_discriminator_map() -> None:
    assert patch_output_size(8, 3) == 0
    with pytest.raises(UserError, match=r"dataset.image_size=8 .*model.d_layers=3"):
        check_image_size(8, "resnet_9", 3)
    check_image_size(8, "resnet_9", 1)  # a shallower PatchGAN fits
    with pytest.raises(UserError, match=r"model\.d_layers=0"):
        check_image_size(64, "resnet_9", 0)


def test_unknown_generator_and_norm() -> None:
    with pytest.raises(UserError) as err:
        build_generator("resnet_12", 3, 8, "instance", False, 64)
    for choice in ("resnet_9", "resnet_6", "unet"):
        assert choice in str(err.value)
    with pytest.raises(UserError, match="instance, batch, none"):
        patch_discriminator(norm="layer")
