"""The SPADE family (GauGAN; Park et al. 2019): semantic image synthesis, a label map -> an
image, with the defaults of NVlabs/SPADE (without its optional VAE encoder).

G is built of SPADE residual blocks (ganlab.models.spade): every normalisation layer is
modulated per pixel by the label map, so the layout reaches every scale of the generator
instead of being washed out by normalisation. D is a multi-scale PatchGAN (2 scales) that
judges (label map, image) pairs. Per step, as the reference orders it:

- G: the hinge loss of D's scores on (map, G(map)), -mean D; the feature-matching loss,
  lambda_feat (10) x the L1 distance between D's features of the fake and the real pair,
  every layer but the last, averaged over the scales; with VGG19's weights on disk (torch's
  hub cache, never downloaded) also lambda_vgg (10) x the VGG perceptual loss;
- D: the hinge loss on the real pair and on a fresh G(map) (no gradient into G).

Adam (0, 0.9) with the two time-scale rule: lr 1e-4 for G, 4e-4 for D; spectral norm on G's
and D's convolutions. At test time (logged images, metrics, `translate`) G runs in evaluation
mode: batch norm with its running statistics, the reference's test setting. The data are
label maps and their images: dataset=masks (procedural), or dataset=paired with
dataset.label_classes=K (a folder whose A side holds label maps).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ganlab.config import ranged, schema
from ganlab.data.base import DataSpec
from ganlab.data.masks import colourize, label_classes, one_hot, read_label_map
from ganlab.errors import UserError
from ganlab.families.base import FAMILIES, Family
from ganlab.images import SYMMETRIC, make_grid, to_float, to_uint8
from ganlab.metrics.fidelity import fidelity
from ganlab.models import MODELS
from ganlab.models.spade import check_spade_size
from ganlab.optim import adam
from ganlab.pretrained import hub_weights_file

log = logging.getLogger("ganlab")

SHOWN = 8  # held-out maps in the logged grid
EVAL_BATCH = 16


class SpadeVgg(str, Enum):
    auto = "auto"  # on when torchvision's VGG19 weights are on disk, else off (said once)
    on = "on"  # on; refused when the weights are not on disk
    off = "off"


@schema("model", "spade")
@dataclass
class SpadeConfig:
    """`model.*` of SPADE: NVlabs/SPADE's defaults, widths configurable for a CPU."""

    name: str = "spade"
    family: str = "spade"
    g_features: int = ranged(64, "[1, inf)")  # ngf: G's last block; its first has 16 x ngf
    d_features: int = ranged(64, "[1, inf)")  # ndf: each PatchGAN's first layer
    d_layers: int = ranged(4, "[2, inf)")  # n_layers_D: 4x4 conv layers per PatchGAN
    d_scales: int = ranged(2, "[1, inf)")  # num_D: PatchGANs, each on a 2x smaller input
    spade_hidden: int = ranged(128, "[1, inf)")  # width of SPADE's conv on the label map
    spectral_norm: bool = True  # on G's and D's convolutions (norm_G, norm_D "spectral...")
    init_gain: float = ranged(0.02, "(0, inf)")  # xavier-normal gain (init_variance)
    lambda_feat: float = ranged(10.0, "[0, inf)")  # D feature-matching loss weight
    vgg: SpadeVgg = SpadeVgg.auto  # the VGG19 perceptual loss
    lambda_vgg: float = ranged(10.0, "[0, inf)")
    lr_g: float = ranged(1e-4, "(0, inf)")  # TTUR: lr / 2 for G, lr x 2 for D (lr 2e-4)
    lr_d: float = ranged(4e-4, "(0, inf)")
    betas: list[float] = ranged([0.0, 0.9], "[0, 1)")


class VggLoss(torch.nn.Module):
    """The reference's VGGLoss: L1 between VGG19 features of output and target at relu1_1,
    relu2_1, relu3_1, relu4_1, relu5_1, weighted 1/32, 1/16, 1/8, 1/4, 1. The images are
    normalised as VGG19 was trained ([-1, 1] -> ImageNet mean and std)."""

    CUTS = (2, 7, 12, 21, 30)
    WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)

    def __init__(self, path: Path) -> None:
        from ganlab.pretrained import torchvision_network

        super().__init__()
        vgg, _, _ = torchvision_network("vgg19", str(path), "model=spade")
        self.features = vgg.network.features[: self.CUTS[-1]].eval().requires_grad_(False)
        self.register_buffer("mean", vgg.mean.clone())
        self.register_buffer("std", vgg.std.clone())

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = ((x + 1) / 2 - self.mean) / self.std
        out, start = [], 0
        for cut in self.CUTS:
            x = self.features[start:cut](x)
            out.append(x)
            start = cut
        return out

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        pairs = zip(self._features(fake), self._features(real), strict=True)
        return sum(w * F.l1_loss(f, r.detach()) for w, (f, r) in zip(self.WEIGHTS, pairs,
                                                                     strict=True))


def hinge_d(scores: list[list[torch.Tensor]], real: bool) -> torch.Tensor:
    """The reference's hinge loss for D, mean over the scales' patch scores."""
    sign = -1.0 if real else 1.0
    return sum(F.relu(1 + sign * s[-1]).mean() for s in scores) / len(scores)


def hinge_g(scores: list[list[torch.Tensor]]) -> torch.Tensor:
    return -sum(s[-1].mean() for s in scores) / len(scores)


def feature_matching(fake: list[list[torch.Tensor]], real: list[list[torch.Tensor]]):
    """L1 between D's features of the fake and the real pair, every layer but the scores,
    summed over layers and averaged over scales (the reference's GAN_Feat loss / lambda)."""
    total = sum(F.l1_loss(f, r.detach()) for fs, rs in zip(fake, real, strict=True)
                for f, r in zip(fs[:-1], rs[:-1], strict=True))
    return total / len(fake)


@FAMILIES.register("spade")
class Spade(Family):
    chart_layout: ClassVar[dict[str, dict[str, list[str]]]] = {"spade": {
        "hinge losses": [r"^loss/(G_GAN|D_real|D_fake)$"],
        "feature matching (x lambda_feat), VGG (x lambda_vgg)": [r"^loss/G_(feat|VGG)$"],
        "held-out L1 (lower is better)": [r"^eval/l1$"],
        "held-out PSNR, dB (higher is better)": [r"^eval/psnr$"],
        "held-out SSIM (higher is better)": [r"^eval/ssim$"],
    }}
    visual_notes: ClassVar[dict[str, str]] = {
        "synthesis": "the same held-out label maps each time, one per row: the map (in "
                     "colour), the output, the real image"}

    needs_heldout = True
    paired = True
    directions: ClassVar[tuple[str, ...]] = ("AtoB",)
    input_channels = 1  # `translate` reads one channel: the class indices
    quality = staticmethod(fidelity)  # held-out L1, PSNR, SSIM: pix2pix's measures

    def __init__(self, cfg, spec: DataSpec, device: torch.device) -> None:
        c = cfg.model
        if spec.kind != "paired" or spec.num_classes < 1:
            raise UserError(f"model=spade synthesises images from label maps; dataset "
                            f"{spec.name!r} holds {spec.kind} data without them (use "
                            "dataset=masks, or dataset=paired dataset.label_classes=K)")
        self.cfg, self.spec, self.device = cfg, spec, device
        self.classes = spec.num_classes
        nets = MODELS.get(c.name)(c, spec)
        self.G, self.D = nets.G.to(device), nets.D.to(device)
        betas = tuple(c.betas)
        self.opt_G = adam(self.G.parameters(), lr=c.lr_g, betas=betas)
        self.opt_D = adam(self.D.parameters(), lr=c.lr_d, betas=betas)
        self.lambda_feat, self.lambda_vgg = float(c.lambda_feat), float(c.lambda_vgg)
        self.vgg, self.vgg_note = self._vgg(c.vgg)
        self.test_a: torch.Tensor | None = None
        self.test_b: torch.Tensor | None = None

    def _vgg(self, choice: SpadeVgg) -> tuple[VggLoss | None, str]:
        if choice == SpadeVgg.off or self.lambda_vgg == 0:
            return None, "off (model.vgg=off)"
        path = hub_weights_file("vgg19")
        if not path.is_file():
            if choice == SpadeVgg.on:
                raise UserError(f"model.vgg=on: torchvision's VGG19 weights are not on disk; "
                                f"place {path.name} at {path}, or set model.vgg=off")
            log.warning("model=spade: no VGG19 weights at %s: trained without the VGG loss "
                        "(the reference's lambda_vgg=10 term)", path)
            return None, f"off (no VGG19 weights at {path})"
        return VggLoss(path).to(self.device), f"on (VGG19 from {path})"

    @classmethod
    def check_config(cls, cfg) -> None:
        if not label_classes(cfg.dataset):
            raise UserError(f"model=spade synthesises images from label maps, and "
                            f"dataset={cfg.dataset.name} has none: use dataset=masks "
                            "(procedural maps), or dataset=paired dataset.name=<folder> "
                            "dataset.label_classes=K (A side: label maps, values 0..K-1)")
        if "image_size" in cfg.dataset:
            check_spade_size(int(cfg.dataset.image_size))

    def check_size(self, size: int, key: str) -> None:
        check_spade_size(size, key)

    def use_heldout(self, data) -> None:
        self.heldout = data
        self.test_a, self.test_b = data.a, data.b

    # --- training ------------------------------------------------------------------------

    def _pair(self, segmap: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return torch.cat([segmap, image], 1)

    def _discriminate(self, segmap, fake, real):
        """D's outputs on the fake and the real pair, in one pass as the reference."""
        both = self.D(torch.cat([self._pair(segmap, fake), self._pair(segmap, real)], 0))
        n = len(fake)
        return ([[f[:n] for f in scale] for scale in both],
                [[f[n:] for f in scale] for scale in both])

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        labels, images = batch
        segmap = one_hot(labels, self.classes)
        real = to_float(images, SYMMETRIC)

        # G first, as the reference: D frozen (its gradients would be discarded anyway)
        self.D.requires_grad_(False)
        self.opt_G.zero_grad(set_to_none=True)
        fake = self.G(segmap)
        pred_fake, pred_real = self._discriminate(segmap, fake, real)
        g_gan = hinge_g(pred_fake)
        g_feat = self.lambda_feat * feature_matching(pred_fake, pred_real)
        g_loss = g_gan + g_feat
        losses = {"G_GAN": g_gan, "G_feat": g_feat}
        if self.vgg is not None:
            losses["G_VGG"] = self.lambda_vgg * self.vgg(fake, real)
            g_loss = g_loss + losses["G_VGG"]
        self.amp.backward(g_loss)
        self.amp.step(self.opt_G)
        self.D.requires_grad_(True)

        # then D, on a fresh output of the updated G
        self.opt_D.zero_grad(set_to_none=True)
        with torch.no_grad():
            fake = self.G(segmap)
        pred_fake, pred_real = self._discriminate(segmap, fake, real)
        d_fake, d_real = hinge_d(pred_fake, real=False), hinge_d(pred_real, real=True)
        self.amp.backward(d_fake + d_real)
        self.amp.step(self.opt_D)
        losses.update(D_fake=d_fake, D_real=d_real)
        return {f"loss/{k}": v.detach() for k, v in losses.items()}

    # --- using the generator -------------------------------------------------------------

    @contextlib.contextmanager
    def _eval_mode(self) -> Iterator[None]:
        was = self.G.training
        self.G.eval()
        try:
            yield
        finally:
            self.G.train(was)

    @torch.no_grad()
    def _outputs(self, labels: torch.Tensor) -> torch.Tensor:
        with self._eval_mode():
            return torch.cat([
                to_uint8(self.G(one_hot(labels[i : i + EVAL_BATCH], self.classes)), SYMMETRIC)
                for i in range(0, len(labels), EVAL_BATCH)])

    def translate(self, images: torch.Tensor, direction: str) -> torch.Tensor:
        """uint8 (N, 1, H, W) label maps (class indices) -> uint8 (N, C, H, W) images."""
        if direction != "AtoB":
            raise UserError(f"spade synthesises one way only (AtoB: label map to image), not "
                            f"{direction}")
        if images.shape[1] != 1:
            raise UserError(f"spade takes label maps of class indices (1 channel), not "
                            f"{images.shape[1]}-channel images")
        top = int(images.max()) if images.numel() else 0
        if top >= self.classes:
            raise UserError(f"a label map holds class {top}; this model knows "
                            f"{self.classes} classes (0..{self.classes - 1})")
        return self._outputs(images.to(self.device))

    def generator_input(self) -> tuple[tuple[int, ...], torch.dtype, str]:
        """G's input (OneWayTranslator): the label map one-hot, a channel per class."""
        return ((self.classes, *self.spec.shape[1:]), torch.float32,
                f"one-hot label map (0/1, a channel per class of {self.classes})")

    def generator_output(self) -> str:
        return "in [-1, 1] (tanh)"

    def read_input(self, path: Path, size: int):
        """`translate`'s reader: a label map file as uint8 (size, size, 1) class indices,
        resized with nearest neighbours (None when unreadable)."""
        array = read_label_map(path, size)
        return None if array is None else array[:, :, None]

    @staticmethod
    def show_input(labels: torch.Tensor) -> torch.Tensor:
        """Label maps in colour, for sheets and grids."""
        return colourize(labels)

    @torch.no_grad()
    def visuals(self) -> dict[str, torch.Tensor]:
        if self.test_a is None or self.test_b is None:
            return {}
        n = min(SHOWN, self.cfg.log.n_samples, len(self.test_a))
        a, b = self.test_a[:n], self.test_b[:n]
        shown = colourize(a)
        if b.shape[1] == 1:
            shown = shown.float().mean(1, keepdim=True).round().to(torch.uint8)
        rows = torch.stack([shown, self._outputs(a), b], dim=1).flatten(0, 1)
        return {"synthesis": make_grid(rows, nrow=3)}

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """L1, PSNR and SSIM of G's outputs against the real images of the held-out maps
        (pix2pix's measures, ganlab.metrics.fidelity), and whether the VGG loss was on."""
        if self.test_a is None or self.test_b is None:
            return {}
        n = min(len(self.test_a), self.cfg.eval.n_samples)
        metrics: dict[str, Any] = self.quality(self._outputs(self.test_a[:n]), self.test_b[:n])
        metrics["vgg_loss"] = self.vgg_note
        return metrics

    def heldout_pairs(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        if self.test_a is None or self.test_b is None:
            return {}
        return {"AtoB": (self.test_a, self.test_b)}

    def networks(self) -> dict[str, torch.nn.Module]:
        return {"G": self.G, "D": self.D}
