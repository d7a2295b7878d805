"""The GAN family: a generator and a discriminator trained by any loss variant."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ganlab.config import GanConfig, LossConfig, Optimizer
from ganlab.data.base import DataSpec
from ganlab.errors import UserError
from ganlab.families.base import FAMILIES, Family
from ganlab.images import make_grid, to_float, to_uint8
from ganlab.losses import LOSSES, Targets, gradient_penalty
from ganlab.models import MODELS

log = logging.getLogger("ganlab")

# the scatter plot of a 2-D toy shows this many fixed-noise samples
TOY_PLOT_POINTS = 2000


def total_grad_norm(module: nn.Module) -> torch.Tensor:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def make_optimizer(params, cfg_gan, lr: float) -> torch.optim.Optimizer:
    if cfg_gan.optimizer == Optimizer.rmsprop:
        return torch.optim.RMSprop(params, lr=lr)
    if len(cfg_gan.betas) != 2:
        raise UserError(f"gan.betas needs two numbers, got {list(cfg_gan.betas)}")
    return torch.optim.Adam(params, lr=lr, betas=tuple(cfg_gan.betas))


@FAMILIES.register("gan")
class GanFamily(Family):
    sections: ClassVar[dict[str, type]] = {"loss": LossConfig, "gan": GanConfig}

    def __init__(self, cfg, spec: DataSpec, device: torch.device) -> None:
        self.spec = spec
        self.device = device
        self.loss_name = cfg.loss.name
        self.loss = LOSSES.get(cfg.loss.name)()
        self.gp_weight = float(cfg.loss.gp_weight)
        self.clip_value = float(cfg.loss.clip_value)
        g = cfg.gan
        self._check_options(g)
        self.real_label, self.fake_label = float(g.real_label), float(g.fake_label)
        self.label_smoothing, self.label_noise = float(g.label_smoothing), float(g.label_noise)
        self.batches_per_step = self.d_steps = int(g.d_steps)

        nets = MODELS.get(cfg.model.name)(cfg.model, spec, gradient_penalty=self.gp_weight > 0)
        self.G, self.D = nets.G.to(device), nets.D.to(device)
        self.latent_dim, self.value_range = nets.latent_dim, nets.value_range
        self.opt_g = make_optimizer(self.G.parameters(), g, g.lr_g)
        self.opt_d = make_optimizer(self.D.parameters(), g, g.lr_d)

        # fixed noise for comparable sample grids over training; own generator, so drawing it
        # leaves the global RNG (and so the training trajectory) untouched
        n_fixed = TOY_PLOT_POINTS if spec.kind == "points" else cfg.log.n_samples
        fixed = torch.Generator().manual_seed(cfg.trainer.seed + 1)
        self.fixed_z = torch.randn(n_fixed, self.latent_dim, generator=fixed).to(device)
        self.eval_seed = cfg.trainer.seed + 2
        self.eval_samples = int(cfg.eval.n_samples)
        self.mode_min_share = float(cfg.eval.mode_min_share)
        self.cfg_eval, self.cfg_dataset, self.data_dir = cfg.eval, cfg.dataset, cfg.data_dir
        self.heldout = None
        self.progress = iter  # the `eval` command wraps chunked work in a progress bar
        # built on first evaluation: the reference classifier may need training first
        self._classifier_space = self._inception_space = None
        self.inception_weights = self._inception_weights(cfg.eval)

    @staticmethod
    def _inception_weights(cfg_eval):
        """Resolved now, so missing weights with eval.inception=on stop the run before it
        trains; None when Inception metrics are off or (auto) the weights are absent."""
        from ganlab.config import Inception
        from ganlab.metrics.inception import weights_path

        mode = Inception(cfg_eval.inception)
        if mode is Inception.off:
            if cfg_eval.inception_weights:
                raise UserError("eval.inception_weights is set but eval.inception=off; "
                                "set eval.inception=on or auto")
            return None
        path = weights_path(cfg_eval.inception_weights, download=mode is Inception.on)
        if path is None:
            log.info("eval.inception=auto: no Inception weights on disk, so no FID/KID "
                     "(eval.inception=on downloads them)")
        return path

    @classmethod
    def wants_heldout(cls, cfg) -> bool:
        """Real held-out images for the classifier-space and Inception metrics."""
        from ganlab.config import Inception

        return "image_size" in cfg.dataset and (cls._uses_classifier(cfg.eval, cfg.dataset) or
                                                Inception(cfg.eval.inception) is not Inception.off)

    @staticmethod
    def _uses_classifier(cfg_eval, cfg_dataset) -> bool:
        from ganlab.metrics.reference import REFERENCE_DATASETS

        return bool(cfg_eval.classifier_metrics) and (
            cfg_dataset.name in REFERENCE_DATASETS or cfg_eval.classifier is not None)

    def _check_options(self, g) -> None:
        label_options = g.label_smoothing or g.label_noise or (g.real_label, g.fake_label) != (1, 0)
        if label_options and not self.loss.uses_labels:
            raise UserError(
                "gan.real_label, fake_label, label_smoothing and label_noise apply to the "
                f"label-based losses (minimax, nonsaturating, lsgan), not to loss={self.loss_name}"
            )

    # --- training ------------------------------------------------------------------------

    def _d_targets(self, n: int) -> Targets:
        real = self.real_label + self.label_smoothing * (self.fake_label - self.real_label)
        if not self.label_noise:
            return Targets(real=real, fake=self.fake_label)
        real_t = torch.full((n,), real, device=self.device)
        fake_t = torch.full((n,), self.fake_label, device=self.device)
        flip_real = torch.rand(n, device=self.device) < self.label_noise
        flip_fake = torch.rand(n, device=self.device) < self.label_noise
        return Targets(real=torch.where(flip_real, self.fake_label, real_t),
                       fake=torch.where(flip_fake, self.real_label, fake_t))

    def _noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, device=self.device)

    def _d_step(self, x: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        real = to_float(x, self.value_range) if self.value_range else x
        n = real.shape[0]
        d_real, d_fake = self.D(real), self.D(fake)
        loss = self.loss.d_loss(d_real, d_fake, self._d_targets(n))
        out = {"loss/D": loss}
        if self.gp_weight:
            gp = gradient_penalty(self.D, real, fake)
            loss = loss + self.gp_weight * gp
            out["loss/gp"] = gp
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        if self.diagnostics:
            out["grad_norm/D"] = total_grad_norm(self.D)
        self.opt_d.step()
        if self.clip_value:
            with torch.no_grad():
                for p in self.D.parameters():
                    p.clamp_(-self.clip_value, self.clip_value)
        if self.diagnostics:
            if self.loss.outputs_logits:  # report D's probabilities, as the papers plot them
                d_real, d_fake = torch.sigmoid(d_real), torch.sigmoid(d_fake)
            out["D/real"], out["D/fake"] = d_real.mean(), d_fake.mean()
        return out

    def _g_step(self, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        self.D.requires_grad_(False)  # no need for D's parameter gradients here
        loss = self.loss.g_loss(self.D(fake), Targets(real=self.real_label, fake=self.fake_label))
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.D.requires_grad_(True)
        out = {"loss/G": loss}
        if self.diagnostics:
            out["grad_norm/G"] = total_grad_norm(self.G)
        self.opt_g.step()
        return out

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        batches = batch if isinstance(batch, list) else [batch]
        for i, (x, _) in enumerate(batches):
            z = self._noise(x.shape[0])
            if i < len(batches) - 1:
                with torch.no_grad():
                    fake = self.G(z)
            else:
                # the last D step's fakes keep their graph: the G step reuses them, as
                # pytorch/examples' DCGAN does, instead of a second G forward
                fake = self.G(z)
            out = self._d_step(x, fake.detach())
        out.update(self._g_step(fake))
        return {k: v.detach() for k, v in out.items()}

    # --- sampling ------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """G(z) in evaluation mode: images in G's value range, or 2-D points."""
        was_training = self.G.training
        self.G.eval()
        out = self.G(z.to(self.device))
        self.G.train(was_training)
        return out

    def sample_noise(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=generator).to(self.device)

    def to_uint8(self, images: torch.Tensor) -> torch.Tensor:
        return to_uint8(images, self.value_range)

    def visuals(self) -> dict[str, torch.Tensor]:
        fake = self.generate(self.fixed_z)
        if self.spec.kind == "points":
            from ganlab.metrics.toy import scatter_image

            centres = torch.tensor(self.spec.modes) if self.spec.modes else None
            return {"samples": scatter_image(fake.cpu(), None, centres, self.spec.mode_std)}
        nrow = math.ceil(math.sqrt(fake.shape[0]))
        return {"samples": make_grid(self.to_uint8(fake).cpu(), nrow=nrow)}

    def evaluate(self) -> dict[str, float]:
        if self.spec.kind == "points":
            return self._toy_metrics() if self.spec.modes else {}
        use_classifier = self._uses_classifier(self.cfg_eval, self.cfg_dataset)
        if self.heldout is None or not (use_classifier or self.inception_weights):
            return {}
        generator = torch.Generator().manual_seed(self.eval_seed)
        z = self.sample_noise(self.eval_samples, generator)
        # as uint8, like the real images and the saved samples
        fakes = torch.cat([self.to_uint8(self.generate(z[i : i + 1000]))
                           for i in range(0, len(z), 1000)])
        metrics: dict = {}
        if use_classifier:
            metrics.update(self._classifier(self.heldout).measure(fakes, self.progress))
        if self.inception_weights:
            metrics.update(self._inception(self.heldout).measure(fakes, self.progress))
        return metrics

    def _toy_metrics(self) -> dict[str, float]:
        from ganlab.metrics.toy import mode_metrics

        z = self.sample_noise(self.eval_samples, torch.Generator().manual_seed(self.eval_seed))
        fake = self.generate(z).float().cpu()
        return mode_metrics(fake, torch.tensor(self.spec.modes), self.spec.mode_std,
                            self.mode_min_share)

    def _classifier(self, real):
        if self._classifier_space is None:
            from ganlab.metrics.reference import ClassifierSpace, load_reference

            data_dir = Path(self.data_dir)
            reference = load_reference(self.cfg_eval, self.cfg_dataset, data_dir, self.device)
            self._classifier_space = ClassifierSpace(reference, real, self.mode_min_share,
                                                     data_dir / "ganlab_reference")
        return self._classifier_space

    def _inception(self, real):
        if self._inception_space is None:
            from ganlab.metrics.inception import InceptionSpace

            self._inception_space = InceptionSpace(self.inception_weights, real, self.device,
                                                   Path(self.data_dir) / "ganlab_reference")
        return self._inception_space

    # --- state ---------------------------------------------------------------------------

    def train(self) -> None:
        self.G.train()
        self.D.train()

    def eval(self) -> None:
        self.G.eval()
        self.D.eval()

    def state_dict(self) -> dict[str, Any]:
        return {"G": self.G.state_dict(), "D": self.D.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "fixed_z": self.fixed_z.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.fixed_z = state["fixed_z"].to(self.device)
