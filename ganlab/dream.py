"""`python -m ganlab dream ckpt=RUN|torchvision:NAME layer=NAME [input=IMAGE] out=dream.png`

DeepDream (Mordvintsev, Olah & Tyka 2015): a trained classifier used generatively. The image
is changed by gradient ascent on the mean square of one layer's activations, so whatever that
layer responds to is drawn more strongly. As in the reference notebook: octaves (the ascent
runs on a small copy first, then on larger ones, each starting from the last), a random shift
(jitter) before each step so no pixel grid is favoured, and the gradient divided by its mean
absolute value so the step size means the same at every layer and scale.

The network is a ganlab classifier run (`ckpt=outputs/<run>`, [0, 1] images) or an ImageNet
model from torchvision (`ckpt=torchvision:googlenet`) whose weights are already in torch's hub
cache (or `weights=FILE`); nothing is downloaded. The start is `input=IMAGE`, or noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ganlab.commandline import parse_options
from ganlab.errors import UserError
from ganlab.images import save_png
from ganlab.pretrained import torchvision_network

TORCHVISION = "torchvision:"


@dataclass
class DreamConfig:
    ckpt: str = "torchvision:googlenet"  # a classifier run, or torchvision:NAME
    layer: str | None = None  # a module name (dream lists them when it is unknown)
    input: str | None = None  # the image to start from; none: noise
    out: str = "dream.png"
    size: int | None = None  # the start's side in pixels; default: the network's input size
    octaves: int = 4  # scales, each octave_scale times the previous
    octave_scale: float = 1.4
    steps: int = 10  # ascent steps per octave
    step_size: float = 0.01  # in [0, 1] pixel units, per step of the normalised gradient
    jitter: int = 16  # the random shift before each step, in pixels at the largest scale
    seed: int = 0
    weights: str | None = None  # torchvision: a weights file instead of the hub cache's
    device: str = "cpu"


def parse(args: list[str]) -> DreamConfig:
    cfg = parse_options(DreamConfig, args, "dream")
    if cfg.octaves < 1 or cfg.steps < 1 or cfg.octave_scale <= 1 or cfg.step_size <= 0:
        raise UserError("dream: octaves and steps must be at least 1, octave_scale above 1, "
                        "step_size above 0")
    if cfg.jitter < 0 or (cfg.size is not None and cfg.size < 8):
        raise UserError("dream: jitter must be at least 0 and size at least 8")
    if Path(cfg.out).suffix.lower() != ".png":
        raise UserError(f"dream: out must end in .png, got {cfg.out!r}")
    return cfg  # type: ignore[return-value]


def load_network(cfg: DreamConfig, device: torch.device
                 ) -> tuple[nn.Module, int, int, bool]:
    """The network on [0, 1] images, its channels and input side, and whether that side is
    fixed (ganlab's classifiers end in linear layers of a fixed size)."""
    if cfg.ckpt.startswith(TORCHVISION):
        network, channels, side = torchvision_network(cfg.ckpt[len(TORCHVISION):],
                                                      cfg.weights, "dream")
        fixed = False
    else:
        from ganlab.checkpoint import load_checkpoint
        from ganlab.families.capabilities import Classifier, require

        family = load_checkpoint(cfg.ckpt, device)
        require(family, Classifier, "dream needs a classifier", cfg.ckpt)
        channels, side = family.spec.shape[0], family.spec.shape[-1]
        network, fixed = family.model, True
    return network.to(device).eval().requires_grad_(False), channels, side, fixed


def find_layer(network: nn.Module, name: str | None) -> nn.Module:
    modules = [(n, m) for n, m in network.named_modules() if n]
    names = [n for n, _ in modules]
    if name is None or name not in names:
        shown = ", ".join(f"{n} ({type(m).__name__})" for n, m in modules[:60])
        shown += ", ..." if len(modules) > 60 else ""
        what = "dream needs layer=NAME" if name is None else f"dream: no layer {name!r}"
        raise UserError(f"{what}; the layers are: {shown}")
    return dict(network.named_modules())[name]


def start_image(cfg: DreamConfig, channels: int, side: int) -> torch.Tensor:
    """The [0, 1] (1, C, H, W) starting image: the input file, or smooth noise around grey."""
    if cfg.input is not None:
        try:
            with Image.open(cfg.input) as image:
                picture = image.convert("RGB" if channels == 3 else "L")
        except OSError as e:
            raise UserError(f"dream: cannot read input={cfg.input} ({e})") from e
        if cfg.size is not None:
            scale = cfg.size / max(picture.size)
            picture = picture.resize((max(8, round(picture.width * scale)),
                                      max(8, round(picture.height * scale))), Image.BICUBIC)
        x = torch.frombuffer(bytearray(picture.tobytes()), dtype=torch.uint8)
        x = x.view(picture.height, picture.width, channels).permute(2, 0, 1).float() / 255
        return x[None]
    side = cfg.size or side
    g = torch.Generator().manual_seed(cfg.seed)
    return (0.5 + 0.1 * torch.randn(1, channels, side, side, generator=g)).clamp(0, 1)


class Activation:
    """The chosen layer's output at each forward pass (a forward hook). fixed_side: the
    network takes only that size, so every scale is resized to it inside the graph."""

    def __init__(self, layer: nn.Module, fixed_side: int | None = None) -> None:
        self.value: torch.Tensor | None = None
        self.fixed_side = fixed_side
        self.handle = layer.register_forward_hook(self._keep)

    def _keep(self, module, inputs, output) -> None:
        self.value = output[0] if isinstance(output, (tuple, list)) else output

    def objective(self, network: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.fixed_side is not None and tuple(x.shape[-2:]) != (self.fixed_side,) * 2:
            x = F.interpolate(x, size=(self.fixed_side,) * 2, mode="bilinear",
                              align_corners=False, antialias=True)
        network(x)
        return self.value.float().pow(2).mean()


def dream(network: nn.Module, layer: nn.Module, image: torch.Tensor, cfg: DreamConfig,
          device: torch.device, fixed_side: int | None = None
          ) -> tuple[torch.Tensor, float, float]:
    """The dreamed [0, 1] image and the layer's objective before and after."""
    hook = Activation(layer, fixed_side)
    generator = torch.Generator().manual_seed(cfg.seed)
    try:
        image = image.to(device)
        with torch.no_grad():
            before = float(hook.objective(network, image))
        height, width = image.shape[-2:]
        for octave in range(cfg.octaves - 1, -1, -1):  # smallest scale first
            scale = cfg.octave_scale ** -octave
            size = (max(8, round(height * scale)), max(8, round(width * scale)))
            image = F.interpolate(image, size=size, mode="bilinear", align_corners=False,
                                  antialias=True).clamp(0, 1)
            shift = max(1, math.ceil(cfg.jitter * scale))
            for _ in range(cfg.steps):
                dy, dx = (int(v) for v in torch.randint(-shift, shift + 1, (2,),
                                                        generator=generator))
                rolled = image.roll((dy, dx), dims=(-2, -1)).requires_grad_(True)
                objective = hook.objective(network, rolled)
                (grad,) = torch.autograd.grad(objective, rolled)
                grad = grad / grad.abs().mean().clamp_min(1e-8)
                image = (rolled.detach() + cfg.step_size * grad).roll((-dy, -dx),
                                                                      dims=(-2, -1))
                image = image.clamp(0, 1)
        with torch.no_grad():
            after = float(hook.objective(network, image))
    finally:
        hook.handle.remove()
    return image.cpu(), before, after


def main(args: list[str]) -> None:
    from ganlab.images import UNIT, to_uint8
    from ganlab.train import resolve_device

    cfg = parse(args)
    device = resolve_device(cfg.device)
    network, channels, side, fixed = load_network(cfg, device)
    layer = find_layer(network, cfg.layer)
    image, before, after = dream(network, layer, start_image(cfg, channels, side), cfg, device,
                                 fixed_side=side if fixed else None)
    save_png(to_uint8(image[0], UNIT), cfg.out)
    print(f"wrote {cfg.out}: {cfg.octaves} octaves x {cfg.steps} steps on layer {cfg.layer}; "
          f"its mean squared activation {before:.4g} -> {after:.4g}")
