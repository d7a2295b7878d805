"""The pix2pix family: paired image-to-image translation with a conditional GAN (Isola et al.
2017), with the defaults of the authors' reference implementation.

G, a U-Net, maps an input image A to an output image; D, a 70x70 PatchGAN, judges (input,
output) pairs, their channels concatenated. Per step, as the reference orders it:

- D_real, D_fake: D's loss on the real pair (A, B) and on (A, G(A)); D steps on their mean;
- G_GAN: the adversarial loss of (A, G(A)) judged by the updated D; G_L1 = lambda_l1 |G(A) - B|_1
  (lambda_l1 = 100); G steps on lambda_gan G_GAN + G_L1 (lambda_gan = 1).

`model.lambda_gan=0` is the paper's "L1 alone" row (Isola et al., Table 1): G learns from L1 only
and D is neither trained nor used, so the same U-Net and budget show what the adversarial
term adds (scripts/bench_blur.py measures it).

The criterion is the reference's vanilla GAN loss (binary cross-entropy on logits), or LSGAN.
G has no noise input: dropout in its innermost decoder levels is the noise, as in the paper.

At test time (the logged images, the metrics, `translate`) G runs as the paper runs it and as
the reference's test.py does by default: dropout on, and batch norm from each test batch's own
statistics, in batches of trainer.batch_size (1: every image by itself, as in training). The
running statistics are left untouched and the dropout masks come from a fixed seed, so the
same input gives the same output every time and measuring never moves training.
`model.test_mode=eval` uses the running statistics and no dropout instead (the reference's
--eval). The data come as pairs (dataset=paired, dataset=facades), or from a task that makes
pairs from any image dataset: model.task=colorize (the BT.601 luma of an RGB image -> the image),
super_resolution (its bicubic downsample, enlarged back bicubically to the full size, since the
U-Net maps an image to one of the same size -> the image) or inpaint (the image with a gray
square hole -> the image); see ganlab.data.paired.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ganlab.config import one_of, ranged, schema
from ganlab.data.base import DataSpec
from ganlab.data.paired import (
    IMAGE_TASKS,
    MASK_SEED,
    PairedTask,
    check_colorize_channels,
    check_scale_divides,
    square_masks,
    task_input_channels,
    task_inputs,
)
from ganlab.errors import UserError
from ganlab.families.base import FAMILIES, Family
from ganlab.families.cyclegan import CycleganLoss, CycleganNorm
from ganlab.images import SYMMETRIC, make_grid, to_float, to_uint8
from ganlab.metrics.fidelity import fidelity
from ganlab.models import MODELS
from ganlab.models.cyclegan import check_pix2pix_size
from ganlab.optim import adam
from ganlab.schedules import decay_lr

SHOWN = 8  # held-out pairs in the logged grid
EVAL_BATCH = 16  # images per forward pass when batch statistics are not in play
TEST_SEED = 20170  # the dropout masks at test time: the same every time


class Pix2pixTestMode(str, Enum):
    train = "train"  # the paper: dropout on, batch norm from the test batch's statistics
    eval = "eval"  # running statistics, no dropout (the reference's --eval)


@schema("model", "pix2pix")
@dataclass
class Pix2pixConfig:
    """`model.*` of pix2pix: Isola et al. and their reference implementation's defaults."""

    name: str = "pix2pix"
    family: str = "pix2pix"
    # paired: the dataset holds (input, target) pairs; colorize: the luma of any RGB image
    # dataset is the input and the image the target; super_resolution: its bicubic downsample
    # by `scale` (enlarged back to full size); inpaint: the image with a square hole
    task: PairedTask = PairedTask.paired
    scale: int = ranged(4, "[2, 8]")  # super_resolution: the downsampling factor
    mask_size: float = ranged(0.5, "(0, 1)")  # inpaint: the hole's side over the image's
    mask_place: str = one_of("random", "random", "center")  # inpaint: where the hole is
    g_features: int = ranged(64, "[1, inf)")  # width of the U-Net's outermost level
    d_features: int = ranged(64, "[1, inf)")  # width of the PatchGAN's first layer
    d_layers: int = ranged(3, "[1, inf)")  # stride-2 PatchGAN layers: 3 gives 70x70 patches
    norm: CycleganNorm = CycleganNorm.batch  # the reference's pix2pix default
    dropout: bool = True  # dropout 0.5 in the decoder levels next to the bottleneck: G's noise
    init_gain: float = ranged(0.02, "(0, inf)")  # weights drawn from N(0, init_gain)
    gan_loss: CycleganLoss = CycleganLoss.vanilla
    lambda_l1: float = ranged(100.0, "[0, inf)")  # weight of the L1 loss to the target
    lambda_gan: float = ranged(1.0, "[0, inf)")  # weight of the adversarial loss; 0: L1 alone
    lr: float = ranged(2e-4, "(0, inf)")  # Adam, generator and discriminator
    betas: list[float] = ranged([0.5, 0.999], "[0, 1)")
    decay_start: float = ranged(0.5, "[0, 1]")  # share of the run after which the lr decays
    test_mode: Pix2pixTestMode = Pix2pixTestMode.train


@FAMILIES.register("pix2pix")
class Pix2pix(Family):
    chart_layout: ClassVar[dict[str, dict[str, list[str]]]] = {"pix2pix": {
        "adversarial losses": [r"^loss/(G_GAN|D_real|D_fake)$"],
        "L1 loss (x lambda_l1)": [r"^loss/G_L1$"],
        "held-out L1 (lower is better)": [r"^eval/(baseline_)?l1$"],
        "held-out PSNR, dB (higher is better)": [r"^eval/(baseline_)?psnr$"],
        "held-out SSIM (higher is better)": [r"^eval/(baseline_)?ssim$"],
        "learning rate": [r"^lr$"],
    }}
    visual_notes: ClassVar[dict[str, str]] = {
        "translation": "the same held-out pairs each time, one per row: input, output, target"}

    needs_heldout = True  # the held-out pairs: the logged translations and the metrics
    paired = True
    directions: ClassVar[tuple[str, ...]] = ("AtoB",)  # `translate`: input to output only

    def __init__(self, cfg, spec: DataSpec, device: torch.device) -> None:
        c = cfg.model
        self.task = c.task.value
        if self.task == PairedTask.paired.value and spec.kind != "paired":
            raise UserError(f"model=pix2pix translates image pairs; dataset {spec.name!r} holds "
                            f"{spec.kind} data (use model.task=colorize on an RGB dataset)")
        if self.task in IMAGE_TASKS and spec.kind != "image":
            raise UserError(f"model.task={self.task} needs an image dataset; dataset "
                            f"{spec.name!r} holds {spec.kind} data")
        if self.task == PairedTask.colorize.value:
            check_colorize_channels(spec.shape[0], spec.name)
        if self.task == PairedTask.super_resolution.value:
            check_scale_divides(spec.shape[-1], int(c.scale), spec.name)
        self.cfg, self.spec, self.device = cfg, spec, device
        self.input_channels = task_input_channels(self.task, spec.shape[0])
        nets = MODELS.get(c.name)(c, spec)
        self.G, self.D = nets.G.to(device), nets.D.to(device)
        self.depth = nets.depth
        betas = tuple(c.betas)
        self.opt_G = adam(self.G.parameters(), lr=c.lr, betas=betas)
        self.opt_D = adam(self.D.parameters(), lr=c.lr, betas=betas)
        self.lr, self.decay_start = float(c.lr), float(c.decay_start)
        self.lambda_l1 = float(c.lambda_l1)
        self.lambda_gan = float(c.lambda_gan)
        self.gan_loss = CycleganLoss(c.gan_loss)
        self.test_mode = c.test_mode
        # test batches: as large as the training batches when their statistics are used
        self.test_batch = (int(cfg.trainer.batch_size) if c.test_mode == Pix2pixTestMode.train
                           else EVAL_BATCH)
        self.updates = 0  # optimisation steps taken: the lr schedule's position
        self.test_a: torch.Tensor | None = None  # held-out inputs and targets, uint8
        self.test_b: torch.Tensor | None = None
        self._baseline: dict[str, float] | None = None

    @classmethod
    def check_config(cls, cfg) -> None:
        from ganlab.data import is_paired
        from ganlab.data.masks import label_classes

        c, dataset = cfg.model, cfg.dataset
        if label_classes(dataset):
            raise UserError(f"dataset={dataset.name} holds label maps (class indices) as its "
                            "inputs, for model=spade; pix2pix translates images (unset "
                            "dataset.label_classes to read the A side as an image)")
        if c.task == PairedTask.paired and not is_paired(dataset):
            raise UserError(f"model=pix2pix translates image pairs; dataset={dataset.name} is "
                            "not paired: use dataset=paired dataset.name=<a folder with train/ "
                            "(A|B side by side) or trainA/ and trainB/>, dataset=facades, or "
                            "model.task=colorize on an RGB image dataset")
        if c.task.value in IMAGE_TASKS and is_paired(dataset):
            raise UserError(f"model.task={c.task.value} makes its pairs from an image "
                            f"dataset; dataset={dataset.name} holds pairs already (use "
                            "model.task=paired)")
        if c.task == PairedTask.colorize and "channels" in dataset:
            check_colorize_channels(int(dataset.channels), dataset.name)
        if c.task == PairedTask.super_resolution and "image_size" in dataset:
            check_scale_divides(int(dataset.image_size), int(c.scale), dataset.name)
        if "image_size" in dataset:
            check_pix2pix_size(int(dataset.image_size), int(c.d_layers))
        if float(c.lambda_gan) == 0 and float(c.lambda_l1) == 0:
            raise UserError("model.lambda_gan=0 and model.lambda_l1=0 leave G nothing to learn "
                            "from: set one of them above 0")

    def check_size(self, size: int, key: str) -> None:
        """Whether G can translate `size`-px images (it is convolutional)."""
        multiple = 2**self.depth
        if size % multiple or size < multiple:
            raise UserError(f"{key}={size} does not suit this model's U-Net: it takes sizes "
                            f"that are multiples of {multiple} (the training size was "
                            f"{self.spec.shape[-1]})")

    # --- the data: pairs, however they come ----------------------------------------------

    def pairs(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (input, target) images from a batch of the dataset: a (a, b) pair of batches,
        or for an image task an (images, labels) batch the input is made from."""
        if self.task in IMAGE_TASKS:
            images = batch[0]
            return task_inputs(self.task, images, self.cfg.model), images
        return batch[0], batch[1]

    def use_heldout(self, data) -> None:
        self.heldout = data
        if self.task in IMAGE_TASKS:
            masks = None
            if self.task == PairedTask.inpaint.value:  # each held-out image keeps its hole
                c = self.cfg.model
                masks = square_masks(len(data.x), data.x.shape[-1], float(c.mask_size),
                                     str(c.mask_place), data.x.device,
                                     torch.Generator().manual_seed(MASK_SEED))
            self.test_a, self.test_b = task_inputs(self.task, data.x, self.cfg.model,
                                                   masks), data.x
        else:
            self.test_a, self.test_b = data.a, data.b
        self._baseline = None

    # --- training ------------------------------------------------------------------------

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        a, b = (to_float(x, SYMMETRIC) for x in self.pairs(batch))
        lr = decay_lr((self.opt_G, self.opt_D), self.lr, self.updates,
                      self.run_length or self.cfg.trainer.max_steps, self.decay_start)
        fake = self.G(a)
        losses = self._adversarial_step(a, b, fake) if self.lambda_gan > 0 else {}

        g_l1 = self.lambda_l1 * F.l1_loss(fake, b)
        self.opt_G.zero_grad(set_to_none=True)
        g_loss = g_l1 + self.lambda_gan * losses["G_GAN"] if losses else g_l1
        self.amp.backward(g_loss)
        self.amp.step(self.opt_G)
        self.D.requires_grad_(True)
        self.updates += 1
        losses["G_L1"] = g_l1
        out = {f"loss/{k}": v.detach() for k, v in losses.items()}
        out["lr"] = torch.tensor(lr)
        return out

    def _adversarial_step(self, a: torch.Tensor, b: torch.Tensor,
                          fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """D's step on the real pair and the generated one, then G's adversarial loss judged
        by the updated D (D frozen: no parameter gradients wasted on it); the caller adds the
        L1 term and steps G."""
        self.D.requires_grad_(True)
        self.opt_D.zero_grad(set_to_none=True)
        d_fake = self.gan_loss.to_target(self.D(torch.cat([a, fake.detach()], 1)), real=False)
        d_real = self.gan_loss.to_target(self.D(torch.cat([a, b], 1)), real=True)
        self.amp.backward(0.5 * (d_fake + d_real))
        self.amp.step(self.opt_D)

        self.D.requires_grad_(False)
        g_gan = self.gan_loss.to_target(self.D(torch.cat([a, fake], 1)), real=True)
        return {"G_GAN": g_gan, "D_real": d_real, "D_fake": d_fake}

    # --- using the generator -------------------------------------------------------------

    @contextlib.contextmanager
    def _test_time(self) -> Iterator[None]:
        """G as test_mode asks. For "train": training mode with the running statistics
        restored afterwards, under a fixed dropout seed in a forked RNG (the caller's RNG
        state is as before)."""
        if self.test_mode == Pix2pixTestMode.eval:
            was = self.G.training
            self.G.eval()
            try:
                yield
            finally:
                self.G.train(was)
            return
        was = self.G.training
        saved = [buffer.clone() for buffer in self.G.buffers()]
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(TEST_SEED)
            self.G.train()
            try:
                yield
            finally:
                self.G.train(was)
                for buffer, value in zip(self.G.buffers(), saved, strict=True):
                    buffer.copy_(value)

    @torch.no_grad()
    def _outputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """uint8 outputs for uint8 inputs, in test batches (see _test_time)."""
        with self._test_time():
            return torch.cat([
                to_uint8(self.G(to_float(inputs[i : i + self.test_batch], SYMMETRIC)), SYMMETRIC)
                for i in range(0, len(inputs), self.test_batch)])

    def translate(self, images: torch.Tensor, direction: str) -> torch.Tensor:
        """uint8 (N, input_channels, H, W) inputs -> uint8 outputs; pix2pix learns one
        direction only (dataset.direction chose which side is the input)."""
        if direction != "AtoB":
            raise UserError(f"pix2pix translates one way only (AtoB: input to output), not "
                            f"{direction}; to learn the other way, train with "
                            "dataset.direction=BtoA")
        if images.shape[1] != self.input_channels:
            raise UserError(f"this pix2pix model takes {self.input_channels}-channel inputs, "
                            f"not {images.shape[1]}")
        return self._outputs(images.to(self.device))

    def generator_input(self) -> tuple[tuple[int, ...], torch.dtype, str]:
        """G's input (OneWayTranslator): the task's input image in [-1, 1]."""
        return (self.input_channels, *self.spec.shape[1:]), torch.float32, "in [-1, 1]"

    def generator_output(self) -> str:
        return ("in [-1, 1] (tanh); running batch-norm statistics and no dropout (the "
                "reference's --eval, not model.test_mode=train's test-batch statistics)")

    @staticmethod
    def _rgb(images: torch.Tensor, channels: int) -> torch.Tensor:
        """Gray images repeated to `channels` channels, to sit in one grid with colour ones."""
        return images.expand(-1, channels, -1, -1) if images.shape[1] == 1 else images

    @torch.no_grad()
    def visuals(self) -> dict[str, torch.Tensor]:
        """Per held-out pair a row: input, output, target."""
        if self.test_a is None or self.test_b is None:
            return {}
        n = min(SHOWN, self.cfg.log.n_samples, len(self.test_a))
        a, b = self.test_a[:n], self.test_b[:n]
        channels = b.shape[1]
        rows = torch.stack([self._rgb(a, channels), self._outputs(a), b], dim=1).flatten(0, 1)
        return {"translation": make_grid(rows, nrow=3)}

    # --- metrics -------------------------------------------------------------------------

    # mean per-image L1 (in [-1, 1] units, as the training loss), PSNR and SSIM of uint8
    # outputs against uint8 targets (shared with super-resolution: ganlab.metrics.fidelity)
    quality = staticmethod(fidelity)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """L1, PSNR and SSIM of G's outputs on the held-out pairs (the first eval.n_samples of
        them); for an image task also the same numbers for the input itself as the answer
        (baseline_*: the gray image, the bicubic enlargement, the image with its hole), the
        trivial model to beat."""
        if self.test_a is None or self.test_b is None:
            return {}
        n = min(len(self.test_a), self.cfg.eval.n_samples)
        a, b = self.test_a[:n], self.test_b[:n]
        metrics = self.quality(self._outputs(a), b)
        if self.task in IMAGE_TASKS:
            if self._baseline is None:
                baseline = self.quality(self._rgb(a, b.shape[1]), b)
                self._baseline = {f"baseline_{k}": v for k, v in baseline.items()}
            metrics.update(self._baseline)
        return metrics

    def heldout_pairs(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The held-out inputs and targets: the Inception FID of the outputs is measured
        against the targets (eval.inception)."""
        if self.test_a is None or self.test_b is None:
            return {}
        return {"AtoB": (self.test_a, self.test_b)}

    # --- state ---------------------------------------------------------------------------

    def networks(self) -> dict[str, torch.nn.Module]:
        return {"G": self.G, "D": self.D}

    def extra_state(self) -> dict[str, Any]:
        return {"updates": self.updates}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
