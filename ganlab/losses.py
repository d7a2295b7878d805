"""GAN loss variants, each computed from the discriminator's raw outputs (logits).

A loss gives the discriminator's loss from its outputs on real and fake batches, and the
generator's loss from its outputs on a fake batch. Label-based losses (minimax, nonsaturating,
lsgan) take the real/fake targets from the config, so the lecture's flipped labels
(real=0, fake=1), one-sided smoothing and label noise apply to them; the others ignore labels.
Gradient penalty and weight clipping are separate options (loss.gp_weight, loss.clip_value)
applied by the GAN family, so the same function serves wgan and wgan_gp.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ganlab.config import ranged, register_schema
from ganlab.registry import Registry


@dataclass(frozen=True)
class Targets:
    """Per-example discriminator targets; for the generator, `real` is what it aims for."""

    real: torch.Tensor | float
    fake: torch.Tensor | float


class GanLoss:
    uses_labels = False
    # whether D's output is a probability logit (D(x) = sigmoid(output)) for logging
    outputs_logits = False
    # whether D's score has a decision boundary (D's accuracy is logged): a Wasserstein critic's
    # scores are only compared with each other, any constant shift giving the same loss
    classifies = True

    def boundary(self, real_label: float, fake_label: float) -> float:
        """The score between "real" and "fake": 0 for logits and hinge scores."""
        return 0.0

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor, t: Targets) -> torch.Tensor:
        raise NotImplementedError

    def g_loss(self, fake: torch.Tensor, t: Targets) -> torch.Tensor:
        raise NotImplementedError


LOSSES: Registry[type[GanLoss]] = Registry("loss", group="loss")


@dataclass
class LossConfig:
    """The `loss:` section of GAN models, one schema for every loss file in conf/loss/."""

    name: str = "nonsaturating"
    gp_weight: float = ranged(0.0, "[0, inf)")  # gradient penalty weight (wgan_gp: 10)
    clip_value: float = ranged(0.0, "[0, inf)")  # critic weight clipping to [-c, c] (wgan: 0.01)


register_schema("loss", "loss", LossConfig)


def _bce(logits: torch.Tensor, target: torch.Tensor | float) -> torch.Tensor:
    """Binary cross-entropy on logits (stable: log-sum-exp form inside torch)."""
    if not torch.is_tensor(target):
        target = torch.full_like(logits, float(target))
    return F.binary_cross_entropy_with_logits(logits, target)


@LOSSES.register("nonsaturating")
class NonSaturating(GanLoss):
    """D: BCE on real and fake. G: -log D(G(z)), i.e. BCE of fakes against the real target."""

    uses_labels = True
    outputs_logits = True

    def d_loss(self, real, fake, t):
        return _bce(real, t.real) + _bce(fake, t.fake)

    def g_loss(self, fake, t):
        return _bce(fake, t.real)


@LOSSES.register("minimax")
class Minimax(NonSaturating):
    """G minimises log(1 - D(G(z))) = -BCE(fakes, fake target): saturates when D wins."""

    def g_loss(self, fake, t):
        return -_bce(fake, t.fake)


@LOSSES.register("lsgan")
class LeastSquares(GanLoss):
    """Mao et al.: D: 1/2 (D(x) - b)^2 + 1/2 (D(G(z)) - a)^2; G: 1/2 (D(G(z)) - b)^2."""

    uses_labels = True

    def boundary(self, real_label: float, fake_label: float) -> float:
        return (real_label + fake_label) / 2  # the score regresses onto the two labels

    def d_loss(self, real, fake, t):
        return 0.5 * ((real - t.real) ** 2).mean() + 0.5 * ((fake - t.fake) ** 2).mean()

    def g_loss(self, fake, t):
        return 0.5 * ((fake - t.real) ** 2).mean()


@LOSSES.register("hinge")
class Hinge(GanLoss):
    """D: E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]; G: -E[D(G(z))]."""

    def d_loss(self, real, fake, t):
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()

    def g_loss(self, fake, t):
        return -fake.mean()


@LOSSES.register("wgan")
class Wasserstein(GanLoss):
    """Critic: E[D(G(z))] - E[D(x)]; G: -E[D(G(z))] (clipping or a penalty keeps D Lipschitz)."""

    classifies = False

    def d_loss(self, real, fake, t):
        return fake.mean() - real.mean()

    def g_loss(self, fake, t):
        return -fake.mean()


@LOSSES.register("wgan_gp")
class WassersteinGP(Wasserstein):
    """The same objective; the penalty weight comes from loss.gp_weight (10 by default)."""


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Gulrajani et al.: E[(||grad D(x_hat)||_2 - 1)^2] on random interpolates x_hat.

    Always in fp32, also under mixed precision: the double backward of a half-precision
    critic loses the small gradient differences the penalty is made of."""
    dtype = torch.promote_types(real.dtype, torch.float32)  # bf16/fp16 -> fp32; fp64 stays
    real, fake = real.to(dtype), fake.to(dtype)
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    eps = torch.rand(shape, device=real.device, dtype=real.dtype)
    with torch.autocast(real.device.type, enabled=False):
        x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
        out = critic(x_hat).to(dtype)
        (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
        norms = grad.flatten(1).norm(2, dim=1)
        return ((norms - 1.0) ** 2).mean()
