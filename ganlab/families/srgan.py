"""Super-resolution: SRGAN and its MSE-only generator SRResNet (Ledig et al. 2017).

The data are any image dataset: each image (the high-resolution target, HR) is paired with its
antialiased bicubic downsample by model.scale (the low-resolution input, LR; ganlab.data.paired
makes it on the device, per batch). G, an SRResNet (ganlab.models.srgan), maps LR to HR. Per
step, as the paper's SRGAN-VGG54:

- D (when adversarial_weight > 0) steps on the binary cross-entropy of its logits for real HR
  images (1) and for G(LR) (0);
- G steps on  mse_weight * MSE(G(LR), HR)  +  content_weight * MSE(phi(G(LR)), phi(HR))
  +  adversarial_weight * -log D(G(LR)),
  phi being the feature maps of a fixed network: VGG19's `features` up to relu5_4 (the
  paper's VGG54, its maps divided by 12.75 as the paper rescales them) when torchvision's
  VGG19 weights are on disk, otherwise the last conv stage (after its ReLU, before its
  pooling, as relu5_4 sits before VGG's last pooling) of a classifier ganlab trained on the
  same data: the digit datasets' reference LeNet (ganlab.metrics.reference), or
  eval.classifier=PATH. model.content_network says which (auto: VGG19 when present).

model=srgan: content 1, adversarial 1e-3, MSE 0 (the paper). model=srresnet: MSE 1 and
nothing else, so no discriminator and no content network is built (the paper's SRResNet).
Adam 1e-4, betas (0.9, 0.999), as the paper. Images are [-1, 1] on both sides (the paper
feeds LR in [0, 1]). The paper starts SRGAN from a trained SRResNet; here both start from
scratch (model.init=RUN starts G from an srresnet run's generator).

At test time G runs in evaluation mode (BN's running statistics). The held-out images' PSNR,
SSIM, L1 and sharpness (Laplacian variance over the HR images') are logged beside those of the
bicubic enlargement of the same LR inputs (baseline_*); best.pt keeps the best PSNR.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ganlab.config import one_of, ranged, schema
from ganlab.data.base import DataSpec
from ganlab.data.paired import check_scale_divides, downsample, upsample
from ganlab.errors import UserError
from ganlab.families.base import FAMILIES, Family
from ganlab.images import SYMMETRIC, make_grid, to_float, to_uint8
from ganlab.metrics import RANKED_BY
from ganlab.metrics.fidelity import fidelity
from ganlab.metrics.sharpness import sharpness_ratio
from ganlab.models import MODELS
from ganlab.models.srgan import check_scale
from ganlab.optim import adam

log = logging.getLogger("ganlab")

SHOWN = 8  # held-out images in the logged grid
EVAL_BATCH = 64  # images per forward pass at test time
VGG_NAME = "vgg19"
VGG54 = 36  # torchvision vgg19.features[:36] ends with relu5_4, before the last max-pool
VGG_RESCALE = 1 / 12.75  # the paper's rescaling of the VGG feature maps


@schema("model", "srgan")
@dataclass
class SrganConfig:
    """`model.*` of srgan and srresnet: Ledig et al.'s defaults, but small enough for a CPU
    where marked (the paper: 16 blocks of width 64)."""

    name: str = "srgan"
    family: str = "srgan"
    scale: int = ranged(4, "[2, 8]")  # the upscaling factor: 2 or 4 (the paper's 4)
    blocks: int = ranged(16, "[0, inf)")  # G's residual blocks (the paper's 16)
    g_features: int = ranged(64, "[1, inf)")  # G's width (the paper's 64)
    d_features: int = ranged(64, "[1, inf)")  # D's first width (the paper's 64)
    mse_weight: float = ranged(0.0, "[0, inf)")  # pixel MSE (srresnet: 1)
    content_weight: float = ranged(1.0, "[0, inf)")  # MSE of the content network's features
    adversarial_weight: float = ranged(1e-3, "[0, inf)")  # -log D(G(LR)); 0: no D at all
    # auto: VGG19 (relu5_4) when its torchvision weights are on disk, else the dataset's
    # reference classifier (or eval.classifier); vgg19 or classifier: that one or an error
    content_network: str = one_of("auto", "auto", "vgg19", "classifier")
    vgg_weights: str | None = None  # a VGG19 weights file instead of torch's hub cache
    lr: float = ranged(1e-4, "(0, inf)")  # Adam, G and D (the paper's 1e-4)
    betas: list[float] = ranged([0.9, 0.999], "[0, 1)")
    init: str | None = None  # start G from this srresnet/srgan run's (or checkpoint's) G


@schema("model", "srresnet")
@dataclass
class SrresnetConfig(SrganConfig):
    """`model.*` of srresnet: the same generator trained on the pixel MSE alone (no D, no
    content network)."""

    name: str = "srresnet"
    mse_weight: float = ranged(1.0, "[0, inf)")
    content_weight: float = ranged(0.0, "[0, inf)")
    adversarial_weight: float = ranged(0.0, "[0, inf)")


def vgg_weights_path(c) -> Path:
    """Where torchvision's VGG19 weights are looked for: model.vgg_weights, else the file
    torchvision would download into torch's hub cache (nothing is downloaded)."""
    from ganlab.pretrained import hub_weights_file

    return Path(c.vgg_weights).expanduser() if c.vgg_weights else hub_weights_file(VGG_NAME)


def content_choice(cfg) -> str:
    """Which content network a config gets: "vgg19" or "classifier"; a UserError in one line
    when the one asked for (or, for auto, either) is not available."""
    from ganlab.metrics.reference import REFERENCE_DATASETS

    c = cfg.model
    vgg = vgg_weights_path(c)
    classifier = bool(cfg.eval.get("classifier")) or cfg.dataset.name in REFERENCE_DATASETS
    wanted = c.content_network
    if wanted in ("auto", "vgg19") and vgg.is_file():
        return "vgg19"
    if wanted in ("auto", "classifier") and classifier:
        return "classifier"
    no_vgg = (f"VGG19's torchvision weights are not at {vgg} (place "
              f"{vgg.name} there, or give model.vgg_weights=FILE)")
    no_classifier = (f"ganlab has no reference classifier for dataset={cfg.dataset.name} (it "
                     "has one for mnist and fashion_mnist; or give eval.classifier=PATH)")
    reasons = {"auto": f"{no_vgg}, and {no_classifier}", "vgg19": no_vgg,
               "classifier": no_classifier}[wanted]
    raise UserError(f"model={c.name}: no content network for the content loss: {reasons}; "
                    "or set model.content_weight=0 (or use model=srresnet)")


class ContentNetwork(nn.Module):
    """[-1, 1] images -> the fixed feature maps the content loss compares (no gradients to
    its own weights; in evaluation mode always)."""

    def __init__(self, body: nn.Module, prepare, rescale: float, description: str) -> None:
        super().__init__()
        self.body, self.prepare = body.eval().requires_grad_(False), prepare
        self.rescale, self.description = rescale, description

    def train(self, mode: bool = True) -> ContentNetwork:
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.prepare((x + 1) / 2)) * self.rescale


def vgg_content(c, device: torch.device) -> ContentNetwork:
    from ganlab.pretrained import torchvision_network

    network, _, _ = torchvision_network(VGG_NAME, str(vgg_weights_path(c)), f"model={c.name}")
    body = nn.Sequential(*list(network.network.features)[:VGG54])
    mean, std = network.mean.to(device), network.std.to(device)

    def prepare(x: torch.Tensor) -> torch.Tensor:  # gray repeated to RGB; ImageNet's statistics
        return (x.expand(-1, 3, -1, -1) - mean) / std

    return ContentNetwork(body.to(device), prepare, VGG_RESCALE,
                          f"VGG19 relu5_4 (VGG54; torchvision weights {vgg_weights_path(c)})")


def classifier_content(cfg, device: torch.device) -> ContentNetwork:
    from ganlab.metrics.reference import load_reference

    reference = load_reference(cfg.eval, cfg.dataset, Path(cfg.data_dir), device)
    layers = list(reference.model)
    pools = [i for i, layer in enumerate(layers) if isinstance(layer, nn.MaxPool2d)]
    if not pools:
        raise UserError(f"the content classifier ({reference.description}) has no conv "
                        "stage (a LeNet has); give a lenet run as eval.classifier=PATH")
    body = nn.Sequential(*layers[: pools[-1]])  # the last conv stage, after its ReLU
    return ContentNetwork(body, reference.adapt, 1.0,
                          f"{reference.description}: its last conv stage (ReLU, before the "
                          "pooling)")


@FAMILIES.register("srgan")
class Srgan(Family):
    chart_layout: ClassVar[dict[str, dict[str, list[str]]]] = {"super-resolution": {
        "generator losses": [r"^loss/G_(MSE|content|GAN)$"],
        "discriminator losses": [r"^loss/D_(real|fake)$"],
        "held-out PSNR, dB (higher is better; baseline: bicubic)": [r"^eval/(baseline_)?psnr$"],
        "held-out SSIM (higher is better)": [r"^eval/(baseline_)?ssim$"],
        "held-out L1 (lower is better)": [r"^eval/(baseline_)?l1$"],
        "sharpness (HR images = 1)": [r"^eval/(baseline_)?sharpness$"],
    }}
    visual_notes: ClassVar[dict[str, str]] = {
        "super_resolution": "the same held-out images each time, one per row: low-resolution "
                            "input (enlarged, nearest), bicubic, output, high-resolution target"}

    needs_heldout = True
    directions: ClassVar[tuple[str, ...]] = ("AtoB",)  # `translate`: LR to HR only

    def __init__(self, cfg, spec: DataSpec, device: torch.device) -> None:
        c = cfg.model
        if spec.kind != "image":
            raise UserError(f"model={c.name} upscales images; dataset {spec.name!r} holds "
                            f"{spec.kind} data")
        check_scale(int(c.scale))
        check_scale_divides(spec.shape[-1], int(c.scale), spec.name)
        self.cfg, self.spec, self.device = cfg, spec, device
        self.scale = int(c.scale)
        self.input_channels = spec.shape[0]
        nets = MODELS.get(c.name)(c, spec)
        self.G = nets.G.to(device)
        self.D = nets.D.to(device) if nets.D is not None else None
        betas = tuple(c.betas)
        self.opt_G = adam(self.G.parameters(), lr=c.lr, betas=betas)
        self.opt_D = (adam(self.D.parameters(), lr=c.lr, betas=betas)
                      if self.D is not None else None)
        self.mse_weight = float(c.mse_weight)
        self.content_weight = float(c.content_weight)
        self.adversarial_weight = float(c.adversarial_weight)
        self._content: ContentNetwork | None = None  # built on first use (not by `translate`)
        if c.init:
            self._start_from(c.init)
        self.test_lr: torch.Tensor | None = None  # held-out inputs and targets, uint8
        self.test_hr: torch.Tensor | None = None
        self._baseline: dict[str, float] | None = None

    @classmethod
    def check_config(cls, cfg) -> None:
        c, dataset = cfg.model, cfg.dataset  # paired datasets: refused by check_family_data
        check_scale(int(c.scale))
        if "image_size" in dataset:
            check_scale_divides(int(dataset.image_size), int(c.scale), dataset.name)
        if float(c.content_weight) > 0:
            content_choice(cfg)

    def _start_from(self, path: str) -> None:
        from ganlab.checkpoint import load_checkpoint

        other = load_checkpoint(path, self.device)
        if not isinstance(other, Srgan) or other.scale != self.scale:
            raise UserError(f"model.init={path} is not an srgan or srresnet run at scale "
                            f"{self.scale}")
        try:
            self.G.load_state_dict(other.G.state_dict())
        except RuntimeError as e:
            raise UserError(f"model.init={path}: its generator has other widths or block "
                            f"counts ({str(e).splitlines()[0]})") from e
        log.info("generator initialised from %s (step %s)", path, other.step)

    def content(self) -> ContentNetwork:
        """The fixed content network, built (and its choice logged) on first use."""
        if self._content is None:
            choice = content_choice(self.cfg)
            self._content = (vgg_content(self.cfg.model, self.device) if choice == "vgg19"
                             else classifier_content(self.cfg, self.device))
            log.info("content loss on the features of %s", self._content.description)
        return self._content

    def check_size(self, size: int, key: str) -> None:
        """`translate size=N`: the output side, which the scale must divide."""
        if size % self.scale:
            raise UserError(f"{key}={size} is not a multiple of this model's scale "
                            f"({self.scale}): the input would be {size / self.scale:g} px")

    # --- data ----------------------------------------------------------------------------

    def use_heldout(self, data) -> None:
        self.heldout = data
        self.test_hr = data.x
        self.test_lr = downsample(data.x, self.scale)
        self._baseline = None

    # --- training ------------------------------------------------------------------------

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        hr_uint8 = batch[0]
        lr = to_float(downsample(hr_uint8, self.scale), SYMMETRIC)
        hr = to_float(hr_uint8, SYMMETRIC)
        fake = self.G(lr)
        losses: dict[str, torch.Tensor] = {}

        if self.D is not None:  # D first, on real HR and on G's outputs (G's graph cut off)
            self.D.requires_grad_(True)
            self.opt_D.zero_grad(set_to_none=True)
            real_logits, fake_logits = self.D(hr), self.D(fake.detach())
            d_real = F.binary_cross_entropy_with_logits(real_logits,
                                                        torch.ones_like(real_logits))
            d_fake = F.binary_cross_entropy_with_logits(fake_logits,
                                                        torch.zeros_like(fake_logits))
            self.amp.backward(d_real + d_fake)
            self.amp.step(self.opt_D)
            self.D.requires_grad_(False)
            losses.update(D_real=d_real, D_fake=d_fake)

        self.opt_G.zero_grad(set_to_none=True)
        total = fake.new_zeros(())
        if self.mse_weight:
            losses["G_MSE"] = self.mse_weight * F.mse_loss(fake, hr)
            total = total + losses["G_MSE"]
        if self.content_weight:
            phi = self.content()
            with torch.no_grad():
                target = phi(hr)
            losses["G_content"] = self.content_weight * F.mse_loss(phi(fake), target)
            total = total + losses["G_content"]
        if self.D is not None:  # -log D(G(LR)), judged by the updated D
            logits = self.D(fake)
            losses["G_GAN"] = self.adversarial_weight * F.binary_cross_entropy_with_logits(
                logits, torch.ones_like(logits))
            total = total + losses["G_GAN"]
            self.D.requires_grad_(True)
        self.amp.backward(total)
        self.amp.step(self.opt_G)
        return {f"loss/{k}": v.detach() for k, v in losses.items()}

    # --- using the generator -------------------------------------------------------------

    @torch.no_grad()
    def _outputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """uint8 HR outputs for uint8 LR inputs, G as it is (the loop and load_checkpoint put
        it in evaluation mode)."""
        return torch.cat([
            to_uint8(self.G(to_float(inputs[i : i + EVAL_BATCH], SYMMETRIC)), SYMMETRIC)
            for i in range(0, len(inputs), EVAL_BATCH)])

    def translate(self, images: torch.Tensor, direction: str) -> torch.Tensor:
        """uint8 (N, C, h, w) low-resolution images -> uint8 (N, C, scale h, scale w)."""
        if direction != "AtoB":
            raise UserError(f"{self.cfg.model.name} upscales (AtoB) only, not {direction}")
        if images.shape[1] != self.input_channels:
            raise UserError(f"this {self.cfg.model.name} model takes {self.input_channels}-"
                            f"channel images, not {images.shape[1]}")
        return self._outputs(images.to(self.device))

    def generator_input(self) -> tuple[tuple[int, ...], torch.dtype, str]:
        """G's input (OneWayTranslator): the low-resolution image in [-1, 1]."""
        channels, height, width = self.spec.shape
        return ((channels, height // self.scale, width // self.scale), torch.float32,
                "in [-1, 1] (low resolution)")

    def generator_output(self) -> str:
        return f"in [-1, 1] (tanh), {self.scale}x larger"

    def read_input(self, path: Path, size: int) -> np.ndarray | None:
        """`translate`: an image file read at the input size for `size`-px outputs (bicubic,
        antialiased when it shrinks: a low-resolution image of that size stays as it is)."""
        from ganlab.data.imagefiles import decode

        return decode(path, size // self.scale, channels=self.input_channels,
                      resample=Image.BICUBIC)

    def show_input(self, images: torch.Tensor) -> torch.Tensor:
        """Low-resolution images enlarged (nearest: the pixels as they are) beside outputs."""
        return images.repeat_interleave(self.scale, -2).repeat_interleave(self.scale, -1)

    @torch.no_grad()
    def visuals(self) -> dict[str, torch.Tensor]:
        """Per held-out image a row: LR input (enlarged), bicubic, output, HR target."""
        if self.test_lr is None or self.test_hr is None:
            return {}
        n = min(SHOWN, self.cfg.log.n_samples, len(self.test_lr))
        lr, hr = self.test_lr[:n], self.test_hr[:n]
        rows = torch.stack([self.show_input(lr), upsample(lr, self.scale), self._outputs(lr),
                            hr], dim=1).flatten(0, 1)
        return {"super_resolution": make_grid(rows, nrow=4)}

    # --- metrics -------------------------------------------------------------------------

    @staticmethod
    def quality(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """L1, PSNR and SSIM (pix2pix's) and sharpness (Laplacian variance over the
        targets')."""
        return {**fidelity(outputs, targets), "sharpness": sharpness_ratio(outputs, targets)}

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """On the first eval.n_samples held-out images: G's numbers, the bicubic baseline's
        (baseline_*), the content network used (a string) and the metric best.pt keeps."""
        if self.test_lr is None or self.test_hr is None:
            return {}
        n = min(len(self.test_lr), self.cfg.eval.n_samples)
        lr, hr = self.test_lr[:n], self.test_hr[:n]
        metrics: dict[str, Any] = self.quality(self._outputs(lr), hr)
        if self._baseline is None:
            baseline = self.quality(upsample(lr, self.scale), hr)
            self._baseline = {f"baseline_{k}": v for k, v in baseline.items()}
        metrics.update(self._baseline)
        metrics["content_network"] = (self.content().description if self.content_weight
                                      else "none (pixel MSE only)")
        metrics[RANKED_BY] = "psnr"  # as the paper compares its models
        return metrics

    def heldout_pairs(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The held-out LR inputs and HR targets (the Inception FID of the outputs)."""
        if self.test_lr is None or self.test_hr is None:
            return {}
        return {"AtoB": (self.test_lr, self.test_hr)}

    # --- state ---------------------------------------------------------------------------

    def networks(self) -> dict[str, torch.nn.Module]:
        """G and D: the content network is fixed, and not part of the state."""
        return {"G": self.G, **({"D": self.D} if self.D is not None else {})}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt_G": self.opt_G, **({"opt_D": self.opt_D} if self.opt_D is not None else {})}
