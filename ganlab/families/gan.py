"""The GAN family: a generator and a discriminator trained by any loss variant.

Class-conditional networks (model=cgan) get real labels with real images and random labels
with fakes; with model.mismatch D also sees real images with a wrong label, as fakes. The
mode-collapse tools are options of the family, all off by default: model.d_dropout and
model.minibatch_std (D's layers), model.spectral_norm (D's weights), model.instance_noise
(annealed noise on everything D sees), model.history (a pool of past fakes for D, the one
CycleGAN uses), model.ema (an averaged G for samples and metrics), model.batch_variance (the
lectures' per-pixel batch variance at D's input). The lectures' training details are options
too: model.g_steps, model.g_label_noise, model.latent_dist, model.d_pretrain_steps; D's
decisions on each step's batches are logged as a confusion matrix (D/TP, D/FN, D/TN, D/FP).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

import torch
from torch import nn

from ganlab.config import ranged, schema, sizes
from ganlab.data.base import DataSpec
from ganlab.errors import UserError
from ganlab.families.base import FAMILIES, Family
from ganlab.families.pool import ImagePool
from ganlab.images import make_grid, to_float, to_uint8
from ganlab.losses import LOSSES, Targets, gradient_penalty
from ganlab.models import MODELS
from ganlab.models.conditional import Conditioning
from ganlab.models.dcgan import Norm, Upsample
from ganlab.models.mlp import Output
from ganlab.optim import adam

log = logging.getLogger("ganlab")

# the scatter plot of a 2-D toy shows this many fixed-noise samples
TOY_PLOT_POINTS = 2000


class Optimizer(str, Enum):
    adam = "adam"
    rmsprop = "rmsprop"


class LatentDist(str, Enum):
    normal = "normal"  # z ~ N(0, I)
    uniform = "uniform"  # z ~ U(-1, 1)^d (Radford et al.'s DCGAN)


@dataclass
class GanConfig:
    """What the GAN family reads, whatever its networks: `model.*` of every GAN model. The
    model's YAML file sets its paper's values; conf/experiment/ combines them with a loss."""

    name: str = "dcgan"  # the networks (MODELS)
    family: str = "gan"
    latent_dim: int = ranged(100, "[1, inf)")
    latent_dist: LatentDist = LatentDist.normal  # the prior z is drawn from
    d_steps: int = ranged(1, "[1, inf)")  # discriminator steps per generator step
    g_steps: int = ranged(1, "[1, inf)")  # generator steps per step, after the D steps
    # the first N steps train D alone, on real images against uniform random ones
    d_pretrain_steps: int = ranged(0, "[0, inf)")
    optimizer: Optimizer = Optimizer.adam
    lr_g: float = ranged(2e-4, "(0, inf)")
    lr_d: float = ranged(2e-4, "(0, inf)")
    betas: list[float] = ranged([0.5, 0.999], "[0, 1)")  # Adam only; checked as a pair
    real_label: float = 1.0  # the lecture's flipped setup: real_label=0 fake_label=1
    fake_label: float = 0.0
    label_smoothing: float = ranged(0.0, "[0, 1)")  # one-sided: real targets move towards fake
    label_noise: float = ranged(0.0, "[0, 1)")  # probability of flipping each D target
    g_label_noise: float = ranged(0.0, "[0, 1)")  # probability of flipping each of G's targets
    # mode-collapse tools, all off by default
    d_dropout: float = ranged(0.0, "[0, 1)")  # dropout in the discriminator
    minibatch_std: bool = False  # D sees the batch's feature std (Karras et al.)
    batch_variance: bool = False  # D sees each input pixel's variance over the batch
    instance_noise: float = ranged(0.0, "[0, inf)")  # std of noise on D's inputs, annealed to 0
    history: int = ranged(0, "[0, inf)")  # past fakes kept; half of D's fakes come from them
    ema: float = ranged(0.0, "[0, 1)")  # decay of a moving average of G (0.999); samples use it
    spectral_norm: bool = False  # spectral normalisation of every D layer (Miyato et al.)


@schema("model", "dcgan")
@dataclass
class DcganConfig(GanConfig):
    """Radford et al.'s networks."""

    g_features: int = ranged(64, "[1, inf)")  # G's last layer width; doubles towards the input
    d_features: int = ranged(64, "[1, inf)")  # D's first layer width; doubles towards the output
    upsample: Upsample = Upsample.transposed
    d_norm: Norm = Norm.auto


@schema("model", "cgan")
@dataclass
class CganConfig(DcganConfig):
    """A class-conditional DCGAN: G sees z joined with a learnt label embedding."""

    name: str = "cgan"
    embed_dim: int = ranged(50, "[1, inf)")  # size of G's label embedding, joined to z
    conditioning: Conditioning = Conditioning.concat  # how D sees the label
    # D also scores real images paired with a wrong label, as fakes (Reed et al. 2016's
    # matching-aware discriminator): it must check the label, not only the image
    mismatch: bool = True


@schema("model", "mlp_gan")
@dataclass
class MlpGanConfig(GanConfig):
    """The intro-course MLP GAN."""

    name: str = "mlp_gan"
    g_hidden: list[int] = sizes([300])
    d_hidden: list[int] = sizes([300, 100])
    output: Output = Output.auto


def total_grad_norm(module: nn.Module) -> torch.Tensor:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def make_optimizer(params, cfg_gan, lr: float) -> torch.optim.Optimizer:
    if cfg_gan.optimizer == Optimizer.rmsprop:
        return torch.optim.RMSprop(params, lr=lr)
    if len(cfg_gan.betas) != 2:
        raise UserError(f"model.betas needs two numbers, got {list(cfg_gan.betas)}")
    return adam(params, lr=lr, betas=tuple(cfg_gan.betas))


def add_spectral_norm(module: nn.Module) -> None:
    """Miyato et al.: every conv and linear layer's weight divided by its largest singular
    value (one power iteration per forward). Layers a builder already normalised (biggan's)
    are left as they are."""
    from torch.nn.utils import parametrize
    from torch.nn.utils.parametrizations import spectral_norm

    for name, child in list(module.named_children()):
        if isinstance(child, (nn.Conv2d, nn.Conv3d, nn.Linear, nn.ConvTranspose2d)):
            if not parametrize.is_parametrized(child, "weight"):
                setattr(module, name, spectral_norm(child))
        else:
            add_spectral_norm(child)


@torch.no_grad()
def ema_update(average: nn.Module, current: nn.Module, decay: float) -> None:
    """average <- decay * average + (1 - decay) * current; buffers (BN statistics) copied."""
    torch._foreach_lerp_(list(average.parameters()), list(current.parameters()), 1.0 - decay)
    for mine, theirs in zip(average.buffers(), current.buffers(), strict=True):
        mine.copy_(theirs)


@FAMILIES.register("gan")
class GanFamily(Family):
    chart_layout: ClassVar[dict[str, dict[str, list[str]]]] = {"GAN": {
        "D and G losses": [r"^loss/(D|G)$"],
        "D(x) and D(G(z))": [r"^D/(real|fake|wrong_label)$"],
        "gradient norms": [r"^grad_norm/"],
        "D as a classifier (real is positive)": [r"^D/(accuracy|TP|FN|TN|FP)$"],
        "sample quality (lower is better)": [r"^eval/(fid|classifier_fid|kid)$"],
        "precision and recall": [r"^eval/(precision|recall|density|coverage)$"],
        "modes (toys)": [r"^eval/(modes_covered|high_quality)"],
        "sharpness (real images = 1)": [r"^eval/sharpness$"],
    }}
    visual_notes: ClassVar[dict[str, str]] = {
        "samples": "G(z) for the same fixed z (and labels) at every step, from step 0"}

    def __init__(self, cfg, spec: DataSpec, device: torch.device) -> None:
        self.spec = spec
        self.device = device
        self.loss_name = cfg.loss.name
        self.loss = LOSSES.get(cfg.loss.name)()
        self.gp_weight = float(cfg.loss.gp_weight)
        self.clip_value = float(cfg.loss.clip_value)
        g = cfg.model
        self._check_options(g)
        self.real_label, self.fake_label = float(g.real_label), float(g.fake_label)
        self.label_smoothing, self.label_noise = float(g.label_smoothing), float(g.label_noise)
        self.g_label_noise = float(g.g_label_noise)
        self.batches_per_step = self.d_steps = int(g.d_steps)
        self.g_steps = int(g.g_steps)
        self.latent_dist = LatentDist(g.latent_dist)
        self.d_pretrain_steps = int(g.d_pretrain_steps)
        self.d_pretrained = 0  # steps of D pretraining done

        nets = MODELS.get(cfg.model.name)(self._network_settings(cfg.model), spec)
        if g.spectral_norm:
            add_spectral_norm(nets.D)
        self.G, self.D = nets.G.to(device), nets.D.to(device)
        self.double_backward = frozenset({"D"} if self.gp_weight else ())
        self.latent_dim, self.value_range = nets.latent_dim, nets.value_range
        self.num_classes = nets.num_classes
        self.mismatch = bool(g.get("mismatch", False)) and self.num_classes > 0  # cgan's key
        self.opt_g = make_optimizer(self.G.parameters(), g, g.lr_g)
        self.opt_d = make_optimizer(self.D.parameters(), g, g.lr_d)
        self.ema_decay = float(g.ema)
        self.G_ema = copy.deepcopy(self.G).eval() if self.ema_decay else None
        self.eval_only = frozenset({"G_ema"})
        if self.G_ema is not None:
            self.G_ema.requires_grad_(False)
        if g.history and self.num_classes:
            raise UserError("model.history keeps past fakes without their labels, so it does not "
                            f"combine with the class-conditional model={cfg.model.name}")
        self.history = ImagePool(int(g.history)) if g.history else None
        self.instance_noise = float(g.instance_noise)
        self.updates = 0  # generator updates so far: the position of annealed options

        # fixed noise for comparable sample grids over training; own generator, so drawing it
        # leaves the global RNG (and so the training trajectory) untouched
        n_fixed = TOY_PLOT_POINTS if spec.kind == "points" else cfg.log.n_samples
        fixed = torch.Generator().manual_seed(cfg.trainer.seed + 1)
        if self.num_classes:  # one row per class, the same noise in every row
            columns = max(1, n_fixed // self.num_classes)
            z = self._prior(columns, fixed)
            self.fixed_z = z.repeat(self.num_classes, 1).to(device)
            self.fixed_labels = torch.arange(self.num_classes).repeat_interleave(columns)
            self.fixed_labels = self.fixed_labels.to(device)
        else:
            self.fixed_z = self._prior(n_fixed, fixed).to(device)
            self.fixed_labels = None

    def _network_settings(self, model):
        """model.* for the builder, with d_norm=auto resolved: under a gradient penalty D
        takes layer norm (a per-example penalty is wrong under batch norm)."""
        if model.get("d_norm") != Norm.auto:
            return model
        model = model.copy()
        model.d_norm = Norm.layer if self.gp_weight else Norm.batch
        return model

    def _check_options(self, g) -> None:
        label_options = (g.label_smoothing or g.label_noise or g.g_label_noise
                         or (g.real_label, g.fake_label) != (1, 0))
        if label_options and not self.loss.uses_labels:
            label_based = ", ".join(n for n in LOSSES.names() if LOSSES.get(n).uses_labels)
            raise UserError(
                "model.real_label, fake_label, label_smoothing, label_noise and g_label_noise "
                f"apply to the label-based losses ({label_based}), not to loss={self.loss_name}")

    # --- training ------------------------------------------------------------------------

    def _d_targets(self, n: int, n_fake: int | None = None) -> Targets:
        """D's targets for n real and n_fake (default n) fake scores."""
        real = self.real_label + self.label_smoothing * (self.fake_label - self.real_label)
        if not self.label_noise:
            return Targets(real=real, fake=self.fake_label)
        n_fake = n if n_fake is None else n_fake
        real_t = torch.full((n,), real, device=self.device)
        fake_t = torch.full((n_fake,), self.fake_label, device=self.device)
        flip_real = torch.rand(n, device=self.device) < self.label_noise
        flip_fake = torch.rand(n_fake, device=self.device) < self.label_noise
        return Targets(real=torch.where(flip_real, self.fake_label, real_t),
                       fake=torch.where(flip_fake, self.real_label, fake_t))

    def _g_targets(self, n: int) -> Targets:
        """G's targets: the real label, each flipped to the fake one with probability
        model.g_label_noise."""
        if not self.g_label_noise:
            return Targets(real=self.real_label, fake=self.fake_label)
        flip = torch.rand(n, device=self.device) < self.g_label_noise
        real = torch.where(flip, self.fake_label, torch.full((n,), self.real_label,
                                                             device=self.device))
        return Targets(real=real, fake=self.fake_label)

    def _prior(self, n: int, generator: torch.Generator | None = None,
               device: torch.device | None = None) -> torch.Tensor:
        """n draws of z from model.latent_dist."""
        shape = (n, self.latent_dim)
        if self.latent_dist == LatentDist.uniform:
            return torch.rand(shape, generator=generator, device=device) * 2 - 1
        return torch.randn(shape, generator=generator, device=device)

    def _noise(self, n: int) -> torch.Tensor:
        return self._prior(n, device=self.device)

    def _fake_labels(self, n: int) -> torch.Tensor | None:
        """Uniformly random classes for a batch of fakes (conditional networks only)."""
        if not self.num_classes:
            return None
        return torch.randint(0, self.num_classes, (n,), device=self.device)

    def _wrong_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Each label replaced by one of the other classes, uniformly (model.mismatch)."""
        shift = torch.randint(1, self.num_classes, labels.shape, device=labels.device)
        return (labels + shift) % self.num_classes

    def _real(self, x: torch.Tensor) -> torch.Tensor:
        """A real batch as D sees it (a subclass may resize it to the current resolution)."""
        return to_float(x, self.value_range) if self.value_range else x

    def _g(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.G(z) if labels is None else self.G(z, labels)

    def _d(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """D's scores, on inputs with the annealed instance noise when that is on."""
        if self.instance_noise:
            x = x + self._noise_std() * torch.randn_like(x)
        return self.D(x) if labels is None else self.D(x, labels)

    def _noise_std(self) -> float:
        """model.instance_noise decayed linearly to 0 over the run (Sønderby et al.)."""
        total = self.run_length or 1
        return self.instance_noise * max(0.0, 1.0 - self.updates / total)

    def _d_step(self, x: torch.Tensor, y: torch.Tensor | None, fake: torch.Tensor,
                fake_labels: torch.Tensor | None, pool: bool = True) -> dict[str, torch.Tensor]:
        real = self._real(x)
        n = real.shape[0]
        real_labels = y if self.num_classes else None
        if self.history is not None and pool:
            fake = self.history.query(fake)  # half of them, on average, old fakes
        d_real, d_fake = self._d(real, real_labels), self._d(fake, fake_labels)
        scored_fake = d_fake
        if self.mismatch:
            # real images with a wrong label join the fakes: the fake term of D's loss becomes
            # the mean of both halves (Reed et al.)
            d_wrong = self._d(real, self._wrong_labels(real_labels))
            scored_fake = torch.cat([d_fake, d_wrong])
        loss = self.loss.d_loss(d_real, scored_fake, self._d_targets(n, len(scored_fake)))
        out = {"loss/D": loss}
        extra = self.d_regulariser(d_real)
        if extra is not None:
            loss = loss + extra
        if self.gp_weight:
            critic = self.D if real_labels is None else (lambda v: self.D(v, real_labels))
            gp = gradient_penalty(critic, real, fake)
            loss = loss + self.gp_weight * gp
            out["loss/gp"] = gp
        if self.d_should_step(d_real, d_fake):  # 3D-GAN rests D while it is far ahead
            self.opt_d.zero_grad(set_to_none=True)
            self.amp.backward(loss)
            if self.diagnostics:
                self.amp.unscale(self.opt_d)
                out["grad_norm/D"] = total_grad_norm(self.D)
            self.amp.step(self.opt_d)
        if self.clip_value:
            with torch.no_grad():
                for p in self.D.parameters():
                    p.clamp_(-self.clip_value, self.clip_value)
        if self.diagnostics:
            out.update(self._d_decisions(d_real, d_fake))
            if self.loss.outputs_logits:  # report D's probabilities, as the papers plot them
                d_real, d_fake = torch.sigmoid(d_real), torch.sigmoid(d_fake)
            out["D/real"], out["D/fake"] = d_real.mean(), d_fake.mean()
            if self.mismatch:
                out["D/wrong_label"] = (torch.sigmoid(d_wrong) if self.loss.outputs_logits
                                        else d_wrong).mean()
        return out

    def _d_decisions(self, d_real: torch.Tensor, d_fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """D as a real-vs-fake classifier (the lectures' confusion matrix, real = positive):
        the shares of its decisions on this step's real and fake batches that are true
        positives (reals called real), false negatives, true negatives and false positives,
        and its accuracy. None for a critic without a decision boundary (WGAN)."""
        if not self.loss.classifies:
            return {}
        boundary = self.loss.boundary(self.real_label, self.fake_label)
        flipped = self.real_label < self.fake_label  # the lectures' real_label=0 setup

        def called_real(scores: torch.Tensor) -> torch.Tensor:
            return ((scores < boundary) if flipped else (scores > boundary)).float()

        total = len(d_real) + len(d_fake)
        tp, fp = called_real(d_real).sum() / total, called_real(d_fake).sum() / total
        fn, tn = len(d_real) / total - tp, len(d_fake) / total - fp
        return {"D/accuracy": tp + tn, "D/TP": tp, "D/FN": fn, "D/TN": tn, "D/FP": fp}

    def _g_step(self, fake: torch.Tensor,
                labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        self.D.requires_grad_(False)  # no need for D's parameter gradients here
        loss = self.loss.g_loss(self._d(fake, labels), self._g_targets(len(fake)))
        self.opt_g.zero_grad(set_to_none=True)
        self.amp.backward(loss)
        self.D.requires_grad_(True)
        out = {"loss/G": loss}
        if self.diagnostics:
            self.amp.unscale(self.opt_g)
            out["grad_norm/G"] = total_grad_norm(self.G)
        self.amp.step(self.opt_g)
        if self.G_ema is not None:
            ema_update(self.G_ema, self.G, self.ema_decay)
        return out

    def d_should_step(self, d_real: torch.Tensor, d_fake: torch.Tensor) -> bool:
        """Whether D's optimiser steps on this batch, given its scores (a subclass may rest
        D: 3D-GAN's accuracy threshold); always, here."""
        return True

    def d_regulariser(self, d_real: torch.Tensor) -> torch.Tensor | None:
        """An extra term of D's loss from its scores on real data (a subclass's drift
        penalty); None: nothing."""
        return None

    def prepare_step(self) -> dict[str, torch.Tensor]:
        """Called before each step; a subclass sets its schedule here (progressive growing)
        and returns values to log with the step."""
        return {}

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        logged = self.prepare_step()
        batches = batch if isinstance(batch, list) else [batch]
        if self.d_pretrained < self.d_pretrain_steps:
            return {**self._pretrain_d(batches), **logged}
        for i, (x, y) in enumerate(batches):
            z, labels = self._noise(x.shape[0]), self._fake_labels(x.shape[0])
            if i < len(batches) - 1:
                with torch.no_grad():
                    fake = self._g(z, labels)
            else:
                # the last D step's fakes keep their graph: the G step reuses them, as
                # pytorch/examples' DCGAN does, instead of a second G forward
                fake = self._g(z, labels)
            out = self._d_step(x, y, fake.detach(), labels)
        out.update(self._g_step(fake, labels))
        for _ in range(self.g_steps - 1):  # more G steps, each on new fakes
            z, labels = self._noise(len(fake)), self._fake_labels(len(fake))
            out.update(self._g_step(self._g(z, labels), labels))
        if self.instance_noise:
            out["instance_noise"] = torch.tensor(self._noise_std())
        self.updates += 1
        return {**{k: v.detach() for k, v in out.items()}, **logged}

    @property
    def run_length(self) -> int | None:
        return getattr(self, "_run_length", None)

    @run_length.setter
    def run_length(self, steps: int | None) -> None:
        """Set by the loop before training: a run that D's pretraining would fill is refused."""
        if steps is not None and 0 < steps <= self.d_pretrain_steps:
            raise UserError(f"model.d_pretrain_steps={self.d_pretrain_steps} leaves no step for "
                            f"the GAN in this {steps}-step run; set trainer.max_steps above it "
                            "(pretraining steps count in the run)")
        self._run_length = steps

    def _pretrain_d(self, batches: list) -> dict[str, torch.Tensor]:
        """One step of model.d_pretrain_steps: D alone, on real images against images of
        uniform noise over the real batch's value range (G does not move)."""
        for x, y in batches:
            real = self._real(x)
            low, high = real.min(), real.max()
            noise = torch.rand(real.shape, device=self.device) * (high - low) + low
            out = self._d_step(x, y, noise, self._fake_labels(len(x)), pool=False)
        self.d_pretrained += 1
        return {k: v.detach() for k, v in out.items()}

    # --- sampling ------------------------------------------------------------------------

    @property
    def sampler(self) -> nn.Module:
        """The generator samples and metrics use: the moving average when model.ema is on."""
        return self.G_ema if self.G_ema is not None else self.G

    @torch.no_grad()
    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """G(z) (G(z, labels) when conditional) in evaluation mode: images in G's value
        range, or 2-D points. Conditional without labels: the classes in turn."""
        net = self.sampler
        if self.num_classes and labels is None:  # every class equally often
            labels = torch.arange(len(z)) % self.num_classes
        was_training = net.training
        net.eval()
        z = z.to(self.device)
        out = net(z) if not self.num_classes else net(z, labels.to(self.device))
        net.train(was_training)
        return out

    def sample_noise(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self._prior(n, generator).to(self.device)

    def to_uint8(self, images: torch.Tensor) -> torch.Tensor:
        return to_uint8(images, self.value_range)

    def shown(self, images: torch.Tensor) -> torch.Tensor:
        """Generated images as the grids show them (a subclass may upsample them)."""
        return images

    def visuals(self) -> dict[str, torch.Tensor]:
        fake = self.generate(self.fixed_z, self.fixed_labels)
        if self.spec.kind == "points":
            from ganlab.metrics.toy import density_image, scatter_image

            # known modes draw the data; a plugin's toy without them shows the samples alone
            centres = torch.tensor(self.spec.modes) if self.spec.modes else None
            std = self.spec.mode_std if self.spec.modes else None
            d_of_x, d_label = self._d_picture()
            if fake.shape[1] == 1:  # the lectures' picture: densities and D(x) on a line
                return {"samples": density_image(fake.cpu(), centres, std, d_of_x, d_label)}
            # D's surface only where it is a probability: a rescaled score has no 0.5 contour
            surface = d_of_x if d_label == "D(x)" else None
            return {"samples": scatter_image(fake.cpu(), None, centres, std, surface=surface)}
        # conditional: one row per class
        nrow = (len(fake) // self.num_classes if self.num_classes
                else math.ceil(math.sqrt(fake.shape[0])))
        return {"samples": make_grid(self.to_uint8(self.shown(fake)).cpu(), nrow=nrow)}

    def _d_picture(self) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
        """D as a function of points for the toy pictures, and its legend: the probability of
        "real" for the logit losses, LSGAN's score on the scale from fake_label to
        real_label (clamped to [0, 1]); other critics' scores (hinge, WGAN) rescaled to
        [0, 1] over the points asked, and said so."""

        @torch.no_grad()
        def d_of_x(points: torch.Tensor) -> torch.Tensor:
            was_training = self.D.training
            self.D.eval()
            scores = self.D(points.to(self.device)).float().cpu()
            self.D.train(was_training)
            if self.loss.outputs_logits:
                return torch.sigmoid(scores)
            if self.loss.uses_labels:  # LSGAN
                scale = self.real_label - self.fake_label
                return ((scores - self.fake_label) / scale).clamp(0, 1)
            low, high = scores.min(), scores.max()
            return (scores - low) / (high - low).clamp_min(1e-12)

        plain = self.loss.outputs_logits or self.loss.uses_labels
        return d_of_x, "D(x)" if plain else "D(x), rescaled to [0, 1]"

    # --- state ---------------------------------------------------------------------------

    def extra_state(self) -> dict[str, Any]:
        state = {"fixed_z": self.fixed_z.cpu(), "updates": self.updates}
        if self.d_pretrain_steps:
            state["d_pretrained"] = self.d_pretrained
        if self.history is not None:
            state["history"] = self.history.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.G_ema is not None and "G_ema" not in state:
            raise KeyError("G_ema (the checkpoint was trained without model.ema)")
        super().load_state_dict(state)

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.fixed_z = state["fixed_z"].to(self.device)
        self.updates = int(state.get("updates", 0))  # checkpoints from before the counter
        self.d_pretrained = int(state.get("d_pretrained", 0))
        if self.history is not None:
            self.history.load_state_dict(state.get("history", {"size": self.history.size,
                                                               "images": torch.empty(0)}),
                                         self.device)
