"""Progressive growing (Karras et al. 2018): the GAN family with a resolution schedule.

Training starts at 4 px and doubles the resolution in stages up to the dataset's size (the
next power of two: 28 px digits are padded to 32 with the background value). In every stage
after the first, the new layers fade in (alpha from 0 to 1 over the first `fade_fraction` of
the stage), then the stage stabilises at alpha 1. The stage and alpha are a pure function of
the generator updates so far (`schedule`), so a resumed run, also one stopped in the middle
of a fade-in, continues exactly where it stopped.

D sees real images average-pooled to the current resolution (during a fade-in blended with
their upsampled half-resolution version, as G's output is); samples, metrics and grids get
G's images upsampled (nearest) to the dataset's size, so they compare over the whole run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ganlab.config import ranged, schema
from ganlab.data.base import DataSpec
from ganlab.errors import UserError
from ganlab.families.base import FAMILIES
from ganlab.families.gan import GanConfig, GanFamily
from ganlab.images import to_float
from ganlab.models.progan import (
    check_size,
    n_stages_for,
    padded_size,
    resolution,
)

log = logging.getLogger("ganlab")


@schema("model", "progan")
@dataclass
class ProganConfig(GanConfig):
    """Karras et al.'s progressive growing at small scale (4 px doubling to the data size).
    Their optimiser settings (Adam 1e-3, betas (0, 0.99)) and loss (WGAN-GP) are in
    conf/model/progan.yaml."""

    name: str = "progan"
    family: str = "progan"
    latent_dim: int = ranged(128, "[1, inf)")
    max_features: int = ranged(128, "[1, inf)")  # channels at 4-16 px; halved per doubling above
    min_features: int = ranged(32, "[1, inf)")
    # every stage (4 px, 8 px, ..., the data size) gets an equal share of the run, or this many
    # steps each (the last stage takes whatever is left)
    stage_steps: int | None = ranged(None, "[1, inf)")
    fade_fraction: float = ranged(0.5, "[0, 1]")  # of each stage after the first: fading in
    drift: float = ranged(0.001, "[0, inf)")  # Karras' epsilon_drift: D(x)^2 keeps scores near 0


def stage_starts(total: int | None, n_stages: int, stage_steps: int | None) -> list[int]:
    """The step at which each stage begins: equal shares of `total` steps, or `stage_steps`
    each (then the last stage runs to the end, however long that is)."""
    if stage_steps is not None:
        return [s * stage_steps for s in range(n_stages)]
    if total is None:
        raise ValueError("equal stage shares need the run's total number of steps")
    return [s * total // n_stages for s in range(n_stages)]


def schedule(step: int, total: int | None, n_stages: int, stage_steps: int | None,
             fade_fraction: float) -> tuple[int, float]:
    """(stage, alpha) of the generator update `step` (0-based) of a `total`-step run.

    Stage s starts at stage_starts(...)[s]; in every stage after the first, alpha rises
    linearly from 0 (at the stage's first step) to 1 over `fade_fraction` of the stage's
    length (of `stage_steps` when given, else of its equal share), then stays 1. The first
    stage has nothing to fade in: alpha 1.
    """
    starts = stage_starts(total, n_stages, stage_steps)
    stage = max(s for s in range(n_stages) if starts[s] <= step)
    if stage == 0:
        return 0, 1.0
    if stage_steps is not None:
        length = stage_steps
    else:
        end = total if stage == n_stages - 1 else starts[stage + 1]
        length = end - starts[stage]
    fade = fade_fraction * length
    if fade <= 0:
        return stage, 1.0
    return stage, min(1.0, (step - starts[stage]) / fade)


@FAMILIES.register("progan")
class ProganFamily(GanFamily):
    """GanFamily with Karras' growing schedule; every model.* and loss option works as for
    model=dcgan except model.history (its pool would mix resolutions) and model.d_dropout."""
    chart_layout: ClassVar[dict[str, dict[str, list[str]]]] = {
        "GAN": GanFamily.chart_layout["GAN"],
        "progressive growing": {"resolution": [r"^progan/resolution$"],
                                "fade-in of the new layer (alpha)": [r"^progan/alpha$"]},
    }

    @classmethod
    def check_config(cls, cfg) -> None:
        super().check_config(cfg)
        model = cfg.model.name
        if "image_size" not in cfg.dataset:
            raise UserError(f"model={model} needs an image dataset; dataset={cfg.dataset.name} "
                            "holds 2-D points")
        check_size(int(cfg.dataset.image_size), model=f"model={model}")
        if cfg.model.min_features > cfg.model.max_features:
            raise UserError(f"model.min_features={cfg.model.min_features} is larger than "
                            f"model.max_features={cfg.model.max_features}")
        if cfg.model.history:
            raise UserError(f"model.history does not apply to model={model}: its pool of past "
                            "fakes would mix resolutions across stages")
        if cfg.model.d_dropout:
            raise UserError(f"model.d_dropout does not apply to model={model} (Karras' "
                            "discriminator has no dropout)")

    def __init__(self, cfg, spec: DataSpec, device: torch.device) -> None:
        self.check_config(cfg)
        super().__init__(cfg, spec, device)
        self.size = spec.shape[-1]
        self.padded = padded_size(self.size)
        self.n_stages = n_stages_for(self.size)
        self.stage_steps = cfg.model.stage_steps
        self.fade_fraction = float(cfg.model.fade_fraction)
        self.drift = float(cfg.model.drift)
        # the run length the checkpoint was trained with, for families loaded without a loop
        self.saved_run_length: int | None = None
        self.stage, self.alpha = self.n_stages - 1, 1.0
        self._checked_length = False

    # --- the schedule --------------------------------------------------------------------

    def scheduled(self) -> tuple[int, float]:
        """(stage, alpha) at the current generator update. Without a run length (a family
        loaded from an old checkpoint to sample, equal shares): the final stage, alpha 1."""
        total = self.run_length if self.run_length is not None else self.saved_run_length
        if self.stage_steps is None and total is None:
            return self.n_stages - 1, 1.0
        return schedule(self.updates, total, self.n_stages, self.stage_steps,
                        self.fade_fraction)

    def _apply_progress(self) -> None:
        self.stage, self.alpha = self.scheduled()
        for net in (self.G, self.D, self.G_ema):
            if net is not None:
                net.set_progress(self.stage, self.alpha)

    def _warn_if_short(self) -> None:
        if self.stage_steps is None or self.run_length is None:
            return
        final_start = (self.n_stages - 1) * self.stage_steps
        if final_start >= self.run_length:
            log.warning("model.stage_steps=%d: the final %d px stage would start at step %d, "
                        "after this %d-step run ends", self.stage_steps, self.padded,
                        final_start, self.run_length)

    @property
    def resolution(self) -> int:
        return resolution(self.stage)

    def prepare_step(self) -> dict[str, torch.Tensor]:
        if not self._checked_length:
            self._checked_length = True
            self._warn_if_short()
        self._apply_progress()
        return {"progan/stage": torch.tensor(float(self.stage)),
                "progan/alpha": torch.tensor(self.alpha),
                "progan/resolution": torch.tensor(float(self.resolution))}

    # --- what D sees ---------------------------------------------------------------------

    def _pad(self) -> tuple[int, int]:
        extra = self.padded - self.size
        return extra // 2, extra - extra // 2

    def _real(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 reals -> [-1, 1], padded to the power-of-two size with the background (-1),
        average-pooled to the current resolution; in a fade-in, blended (by alpha) with their
        half-resolution version upsampled, as G's output is."""
        x = to_float(x, self.value_range)
        if self.padded != self.size:
            before, after = self._pad()
            x = F.pad(x, (before, after, before, after), value=self.value_range[0])
        factor = self.padded // self.resolution
        if factor > 1:
            x = F.avg_pool2d(x, factor)
        if self.stage > 0 and self.alpha < 1.0:
            low = F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="nearest")
            x = torch.lerp(low, x, self.alpha)
        return x

    def d_regulariser(self, d_real: torch.Tensor) -> torch.Tensor | None:
        """Karras' drift penalty: model.drift * mean(D(x)^2) keeps the critic's scores near 0."""
        if not self.drift:
            return None
        return self.drift * d_real.pow(2).mean()

    # --- what samples, metrics and grids see ---------------------------------------------

    def _to_data_size(self, images: torch.Tensor) -> torch.Tensor:
        """Images at any stage's resolution -> the dataset's size: nearest upsampling to the
        power-of-two size, then the centre crop that undoes the padding."""
        if images.dim() != 4 or images.shape[-1] == self.size:
            return images
        if images.shape[-1] != self.padded:
            images = F.interpolate(images, size=(self.padded, self.padded), mode="nearest")
        if self.padded != self.size:
            before, _ = self._pad()
            images = images[..., before:before + self.size, before:before + self.size]
        return images

    @torch.no_grad()
    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """G(z) at the current stage, as images of the dataset's size."""
        self._apply_progress()
        return self._to_data_size(super().generate(z, labels))

    def shown(self, images: torch.Tensor) -> torch.Tensor:
        return self._to_data_size(images)

    # --- state ---------------------------------------------------------------------------

    def extra_state(self) -> dict[str, Any]:
        total = self.run_length if self.run_length is not None else self.saved_run_length
        return {**super().extra_state(), "run_length": total}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.saved_run_length = state.get("run_length")
        self._apply_progress()
