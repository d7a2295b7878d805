"""CycleGAN networks (Zhu et al. 2017): ResNet and U-Net generators and the PatchGAN critic.

The architectures, widths and "normal" weight init follow the defaults of the authors' reference
implementation (junyanz/pytorch-CycleGAN-and-pix2pix): `resnet_9` has 11,378,179 parameters and
the 3-layer (70x70) PatchGAN 2,764,737 for RGB images with instance norm. One deliberate change:
with norm="none" every conv keeps its bias (the reference drops it, though no norm absorbs it).

Generators map [-1, 1] images to [-1, 1] images (Tanh out); the discriminator returns a map of
raw scores (no sigmoid), one per overlapping image patch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ganlab.errors import UserError
from ganlab.models.base import MODELS

NORMS = ("instance", "batch", "none")
GENERATORS = ("resnet_9", "resnet_6", "unet")
_RESNET_BLOCKS = {"resnet_9": 9, "resnet_6": 6}
_UNET_MAX_DEPTH = 8  # the reference's deepest U-Net (unet_256)
_UNET_MIN_SIZE = 32  # the reference's shallowest U-Net has 5 downsamplings
_MAX_WIDTH_MULT = 8  # widths double per level, capped at 8 * features (512 for 64)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        # per-image statistics in training and evaluation alike, no learned scale/shift
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise UserError(f"norm={kind!r} is not a CycleGAN norm: choose one of {', '.join(NORMS)}")


def _conv_bias(norm: str) -> bool:
    # batch norm's learned shift makes a conv bias redundant; instance norm (affine=False) has
    # none, so the reference keeps the bias there
    _norm(norm, 1)  # reject an unknown norm before building anything
    return norm != "batch"


# --- ResNet generator ------------------------------------------------------------------------


class ResnetBlock(nn.Module):
    """x + (pad, conv3x3, norm, ReLU, [dropout], pad, conv3x3, norm)(x) at constant width."""

    def __init__(self, width: int, norm: str, dropout: bool):
        super().__init__()
        bias = _conv_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),  # reflection, not zeros: fewer border artefacts
            nn.Conv2d(width, width, 3, bias=bias),
            _norm(norm, width),
            nn.ReLU(True),
        ]
        if dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(width, width, 3, bias=bias), _norm(norm, width)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


def resnet_generator(channels: int = 3, features: int = 64, blocks: int = 9,
                     norm: str = "instance", dropout: bool = False) -> nn.Module:
    """c7s1-64, d128, d256, `blocks` x R256, u128, u64, c7s1-channels, Tanh (for features=64).

    Two stride-2 downsamplings: the image size must be divisible by 4."""
    bias = _conv_bias(norm)
    layers: list[nn.Module] = [
        nn.ReflectionPad2d(3),
        nn.Conv2d(channels, features, 7, bias=bias),
        _norm(norm, features),
        nn.ReLU(True),
    ]
    width = features
    for _ in range(2):
        layers += [nn.Conv2d(width, width * 2, 3, stride=2, padding=1, bias=bias),
                   _norm(norm, width * 2), nn.ReLU(True)]
        width *= 2
    layers += [ResnetBlock(width, norm, dropout) for _ in range(blocks)]
    for _ in range(2):
        layers += [nn.ConvTranspose2d(width, width // 2, 3, stride=2, padding=1, output_padding=1,
                                      bias=bias),
                   _norm(norm, width // 2), nn.ReLU(True)]
        width //= 2
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, channels, 7), nn.Tanh()]
    return nn.Sequential(*layers)


# --- U-Net generator -------------------------------------------------------------------------


class UnetBlock(nn.Module):
    """One U-Net level: down (4x4 s2 conv), the inner levels, up (4x4 s2 transposed conv).

    Every level but the outermost returns cat([x, up(inner(down(x)))]), the skip connection;
    the outermost returns only its Tanh output."""

    def __init__(self, outer: int, inner: int, submodule: UnetBlock | None, norm: str,
                 outermost: bool = False, dropout: bool = False,
                 input_channels: int | None = None):
        super().__init__()
        self.outermost = outermost
        innermost = submodule is None
        bias = _conv_bias(norm)
        # input_channels: what the level takes when it differs from what it returns (the
        # outermost level of a pix2pix generator that colourises: 1 channel in, 3 out)
        down_in = outer if input_channels is None else input_channels
        down_conv = nn.Conv2d(down_in, inner, 4, stride=2, padding=1, bias=bias)
        # the inner levels return their input and output concatenated: twice the channels
        up_in = inner if innermost else inner * 2
        if outermost:
            # raw image in, no activation or norm on it; a biased conv and Tanh out
            down = [down_conv]
            up = [nn.ReLU(), nn.ConvTranspose2d(up_in, outer, 4, stride=2, padding=1), nn.Tanh()]
        elif innermost:
            # the 1x1 (or smallest) bottleneck is not normalised: instance norm would zero it
            down = [nn.LeakyReLU(0.2), down_conv]
            up = [nn.ReLU(), nn.ConvTranspose2d(up_in, outer, 4, stride=2, padding=1, bias=bias),
                  _norm(norm, outer)]
        else:
            down = [nn.LeakyReLU(0.2), down_conv, _norm(norm, inner)]
            up = [nn.ReLU(), nn.ConvTranspose2d(up_in, outer, 4, stride=2, padding=1, bias=bias),
                  _norm(norm, outer)]
            if dropout:
                up.append(nn.Dropout(0.5))
        middle = [] if submodule is None else [submodule]
        self.model = nn.Sequential(*down, *middle, *up)

    def forward(self, x: Tensor) -> Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


def unet_depth(image_size: int) -> int:
    """Downsamplings of the reference U-Net for this size: log2(size) capped at 8 (128 -> 7,
    256 -> 8), so a power-of-two image reaches a 1x1 bottleneck unless it is larger than 256."""
    return min(_UNET_MAX_DEPTH, max(image_size, 1).bit_length() - 1)


def unet_generator(channels: int = 3, features: int = 64, depth: int = 8, norm: str = "instance",
                   dropout: bool = False, in_channels: int | None = None,
                   dropout_levels: int | None = None) -> nn.Module:
    """The reference U-Net with `depth` downsamplings (the image size must be divisible by
    2**depth). Level i (0 = outermost) is features * min(2**i, 8) wide; dropout, when asked for,
    sits in the levels 4.. that are 8 * features wide on both sides, except the innermost.

    in_channels: the input's channels when they differ from the output's `channels`.
    dropout_levels: put the dropout in this many levels just outside the innermost one instead
    (the reference's rule gives depth - 5 of them: 3 at 256 px, none below 64 px)."""
    if depth < 1:
        raise UserError(f"the U-Net needs at least one downsampling, not depth={depth}")
    widths = [features * min(2**i, _MAX_WIDTH_MULT) for i in range(depth)]
    # the levels with dropout: from `first` up to the innermost level, which never has it
    first = 4 if dropout_levels is None else max(1, depth - 1 - dropout_levels)
    block: UnetBlock | None = None
    # build from the bottleneck outwards: each level wraps the levels inside it
    for i in reversed(range(depth)):
        outer = channels if i == 0 else widths[i - 1]
        middle = first <= i < depth - 1  # by default the reference's `num_downs - 5` levels
        block = UnetBlock(outer, widths[i], block, norm, outermost=i == 0,
                          dropout=dropout and middle,
                          input_channels=in_channels if i == 0 else None)
    assert block is not None
    return block


# --- PatchGAN discriminator ------------------------------------------------------------------


def _check_layers(layers: int) -> None:
    if layers < 1:
        raise UserError(f"model.d_layers={layers} must be at least 1 (the reference uses 3)")


def _patch_convs(layers: int) -> list[tuple[int, int]]:
    """(kernel, stride) of the PatchGAN's convs, in order; all have padding 1."""
    _check_layers(layers)
    return [(4, 2)] * layers + [(4, 1), (4, 1)]


def patch_discriminator(channels: int = 3, features: int = 64, layers: int = 3,
                        norm: str = "instance") -> nn.Module:
    """The PatchGAN: `layers` stride-2 4x4 convs, a stride-1 one, then a 1-channel score map.

    layers=3 gives the 70x70 PatchGAN of the paper: each score sees a 70x70 patch."""
    _check_layers(layers)
    bias = _conv_bias(norm)
    # no norm on the first layer: it would normalise away the raw image statistics
    net: list[nn.Module] = [nn.Conv2d(channels, features, 4, stride=2, padding=1),
                            nn.LeakyReLU(0.2, True)]
    width = features
    for n in range(1, layers):
        out = features * min(2**n, _MAX_WIDTH_MULT)
        net += [nn.Conv2d(width, out, 4, stride=2, padding=1, bias=bias), _norm(norm, out),
                nn.LeakyReLU(0.2, True)]
        width = out
    out = features * min(2**layers, _MAX_WIDTH_MULT)
    net += [nn.Conv2d(width, out, 4, stride=1, padding=1, bias=bias), _norm(norm, out),
            nn.LeakyReLU(0.2, True), nn.Conv2d(out, 1, 4, stride=1, padding=1)]
    return nn.Sequential(*net)


def receptive_field(layers: int) -> int:
    """Side of the input patch one PatchGAN score depends on (70 for layers=3)."""
    field = 1
    # walk back from one output unit: each conv widens the field by (kernel - stride) units of
    # its input, and its stride spreads neighbouring units apart
    for kernel, stride in reversed(_patch_convs(layers)):
        field = field * stride + (kernel - stride)
    return field


def patch_output_size(image_size: int, layers: int) -> int:
    """Side of the PatchGAN's score map for a square image; 0 when the image is too small."""
    size = image_size
    for kernel, stride in _patch_convs(layers):
        size = (size + 2 - kernel) // stride + 1
        if size < 1:
            return 0
    return size


# --- validation and construction -------------------------------------------------------------


def _check_generator_name(name: str) -> None:
    if name not in GENERATORS:
        raise UserError(f"model.generator={name} is unknown: choose one of "
                        f"{', '.join(GENERATORS)}")


def _check_generator_size(image_size: int, generator: str) -> None:
    _check_generator_name(generator)
    prefix = f"dataset.image_size={image_size} does not suit model.generator={generator}"
    if generator in _RESNET_BLOCKS:
        if image_size % 4 or image_size < 8:
            # and at least 8, so the bottleneck is 2x2 or more: reflection padding needs it
            raise UserError(f"{prefix}: it must be divisible by 4 (two stride-2 downsamplings) "
                            "and at least 8; choose e.g. 128 or 256")
        return
    if image_size < _UNET_MIN_SIZE or image_size & (image_size - 1):
        raise UserError(f"{prefix}: it must be a power of two of at least {_UNET_MIN_SIZE} "
                        "(the U-Net halves it 5 to 8 times); choose e.g. 128 or 256, "
                        "or model.generator=resnet_9")


def _check_discriminator_size(image_size: int, layers: int) -> None:
    if patch_output_size(image_size, layers) < 1:
        raise UserError(f"dataset.image_size={image_size} is too small for model.d_layers="
                        f"{layers}: the PatchGAN's score map would be empty; lower "
                        "model.d_layers or raise dataset.image_size")


def check_image_size(image_size: int, generator: str, layers: int) -> None:
    """Raise a one-line UserError unless both networks can process `image_size` px images."""
    _check_generator_size(image_size, generator)
    _check_layers(layers)
    _check_discriminator_size(image_size, layers)


def init_weights(module: nn.Module, gain: float = 0.02) -> None:
    """The reference's "normal" init: conv/linear weights N(0, gain), batch-norm scales
    N(1, gain), all their biases 0. Instance norm here has no parameters."""
    convs = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
             nn.ConvTranspose3d, nn.Linear)
    norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    for m in module.modules():
        if isinstance(m, convs):
            nn.init.normal_(m.weight, 0.0, gain)
        elif isinstance(m, norms) and m.affine:
            nn.init.normal_(m.weight, 1.0, gain)
        else:
            continue
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def build_generator(name: str, channels: int, features: int, norm: str, dropout: bool,
                    image_size: int, gain: float = 0.02) -> nn.Module:
    """A generator by config name ("resnet_9", "resnet_6", "unet"), checked and initialised."""
    _check_generator_size(image_size, name)
    if name in _RESNET_BLOCKS:
        net = resnet_generator(channels, features, _RESNET_BLOCKS[name], norm, dropout)
    else:
        net = unet_generator(channels, features, unet_depth(image_size), norm, dropout)
    init_weights(net, gain)
    return net


def build_discriminator(channels: int, features: int, layers: int, norm: str,
                        gain: float = 0.02) -> nn.Module:
    """The PatchGAN critic, initialised."""
    net = patch_discriminator(channels, features, layers, norm)
    init_weights(net, gain)
    return net


def size_multiple(generator: str, image_size: int) -> int:
    """The generator built for `image_size` takes images whose side is a multiple of this."""
    return 4 if generator in _RESNET_BLOCKS else 2 ** unet_depth(image_size)


def resolve_generator(choice: str, image_size: int) -> str:
    """model.generator=auto: resnet_9 from 256 px up, resnet_6 below (the reference's
    choice for 128 px)."""
    if choice != "auto":
        return choice
    return "resnet_9" if image_size >= 256 else "resnet_6"


@dataclass
class CycleganNetworks:
    G_AB: nn.Module  # A -> B
    G_BA: nn.Module  # B -> A
    D_A: nn.Module  # judges domain A images
    D_B: nn.Module  # judges domain B images
    generator_name: str


def check_cyclegan_config(cfg) -> None:
    """Sizes the networks cannot take, from the config alone (before any data is read)."""
    c = cfg.model
    name = resolve_generator(c.generator.value, int(cfg.dataset.image_size))
    check_image_size(int(cfg.dataset.image_size), name, int(c.d_layers))


@MODELS.register("cyclegan")
def build_cyclegan(c, spec) -> CycleganNetworks:
    channels, size = spec.shape[0], spec.shape[-1]
    name = resolve_generator(c.generator.value, size)
    check_image_size(size, name, int(c.d_layers))
    norm, gain = c.norm.value, float(c.init_gain)

    def generator() -> nn.Module:
        return build_generator(name, channels, c.g_features, norm, c.dropout, size, gain)

    def discriminator() -> nn.Module:
        return build_discriminator(channels, c.d_features, c.d_layers, norm, gain)

    return CycleganNetworks(generator(), generator(), discriminator(), discriminator(), name)


# --- pix2pix (Isola et al. 2017): the same U-Net and PatchGAN, conditioned -------------------

PIX2PIX_MIN_SIZE = 16  # four downsamplings: smaller images leave the U-Net nothing to do


def pix2pix_dropout_levels(depth: int) -> int:
    """Decoder levels with dropout in a pix2pix U-Net: the reference's depth - 5 (3 at 256 px,
    2 at 128) and at least one, so that a generator at 16-64 px keeps its only noise."""
    return max(1, depth - 5)


def check_pix2pix_size(image_size: int, layers: int) -> None:
    """Raise a one-line UserError unless the pix2pix networks can take `image_size` px."""
    if image_size < PIX2PIX_MIN_SIZE or image_size & (image_size - 1):
        raise UserError(f"dataset.image_size={image_size} does not suit model=pix2pix: its "
                        f"U-Net halves the image down to 1x1, so the size must be a power of "
                        f"two of at least {PIX2PIX_MIN_SIZE}; choose e.g. 32, 64 or 256")
    _check_layers(layers)
    _check_discriminator_size(image_size, layers)


@dataclass
class Pix2pixNetworks:
    G: nn.Module  # input image -> output image
    D: nn.Module  # (input, output) channels concatenated -> PatchGAN score map
    depth: int  # the U-Net's downsamplings: it takes sizes that are multiples of 2**depth


@MODELS.register("pix2pix")
def build_pix2pix(c, spec) -> Pix2pixNetworks:
    """The pix2pix U-Net (unet_256 at 256 px, one downsampling fewer per halving below) and
    the conditional PatchGAN, which sees the input's and the output's channels, initialised.
    The output has the data's channels; the input those of the task (1 to colourise)."""
    from ganlab.data.paired import task_input_channels

    out_channels, image_size = spec.shape[0], spec.shape[-1]
    in_channels = task_input_channels(c.task.value, out_channels)
    check_pix2pix_size(image_size, int(c.d_layers))
    norm, gain, depth = c.norm.value, float(c.init_gain), unet_depth(image_size)
    G = unet_generator(out_channels, c.g_features, depth, norm, c.dropout,
                       in_channels=in_channels, dropout_levels=pix2pix_dropout_levels(depth))
    init_weights(G, gain)
    D = build_discriminator(in_channels + out_channels, c.d_features, c.d_layers, norm, gain)
    return Pix2pixNetworks(G, D, depth)
