"""`python -m ganlab export ckpt=RUN format=onnx|torch_export [net=NAME] out=FILE`

Writes one network of a trained checkpoint as a file that runs without ganlab, with a dynamic
batch size: ONNX (opset 18, for onnxruntime and other runtimes) or a torch.export program
(`.pt2`, for `torch.export.load`). The networks, by what the family can do (`NETS` below; the
first is the default):

- generators (GAN families: G, the network `sample` draws with, i.e. the moving average when
  the run has model.ema): z float32 (N, latent_dim), plus labels int64 (N,) in 0..classes-1
  for a class-conditional model (G(z, labels)) -> images (N, C, H, W) in [-1, 1] (tanh; an
  MLP GAN's sigmoid output: [0, 1]) or 2-D points (N, 2). ProGAN's G is exported at the
  checkpoint's stage and fade-in (alpha): images at that stage's resolution, a power of two
  (28 px digits: 32 px, the padding included), linear output around [-1, 1], not clamped;
- autoencoders and VAEs: decoder, z float32 (N, latent_dim) -> images (N, C, H, W) in [0, 1]
  (the sigmoid of the network's logits, as `family.decode`); encoder, images in [0, 1] -> the
  code (N, latent_dim): a VAE's posterior mean mu (no sampling, no log-variance);
- classifiers: model, images (N, C, H, W) in [0, 1] -> logits (N, classes); the input
  standardisation (model.input_mean / input_std) is part of the network, so of the file;
- CycleGAN: G_AB and G_BA, images (N, C, H, W) in [-1, 1] of one domain -> translated,
  the other domain's images in [-1, 1] (tanh), at the training size;
- one-way translators (pix2pix, SRGAN/SRResNet, SPADE): G, what the family's
  generator_input() says (pix2pix: the task's input image in [-1, 1]; SRGAN: the
  low-resolution image in [-1, 1]; SPADE: the one-hot label map) -> images in [-1, 1] (tanh).
  pix2pix's G is written in evaluation mode (running batch-norm statistics, no dropout).

The file is written under a temporary name beside `out` and renamed when complete: a failed
export leaves an existing `out` as it was.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import MISSING
from torch import nn

from ganlab.commandline import parse_options
from ganlab.errors import UserError
from ganlab.families.capabilities import (
    Autoencoder,
    Classifier,
    OneWayTranslator,
    Sampler,
    Translator,
    num_classes,
)
from ganlab.images import SYMMETRIC, UNIT

FORMATS = {"onnx": ".onnx", "torch_export": ".pt2"}  # format -> the usual file extension
ONNX_OPSET = 18
EXAMPLE_BATCH = 2  # the batch traced; the files take any batch size (not 0)


@dataclass
class ExportConfig:
    ckpt: str = MISSING  # a checkpoint file or run dir
    out: str = MISSING  # the file to write
    format: str | None = None  # onnx | torch_export; default: from out's extension
    net: str | None = None  # default: the family's first (G, decoder, model, G_AB)


@dataclass(frozen=True)
class Input:
    name: str
    shape: tuple[int, ...]  # without the batch dimension
    dtype: torch.dtype = torch.float32
    values: str = ""  # what the values are, for the message

    def example(self, batch: int) -> torch.Tensor:
        if self.dtype == torch.int64:
            return torch.zeros(batch, *self.shape, dtype=self.dtype)
        return torch.rand(batch, *self.shape, dtype=self.dtype)

    def __str__(self) -> str:
        dtype = str(self.dtype).removeprefix("torch.")
        shape = ", ".join(["N", *map(str, self.shape)])
        return f"{self.name} {dtype}[{shape}]" + (f" {self.values}" if self.values else "")


@dataclass(frozen=True)
class Net:
    """One exportable network: the module traced, its inputs and what it outputs."""

    module: nn.Module
    inputs: tuple[Input, ...]
    output: str  # the output's name
    values: str  # its value range, for the message


class Method(nn.Module):
    """A family's method on one tensor (decode, encode) as a module: the networks it runs are
    submodules, so their weights are the exported program's; the maths around them (decode's
    sigmoid, encode's slice) is traced as the family defines it, not copied here."""

    def __init__(self, method: Callable[[torch.Tensor], torch.Tensor], *nets: nn.Module) -> None:
        super().__init__()
        self.nets = nn.ModuleList(nets)
        self.method = method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.method(x)


def _range(value_range) -> str:
    return {SYMMETRIC: "in [-1, 1] (tanh)", UNIT: "in [0, 1] (sigmoid)"}.get(
        tuple(value_range) if value_range else None, "")


def _images(family, values: str) -> Input:
    return Input("images", tuple(family.spec.shape), values=values)


def autoencoder_nets(family) -> dict[str, Net]:
    code = Input("z", (family.latent_dim,))
    what = "the posterior mean mu" if getattr(family, "variational", False) else "the code"
    return {
        "decoder": Net(Method(family.decode, family.decoder), (code,), "images",
                       "in [0, 1] (sigmoid of the decoder's logits)"),
        "encoder": Net(Method(family.encode, family.encoder),
                       (_images(family, "in [0, 1]"),), "z", what),
    }


def classifier_nets(family) -> dict[str, Net]:
    return {"model": Net(family.model, (_images(family, "in [0, 1]"),), "logits",
                         f"over {family.spec.num_classes} classes (unnormalised)")}


def translator_nets(family) -> dict[str, Net]:
    # CycleGAN's generators are its attributes G_AB (A -> B) and G_BA
    return {name: Net(getattr(family, name), (_images(family, f"in [-1, 1] ({src})"),),
                      "translated", f"in [-1, 1] (tanh; {dst})")
            for name, src, dst in (("G_AB", "domain A", "domain B"),
                                   ("G_BA", "domain B", "domain A"))}


def one_way_nets(family) -> dict[str, Net]:
    shape, dtype, values = family.generator_input()
    return {"G": Net(family.G, (Input("inputs", shape, dtype, values),), "translated",
                     family.generator_output())}


def generator_nets(family) -> dict[str, Net]:
    # `sampler` is the GAN family's generator for samples and metrics (the EMA one when on);
    # ProGAN's is set to the checkpoint's stage and alpha when the checkpoint is loaded
    uniform = getattr(family, "latent_dist", None) == "uniform"  # model.latent_dist
    prior = "~ U(-1, 1)" if uniform else "~ N(0, I)"
    inputs = [Input("z", (family.latent_dim,), values=prior)]
    classes = num_classes(family)
    if classes:
        inputs.append(Input("labels", (), torch.int64, f"in 0..{classes - 1}"))
    output, values = "images", _range(family.value_range)
    if family.spec.kind != "image":
        output, values = "points", ""
    elif family.config is not None and family.config.model.family == "progan":
        values = (f"around [-1, 1] (linear, not clamped) at {family.resolution} px "
                  f"(stage {family.stage}, alpha {family.alpha:g})")
    if family.sampler is not family.G:
        values = f"{values} (G's moving average, model.ema)".lstrip()
    return {"G": Net(family.sampler, tuple(inputs), output, values)}


# Which networks each kind of family exports, found by capability (families know nothing of
# export): the first capability a family has decides, and its first network is the default.
# Autoencoder comes before Sampler: a VAE is both, and exports its encoder and decoder.
NETS: list[tuple[type, Callable[..., dict[str, Net]]]] = [
    (Autoencoder, autoencoder_nets),
    (Classifier, classifier_nets),
    (OneWayTranslator, one_way_nets),
    (Translator, translator_nets),
    (Sampler, generator_nets),
]


def exportable(family) -> dict[str, Net]:
    """The family's exportable networks by name (the default first); {} for none."""
    for capability, nets in NETS:
        if isinstance(family, capability):
            return nets(family)
    return {}


def parse(args: list[str]) -> ExportConfig:
    cfg = parse_options(ExportConfig, args, "export")
    if Path(cfg.out).expanduser().is_dir():
        raise UserError(f"export: out={cfg.out} is a folder; give a file name")
    if cfg.format is None:
        by_suffix = {suffix: name for name, suffix in FORMATS.items()}
        cfg.format = by_suffix.get(Path(cfg.out).suffix)
        if cfg.format is None:
            raise UserError(f"export: give format=onnx or format=torch_export (out={cfg.out} "
                            "ends in neither .onnx nor .pt2)")
    if cfg.format not in FORMATS:
        raise UserError(f"export: format={cfg.format} is not one of: {', '.join(FORMATS)}")
    if cfg.format == "onnx":
        missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
        if missing:
            raise UserError(f"export: format=onnx needs {' and '.join(missing)}: "
                            "pip install 'ganlab[export]'")
    return cfg  # type: ignore[return-value]


def trace(net: Net) -> torch.export.ExportedProgram:
    """The network as a torch.export program whose inputs' first dimension is any batch."""
    batch = torch.export.Dim("batch", min=1)
    examples = tuple(i.example(EXAMPLE_BATCH) for i in net.inputs)
    dynamic = tuple({0: batch} for _ in net.inputs)
    return torch.export.export(net.module.eval(), examples, dynamic_shapes=dynamic,
                               strict=False)


def write(net: Net, program: torch.export.ExportedProgram, fmt: str, path: Path) -> None:
    if fmt == "torch_export":
        torch.export.save(program, path)
        return
    torch.onnx.export(program, f=str(path), input_names=[i.name for i in net.inputs],
                      output_names=[net.output], opset_version=ONNX_OPSET, dynamo=True,
                      external_data=False, verbose=False)


def _size(n: int) -> str:
    for unit in ("bytes", "kB", "MB"):
        if n < 1000 or unit == "MB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def main(args: list[str]) -> None:
    from ganlab.checkpoint import load_checkpoint

    cfg = parse(args)
    family = load_checkpoint(cfg.ckpt)  # on the CPU: the files run wherever their runtime does
    nets = exportable(family)
    kind = f"{family.config.model.name} ({family.config.model.family})"
    if not nets:
        raise UserError(f"export: {cfg.ckpt} holds a {kind} model, which has no network "
                        "export knows")
    name = cfg.net or next(iter(nets))
    if name not in nets:
        raise UserError(f"export: net={name} is not a network of this {kind} checkpoint; "
                        f"choose one of: {', '.join(nets)}")
    net = nets[name]
    program = trace(net)
    with torch.no_grad():
        shape = tuple(net.module(*(i.example(EXAMPLE_BATCH) for i in net.inputs)).shape[1:])

    out = Path(cfg.out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    # written beside out under another name, renamed once complete: out is never half-written
    part = out.with_name(f".{out.stem}.{os.getpid()}.part{out.suffix}")
    try:
        write(net, program, cfg.format, part)
        os.replace(part, out)
    finally:
        part.unlink(missing_ok=True)

    signature = ", ".join(map(str, net.inputs))
    produced = Input(net.output, shape)
    fmt = f"onnx (opset {ONNX_OPSET})" if cfg.format == "onnx" else "torch_export"
    print(f"wrote {name} of {kind}, step {family.step}: {signature} -> {produced}"
          f"{f' {net.values}' if net.values else ''}; {fmt}, {out} ({_size(out.stat().st_size)})")
