"""The CycleGAN family: unpaired image-to-image translation (Zhu et al. 2017).

Two generators, G_AB: A -> B and G_BA: B -> A, and two PatchGAN discriminators, D_A judging
domain A images (real A against G_BA's fakes) and D_B judging domain B. The losses, named by
the domain they start from:

- G_A, G_B: the adversarial loss of translating A (G_AB(a) judged by D_B) and B (G_BA(b) by D_A);
- cycle_A = lambda_a |G_BA(G_AB(a)) - a|_1, cycle_B likewise with lambda_b;
- idt_A = lambda_a lambda_identity |G_BA(a) - a|_1 (a generator into A leaves A unchanged),
  idt_B likewise;
- D_A, D_B: each discriminator's loss, halved, on real images and fakes drawn through a pool
  of 50 past fakes.

The GAN criterion is the reference's: lsgan = mean squared error to targets 1/0, vanilla = BCE
on logits; the generators' adversarial terms are unhalved (the shared `losses` module scales
LSGAN's generator term by 1/2, which would shift the balance against the cycle weights).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ganlab.config import ranged, schema
from ganlab.data.base import DataSpec
from ganlab.errors import UserError
from ganlab.families.base import FAMILIES, Family
from ganlab.families.pool import ImagePool
from ganlab.images import SYMMETRIC, make_grid, to_float, to_uint8
from ganlab.models import MODELS
from ganlab.models.cyclegan import check_cyclegan_config, size_multiple
from ganlab.optim import adam
from ganlab.schedules import decay_lr

SHOWN = 8  # test images per direction in the logged grids
EVAL_BATCH = 16


class CycleganGenerator(str, Enum):
    auto = "auto"  # resnet_9 from 256 px up, resnet_6 below (the reference's choice for 128)
    resnet_9 = "resnet_9"
    resnet_6 = "resnet_6"
    unet = "unet"


class CycleganNorm(str, Enum):
    instance = "instance"
    batch = "batch"
    none = "none"


class CycleganLoss(str, Enum):
    lsgan = "lsgan"  # least squares (the reference's default)
    vanilla = "vanilla"  # binary cross-entropy on logits

    def to_target(self, scores: torch.Tensor, real: bool) -> torch.Tensor:
        """The reference's GANLoss: D's scores against the constant target 1 (real) or 0."""
        target = torch.full_like(scores, 1.0 if real else 0.0)
        if self is CycleganLoss.lsgan:
            return F.mse_loss(scores, target)
        return F.binary_cross_entropy_with_logits(scores, target)


@schema("model", "cyclegan")
@dataclass
class CycleganConfig:
    """`model.*` of CycleGAN: Zhu et al. and their reference implementation's defaults."""

    name: str = "cyclegan"
    family: str = "cyclegan"
    generator: CycleganGenerator = CycleganGenerator.auto
    g_features: int = ranged(64, "[1, inf)")  # width of the generators' first layer
    d_features: int = ranged(64, "[1, inf)")  # width of the PatchGAN's first layer
    d_layers: int = ranged(3, "[1, inf)")  # stride-2 PatchGAN layers: 3 gives 70x70 patches
    norm: CycleganNorm = CycleganNorm.instance
    dropout: bool = False  # dropout 0.5 in the generators' residual / middle blocks
    init_gain: float = ranged(0.02, "(0, inf)")  # weights drawn from N(0, init_gain)
    gan_loss: CycleganLoss = CycleganLoss.lsgan
    lambda_a: float = ranged(10.0, "[0, inf)")  # weight of the A -> B -> A cycle loss
    lambda_b: float = ranged(10.0, "[0, inf)")  # weight of the B -> A -> B cycle loss
    # identity loss weight, relative to lambda_a / lambda_b
    lambda_identity: float = ranged(0.5, "[0, inf)")
    pool_size: int = ranged(50, "[0, inf)")  # past fakes per discriminator; 0: none
    lr: float = ranged(2e-4, "(0, inf)")  # Adam, generators and discriminators
    betas: list[float] = ranged([0.5, 0.999], "[0, 1)")
    decay_start: float = ranged(0.5, "[0, 1]")  # share of the run after which the lr decays


@FAMILIES.register("cyclegan")
class CycleGan(Family):
    chart_layout: ClassVar[dict[str, dict[str, list[str]]]] = {"CycleGAN": {
        "adversarial losses": [r"^loss/(G|D)_(A|B)$"],
        "cycle and identity losses": [r"^loss/(cycle|idt)_(A|B)$"],
        "translation quality (lower is better)": [r"^eval/fid"],
        "learning rate": [r"^lr$"],
    }}
    visual_notes: ClassVar[dict[str, str]] = {
        "translation_A": "the same test images of A: real, translated, reconstructed, identity",
        "translation_B": "the same test images of B: real, translated, reconstructed, identity"}

    needs_heldout = True  # the test split: the logged translations and the cycle metrics
    unpaired = True

    def __init__(self, cfg, spec: DataSpec, device: torch.device) -> None:
        if spec.kind != "unpaired":
            raise UserError(f"model=cyclegan translates between two unpaired image domains; "
                            f"dataset {spec.name!r} holds {spec.kind}")
        self.cfg, self.spec, self.device = cfg, spec, device
        c = cfg.model
        nets = MODELS.get(cfg.model.name)(cfg.model, spec)
        self.G_AB, self.G_BA = nets.G_AB.to(device), nets.G_BA.to(device)
        self.D_A, self.D_B = nets.D_A.to(device), nets.D_B.to(device)
        self.generator_name = nets.generator_name
        betas = tuple(c.betas)
        self.opt_G = adam(itertools.chain(self.G_AB.parameters(), self.G_BA.parameters()),
                          lr=c.lr, betas=betas)
        self.opt_D = adam(itertools.chain(self.D_A.parameters(), self.D_B.parameters()),
                          lr=c.lr, betas=betas)
        self.pool_A, self.pool_B = ImagePool(c.pool_size), ImagePool(c.pool_size)
        self.lr, self.decay_start = float(c.lr), float(c.decay_start)
        self.lambda_a, self.lambda_b = float(c.lambda_a), float(c.lambda_b)
        self.lambda_identity = float(c.lambda_identity)
        self.gan_loss = CycleganLoss(c.gan_loss)
        self.updates = 0  # optimisation steps taken: the lr schedule's position
        self.heldout = None

    @classmethod
    def check_config(cls, cfg) -> None:
        check_cyclegan_config(cfg)

    def check_size(self, size: int, key: str) -> None:
        """Whether the generators can translate `size`-px images (they are convolutional)."""
        multiple = size_multiple(self.generator_name, self.spec.shape[-1])
        if size % multiple or size < max(multiple, 8):
            raise UserError(f"{key}={size} does not suit this model's {self.generator_name} "
                            f"generator: it takes sizes that are multiples of {multiple} (the "
                            f"training size was {self.spec.shape[-1]})")

    # --- training ------------------------------------------------------------------------

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        a, b = (to_float(x, SYMMETRIC) for x in batch)
        lr = decay_lr((self.opt_G, self.opt_D), self.lr, self.updates,
                      self.run_length or self.cfg.trainer.max_steps, self.decay_start)
        fake_b, fake_a = self.G_AB(a), self.G_BA(b)
        rec_a, rec_b = self.G_BA(fake_b), self.G_AB(fake_a)

        # generators, with the discriminators frozen (no parameter gradients wasted on them)
        self.D_A.requires_grad_(False)
        self.D_B.requires_grad_(False)
        self.opt_G.zero_grad(set_to_none=True)
        g_a = self.gan_loss.to_target(self.D_B(fake_b), real=True)
        g_b = self.gan_loss.to_target(self.D_A(fake_a), real=True)
        cycle_a = self.lambda_a * F.l1_loss(rec_a, a)
        cycle_b = self.lambda_b * F.l1_loss(rec_b, b)
        if self.lambda_identity > 0:
            idt_a = self.lambda_a * self.lambda_identity * F.l1_loss(self.G_BA(a), a)
            idt_b = self.lambda_b * self.lambda_identity * F.l1_loss(self.G_AB(b), b)
        else:
            idt_a = idt_b = torch.zeros((), device=a.device)
        self.amp.backward(g_a + g_b + cycle_a + cycle_b + idt_a + idt_b)
        self.amp.step(self.opt_G)

        # discriminators, on real images and on (pooled) fakes
        self.D_A.requires_grad_(True)
        self.D_B.requires_grad_(True)
        self.opt_D.zero_grad(set_to_none=True)
        old_a, old_b = self.pool_A.query(fake_a.detach()), self.pool_B.query(fake_b.detach())
        d_a = 0.5 * (self.gan_loss.to_target(self.D_A(a), real=True) +
                     self.gan_loss.to_target(self.D_A(old_a), real=False))
        d_b = 0.5 * (self.gan_loss.to_target(self.D_B(b), real=True) +
                     self.gan_loss.to_target(self.D_B(old_b), real=False))
        self.amp.backward(d_a + d_b)
        self.amp.step(self.opt_D)
        self.updates += 1
        losses = {"G_A": g_a, "G_B": g_b, "D_A": d_a, "D_B": d_b, "cycle_A": cycle_a,
                  "cycle_B": cycle_b, "idt_A": idt_a, "idt_B": idt_b}
        out = {f"loss/{k}": v.detach() for k, v in losses.items()}
        out["lr"] = torch.tensor(lr)
        return out

    # --- using the generators ------------------------------------------------------------

    @torch.no_grad()
    def heldout_pairs(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Each domain's test images and the other domain's, for the FID of translations."""
        if self.heldout is None:
            return {}
        return {"AtoB": (self.heldout.a, self.heldout.b), "BtoA": (self.heldout.b, self.heldout.a)}

    def translate(self, images: torch.Tensor, direction: str) -> torch.Tensor:
        """uint8 (N, C, H, W) images of one domain -> uint8 translations ("AtoB" | "BtoA")."""
        net = {"AtoB": self.G_AB, "BtoA": self.G_BA}[direction]
        return to_uint8(net(to_float(images.to(self.device), SYMMETRIC)), SYMMETRIC)

    @torch.no_grad()
    def visuals(self) -> dict[str, torch.Tensor]:
        """Per test image a row: real, translated, reconstructed, identity (for A: a, G_AB(a),
        G_BA(G_AB(a)), G_BA(a)); one grid per starting domain."""
        if self.heldout is None:
            return {}
        grids = {}
        n = min(SHOWN, self.cfg.log.n_samples)
        for name, images, forward, back in (("A", self.heldout.a, self.G_AB, self.G_BA),
                                            ("B", self.heldout.b, self.G_BA, self.G_AB)):
            real = to_float(images[:n], SYMMETRIC)
            fake = forward(real)
            columns = (real, fake, back(fake), back(real))
            rows = torch.stack(columns, dim=1).flatten(0, 1)  # real_0, fake_0, rec_0, idt_0, ...
            grids[f"translation_{name}"] = make_grid(to_uint8(rows, SYMMETRIC), nrow=4)
        return grids

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean cycle-reconstruction L1 per direction on the test split, in [-1, 1] pixel
        units (the training loss's, without its lambda)."""
        if self.heldout is None:
            return {}
        metrics = {}
        for name, images, forward, back in (("A", self.heldout.a, self.G_AB, self.G_BA),
                                            ("B", self.heldout.b, self.G_BA, self.G_AB)):
            n = min(len(images), self.cfg.eval.n_samples)
            total = torch.zeros((), device=self.device)
            for start in range(0, n, EVAL_BATCH):
                real = to_float(images[start : min(start + EVAL_BATCH, n)], SYMMETRIC)
                total += (back(forward(real)) - real).abs().mean(dim=(1, 2, 3)).sum()
            metrics[f"cycle_l1_{name}"] = float(total) / n
        return metrics

    # --- state ---------------------------------------------------------------------------

    def networks(self) -> dict[str, torch.nn.Module]:
        return {"G_AB": self.G_AB, "G_BA": self.G_BA, "D_A": self.D_A, "D_B": self.D_B}

    def extra_state(self) -> dict[str, Any]:
        return {"pool_A": self.pool_A.state_dict(), "pool_B": self.pool_B.state_dict(),
                "updates": self.updates}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.pool_A.load_state_dict(state["pool_A"], self.device)
        self.pool_B.load_state_dict(state["pool_B"], self.device)
        self.updates = int(state["updates"])
