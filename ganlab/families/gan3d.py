"""3D-GAN (Wu et al. 2016): the GAN family on voxel grids (dataset=voxels).

Everything of model=dcgan's GAN applies (losses, label smoothing, EMA, history, ...); what
is 3D-GAN's own: volumetric networks (ganlab/models/gan3d.py), the paper's optimiser (Adam,
G 0.0025, D 1e-5, beta1 0.5: a slow D, as a 3-D D learns much faster than G) and its trick of
updating D only when its accuracy on the batch is at most 80% (model.d_threshold; 1: always).
D's accuracy is read on the host once per step for that decision.

Latent codes: the released models sample z ~ U(0, 1)^200; here z ~ U(-1, 1)^200
(model.latent_dist=uniform). G's first layer has no bias and is followed by batch norm,
which removes the mean and scale of its input, so the two priors train the same model.

Reals are 0/1 grids; G's outputs are occupancy probabilities (sigmoid). Samples are 0/1 grids
(a voxel is filled when its probability is above 0.5), shown as shaded pictures
(ganlab/voxel_render.py) in TensorBoard, the run's sample PNGs and `sample out=FILE.png`, and
written as `voxels` by `sample out=FILE.npz`. The image metrics (Inception, the digit
classifier) do not apply; the sample metrics of voxel data are shape metrics
(metrics/voxels.py: occupancy, nearest-neighbour IoU fidelity and coverage, connectedness).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ganlab.config import Inception, ranged, schema
from ganlab.data.base import DataSpec
from ganlab.errors import UserError
from ganlab.families.base import FAMILIES
from ganlab.families.gan import GanConfig, GanFamily, LatentDist
from ganlab.models.dcgan import Norm
from ganlab.models.gan3d import check_grid_size

log = logging.getLogger("ganlab")

MESH_SHAPES = 8  # the TensorBoard mesh picture shows the first few fixed samples


@schema("model", "gan3d")
@dataclass
class Gan3dConfig(GanConfig):
    """Wu et al.'s 3D-GAN. The paper's values are in conf/model/gan3d.yaml."""

    name: str = "gan3d"
    family: str = "gan3d"
    latent_dim: int = ranged(200, "[1, inf)")
    latent_dist: LatentDist = LatentDist.uniform
    lr_g: float = ranged(0.0025, "(0, inf)")
    lr_d: float = ranged(1e-5, "(0, inf)")
    g_features: int = ranged(64, "[1, inf)")  # G's last hidden width; doubles towards z
    d_features: int = ranged(64, "[1, inf)")  # D's first width; doubles towards the score
    d_norm: Norm = Norm.auto  # batch norm, or layer norm under a gradient penalty
    # D steps only on batches where its accuracy (reals and fakes) is at most this; 1: always
    d_threshold: float = ranged(0.8, "(0, 1]")


def check_eval(cfg) -> None:
    """The eval.* settings that measure images cannot apply to shapes: refused in one line
    (eval.inception=on, eval.classifier) or skipped with a log line (eval.inception=auto)."""
    if cfg.eval.inception == Inception.on:
        raise UserError("eval.inception=on: Inception FID/KID compare 2-D images; model=gan3d "
                        "reports shape metrics (iou_fidelity, iou_coverage, occupancy): set "
                        "eval.inception=off")
    if cfg.eval.get("classifier"):
        raise UserError(f"eval.classifier={cfg.eval.classifier} measures images; model=gan3d "
                        "reports shape metrics instead: leave eval.classifier unset")
    if cfg.eval.inception == Inception.auto:
        log.info("eval.inception=auto: Inception FID/KID do not apply to voxel grids; "
                 "model=gan3d reports shape metrics instead")


@FAMILIES.register("gan3d")
class Gan3dFamily(GanFamily):
    # held-out shapes: the shape metrics compare samples with them
    needs_heldout: ClassVar[bool] = True
    voxels: ClassVar[bool] = True
    chart_layout: ClassVar[dict[str, dict[str, list[str]]]] = {
        "GAN": {**{k: v for k, v in GanFamily.chart_layout["GAN"].items()
                   if k.startswith(("D and G", "D(x)", "gradient", "D as a"))},
                "share of steps D was updated (3D-GAN's threshold)": [r"^D/update_share$"]},
        "shapes": {
            "nearest-neighbour IoU with held-out shapes": [r"^eval/iou_(fidelity|coverage)$",
                                                            r"^eval/covered$"],
            "coverage of each class of real shapes": [r"^eval/iou_coverage_"],
            "occupancy (share of filled voxels)": [r"^eval/occupancy(_real)?$"],
            "connected shapes (share in one piece)": [r"^eval/connected(_real)?$"],
        },
    }
    visual_notes: ClassVar[dict[str, str]] = {
        "samples": "G(z) for the same fixed z at every step, voxels of probability > 0.5, "
                   "seen from one oblique camera",
        "mesh": "the first fixed samples' 0.5 iso-surfaces (marching cubes)"}

    @classmethod
    def check_config(cls, cfg) -> None:
        super().check_config(cfg)  # the data is voxels: check_family_data said so before
        if cfg.dataset.get("size") is not None:
            check_grid_size(int(cfg.dataset.size))
        check_eval(cfg)

    def __init__(self, cfg, spec: DataSpec, device: torch.device) -> None:
        super().__init__(cfg, spec, device)
        self.d_threshold = float(cfg.model.d_threshold)
        self.d_updates = 0  # D optimiser steps so far (the threshold skips some)
        self.d_chances = 0  # D steps offered so far

    # --- training ------------------------------------------------------------------------

    def _real(self, x: torch.Tensor) -> torch.Tensor:
        """Real grids are 0/1 occupancies, in G's sigmoid range as they are."""
        return x.float()

    def d_should_step(self, d_real: torch.Tensor, d_fake: torch.Tensor) -> bool:
        """Wu et al.: D learns only on batches where its accuracy is at most d_threshold
        (a critic without a decision boundary, WGAN's, always learns)."""
        self.d_chances += 1
        decisions = self._d_decisions(d_real.detach(), d_fake.detach())
        if self.d_threshold < 1 and decisions:
            # a host sync, once a step; float32 shares such as 0.8 read as 0.80000001
            if float(decisions["D/accuracy"]) > self.d_threshold + 1e-6:
                return False
        self.d_updates += 1
        return True

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        out = super().train_step(batch)
        out["D/update_share"] = torch.tensor(self.d_updates / max(1, self.d_chances))
        return out

    # --- samples -------------------------------------------------------------------------

    def to_uint8(self, voxels: torch.Tensor) -> torch.Tensor:
        """Occupancy probabilities -> 0/1 grids (filled above 0.5), as the data holds them."""
        return (voxels.detach() > 0.5).to(torch.uint8)

    def render(self, voxels: torch.Tensor, nrow: int | None = None,
               style: str = "shaded") -> torch.Tensor:
        """(N, 1, S, S, S) grids -> one uint8 (3, H, W) picture (ganlab/voxel_render.py)."""
        from ganlab.voxel_render import render_grid

        return render_grid(voxels, nrow, style)

    def visuals(self) -> dict[str, torch.Tensor]:
        from ganlab.voxel_render import mesh_available

        voxels = self.to_uint8(self.generate(self.fixed_z)).cpu()
        pictures = {"samples": self.render(voxels)}
        if mesh_available():
            shown = voxels[:MESH_SHAPES]
            pictures["mesh"] = self.render(shown, nrow=len(shown), style="mesh")
        return pictures

    # --- state ---------------------------------------------------------------------------

    def extra_state(self) -> dict[str, Any]:
        return {**super().extra_state(), "d_updates": self.d_updates,
                "d_chances": self.d_chances}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.d_updates = int(state.get("d_updates", 0))
        self.d_chances = int(state.get("d_chances", 0))
