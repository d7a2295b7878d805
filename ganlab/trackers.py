"""Experiment trackers beside TensorBoard: `logger=mlflow` or `logger=wandb` sends a run's
params, scalars, images and final metrics there too (TensorBoard is always written).

Each tracker is a small class in TRACKERS, with its settings dataclass as the schema of
conf/logger/<name>.yaml; the run logger (ganlab.logging) calls it. The packages are extras
(`pip install 'ganlab[mlflow]'`, `'ganlab[wandb]'`); a missing one is bad input before the
run starts.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganlab.errors import UserError
from ganlab.registry import Registry

# name (cfg.logger.name) -> class(settings, run_dir, run_name, params) with scalars(),
# image(), text(), finish() and abort()
TRACKERS: Registry = Registry("logger", group="logger")
PACKAGES = {"mlflow": "mlflow", "wandb": "wandb"}  # the module each tracker imports


def check_tracker(cfg) -> None:
    """Before anything runs: the chosen tracker's package is installed."""
    name = tracker_name(cfg)
    module = PACKAGES.get(name)
    if module is not None and importlib.util.find_spec(module) is None:
        raise UserError(f"logger={name} needs the {module} package, which is not installed: "
                        f"pip install 'ganlab[{name}]'")


def tracker_name(cfg) -> str:
    from omegaconf import OmegaConf

    return str(OmegaConf.select(cfg, "logger.name", default=None) or "tensorboard")


def _hwc(image: torch.Tensor) -> np.ndarray:
    """A uint8 (C, H, W) picture as the (H, W, C) array trackers take."""
    array = image.detach().cpu().permute(1, 2, 0).numpy()
    return array[:, :, 0] if array.shape[2] == 1 else array


@dataclass
class TensorboardSettings:
    name: str = "tensorboard"  # TensorBoard alone (it is written with every logger)


@dataclass
class MlflowSettings:
    name: str = "mlflow"
    experiment: str = "ganlab"
    # null: MLFLOW_TRACKING_URI, else MLflow's default (./mlflow.db and ./mlruns/ for the
    # artifacts, where `mlflow ui` looks)
    tracking_uri: str | None = None


@dataclass
class WandbSettings:
    name: str = "wandb"
    project: str = "ganlab"
    entity: str | None = None
    # null: WANDB_MODE (offline needs no account or network; `wandb sync` uploads later)
    mode: str | None = None


TRACKERS.register("tensorboard", TensorboardSettings)(None)  # no tracker beside TensorBoard


@TRACKERS.register("mlflow", MlflowSettings)
class MlflowTracker:
    def __init__(self, settings, run_dir: Path, run_name: str, params: dict[str, Any]) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=settings.tracking_uri)
        experiment = self.client.get_experiment_by_name(settings.experiment)
        experiment_id = (experiment.experiment_id if experiment is not None
                         else self.client.create_experiment(settings.experiment))
        self.run_id = self.client.create_run(
            experiment_id, run_name=run_name,
            tags={"ganlab.run_dir": str(run_dir.resolve())}).info.run_id
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, str(v)[:6000])
                                                   for k, v in params.items()])

    def scalars(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step)
                                                    for k, v in values.items()])

    def image(self, name: str, image: torch.Tensor, step: int) -> None:
        self.client.log_image(self.run_id, _hwc(image), key=name, step=step)

    def text(self, name: str, text: str) -> None:
        self.client.log_text(self.run_id, text, f"{name}.txt")

    def finish(self, metrics: dict[str, float], step: int) -> None:
        self.scalars({f"final/{k}": v for k, v in metrics.items()}, step)
        self.client.set_terminated(self.run_id)

    def abort(self) -> None:
        """The run stopped without finishing (interrupted, bad input, a crash)."""
        self.client.set_terminated(self.run_id, status="KILLED")


@TRACKERS.register("wandb", WandbSettings)
class WandbTracker:
    def __init__(self, settings, run_dir: Path, run_name: str, params: dict[str, Any]) -> None:
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project=settings.project, entity=settings.entity, name=run_name,
                              dir=str(run_dir), config=params, mode=settings.mode,
                              reinit="create_new")

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.run.log({k: float(v) for k, v in values.items()}, step=step)

    def image(self, name: str, image: torch.Tensor, step: int) -> None:
        self.run.log({name: self.wandb.Image(_hwc(image))}, step=step)

    def text(self, name: str, text: str) -> None:
        self.run.summary[name] = text

    def finish(self, metrics: dict[str, float], step: int) -> None:
        self.run.summary.update(metrics)
        self.run.finish()

    def abort(self) -> None:
        self.run.finish(exit_code=1)
