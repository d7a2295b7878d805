"""The config schema: structured-config dataclasses registered in Hydra's ConfigStore.

Every key a user can set lives here with its default, so `--cfg job` shows it and a typo or a
wrong type is rejected by OmegaConf before anything runs. Config group files in `conf/` pick
values; datasets and models have one schema per kind, stored in their group as `schema_*`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class Source(str, Enum):
    auto = "auto"  # full set when on disk or downloadable, else the bundled digits (mnist only)
    full = "full"
    bundled = "bundled"


class Upsample(str, Enum):
    transposed = "transposed"  # ConvTranspose2d, stride 2 (Radford et al.)
    nearest = "nearest"  # nearest-neighbour upsample + 3x3 conv: no checkerboard artifacts


class Norm(str, Enum):
    auto = "auto"  # batch norm, or layer norm when the loss has a gradient penalty
    batch = "batch"
    layer = "layer"
    none = "none"


class Output(str, Enum):
    auto = "auto"  # sigmoid for images, linear for 2-D points
    sigmoid = "sigmoid"
    tanh = "tanh"
    linear = "linear"


class Optimizer(str, Enum):
    adam = "adam"
    rmsprop = "rmsprop"


# --- datasets ------------------------------------------------------------------------------


@dataclass
class ImageDatasetConfig:
    name: str = MISSING
    image_size: int = 28  # resized once at load time (28 -> 32 or 64)
    channels: int = 1
    source: Source = Source.auto
    classes: list[int] | None = None  # keep only these labels, e.g. [3]


@dataclass
class ToyDatasetConfig:
    name: str = MISSING
    n_samples: int = 100_000  # training points drawn once, in memory
    std: float = 0.02  # std of each Gaussian mode
    radius: float = 2.0  # ring: radius of the circle of modes
    n_modes: int = 8  # ring: number of modes
    grid_size: int = 5  # grid: modes per side
    spacing: float = 2.0  # grid: distance between neighbouring modes


@dataclass
class SyntheticDatasetConfig:
    name: str = "synthetic"
    image_size: int = 28
    channels: int = 1
    n_samples: int = 512
    num_classes: int = 10


# --- models --------------------------------------------------------------------------------


@dataclass
class DcganConfig:
    name: str = "dcgan"
    family: str = "gan"
    latent_dim: int = 100
    g_features: int = 64  # width of the last generator layer; doubles towards the input
    d_features: int = 64  # width of the first discriminator layer; doubles towards the output
    upsample: Upsample = Upsample.transposed
    d_norm: Norm = Norm.auto
    d_dropout: float = 0.0


@dataclass
class MlpGanConfig:
    name: str = "mlp_gan"
    family: str = "gan"
    latent_dim: int = 100
    g_hidden: list[int] = field(default_factory=lambda: [300])
    d_hidden: list[int] = field(default_factory=lambda: [300, 100])
    output: Output = Output.auto
    d_dropout: float = 0.0


# --- training ------------------------------------------------------------------------------


@dataclass
class LossConfig:
    name: str = "nonsaturating"
    gp_weight: float = 0.0  # gradient penalty weight (wgan_gp: 10)
    clip_value: float = 0.0  # critic weight clipping to [-c, c] (wgan: 0.01); 0 = off


@dataclass
class GanConfig:
    d_steps: int = 1  # discriminator steps per generator step
    optimizer: Optimizer = Optimizer.adam
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])  # Adam only
    real_label: float = 1.0  # the lecture's flipped setup: real_label=0 fake_label=1
    fake_label: float = 0.0
    label_smoothing: float = 0.0  # one-sided: real targets move this far towards fake
    label_noise: float = 0.0  # probability of flipping each discriminator target


@dataclass
class TrainerConfig:
    seed: int = 0
    max_steps: int = 5000
    epochs: int | None = None  # when set, overrides max_steps with epochs * batches per epoch
    batch_size: int = 64
    ckpt_every: int = 1000


@dataclass
class LogConfig:
    every: int = 50  # scalars to TensorBoard and the progress bar
    sample_every: int = 500  # sample grid to TensorBoard and samples/step_<N>.png
    n_samples: int = 64  # images in the sample grid (fixed noise)
    progress: bool = True  # tqdm progress bar


@dataclass
class EvalConfig:
    every: int = 1000  # run the family's metrics every N steps (0: only at the end)
    n_samples: int = 10_000  # samples drawn for the metrics
    mode_min_share: float = 0.2  # toys: a mode counts when it holds this share of 1/K of samples


@dataclass
class Config:
    dataset: Any = MISSING
    model: Any = MISSING
    loss: LossConfig = field(default_factory=LossConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    log: LogConfig = field(default_factory=LogConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    data_dir: str = "${oc.env:GANLAB_DATA,data}"
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    resume: str | None = None  # a checkpoint file or a run dir to continue


# Ranges the types cannot say, as intervals ("[" / "]" closed, "(" / ")" open). A key that the
# chosen dataset or model does not have is skipped; None (e.g. trainer.epochs unset) passes.
RANGES = {
    "trainer.batch_size": "[1, inf)",
    "trainer.max_steps": "[1, inf)",
    "trainer.epochs": "[1, inf)",
    "trainer.ckpt_every": "[0, inf)",
    "log.every": "[0, inf)",
    "log.sample_every": "[0, inf)",
    "log.n_samples": "[1, inf)",
    "eval.every": "[0, inf)",
    "eval.n_samples": "[1, inf)",
    "eval.mode_min_share": "[0, inf)",
    "loss.gp_weight": "[0, inf)",
    "loss.clip_value": "[0, inf)",
    "gan.d_steps": "[1, inf)",
    "gan.lr_g": "(0, inf)",
    "gan.lr_d": "(0, inf)",
    "gan.label_smoothing": "[0, 1)",
    "gan.label_noise": "[0, 1)",
    "model.latent_dim": "[1, inf)",
    "model.g_features": "[1, inf)",
    "model.d_features": "[1, inf)",
    "model.d_dropout": "[0, 1)",
}


def _in_interval(value: float, interval: str) -> bool:
    low, high = (float(part.strip("[]() ")) for part in interval.split(","))
    above = value >= low if interval.startswith("[") else value > low
    below = value <= high if interval.endswith("]") else value < high
    return above and below


def check_ranges(cfg) -> None:
    """Raise a UserError naming the first key outside its range."""
    from omegaconf import OmegaConf

    from ganlab.errors import UserError

    for key, interval in RANGES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and not _in_interval(value, interval):
            raise UserError(f"{key}={value} is outside its range {interval}")
    for hidden in OmegaConf.select(cfg, "model.g_hidden", default=None) or []:
        if hidden < 1:
            raise UserError(f"model.g_hidden sizes must be at least 1, got {hidden}")
    for hidden in OmegaConf.select(cfg, "model.d_hidden", default=None) or []:
        if hidden < 1:
            raise UserError(f"model.d_hidden sizes must be at least 1, got {hidden}")


SCHEMA_PREFIX = "schema_"
# the config folder at the top of the project (an editable install keeps it beside the package)
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="schema_config", node=Config)
    cs.store(group="dataset", name=SCHEMA_PREFIX + "image", node=ImageDatasetConfig)
    cs.store(group="dataset", name=SCHEMA_PREFIX + "toy", node=ToyDatasetConfig)
    cs.store(group="dataset", name=SCHEMA_PREFIX + "synthetic", node=SyntheticDatasetConfig)
    cs.store(group="model", name=SCHEMA_PREFIX + "dcgan", node=DcganConfig)
    cs.store(group="model", name=SCHEMA_PREFIX + "mlp_gan", node=MlpGanConfig)


register_configs()
