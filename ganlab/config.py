"""The shared config schema (trainer, log, eval, data, device) and the tools every schema uses.

Every key a user can set has a default in a dataclass, so `--cfg job` shows it and a typo or a
wrong type is rejected by OmegaConf before anything runs. A family's settings live in the
family's own module (its dataclass is the schema of `model.*`), a loss's in `ganlab.losses`, a
defence's in `ganlab.attacks.defenses`; each registers its schema with `register_schema`, and
the YAML file in `conf/<group>/` names it in its defaults list (`- schema_<name>`).

Ranges the types cannot say sit next to the field: `field(default=..., metadata=at_least(1))`
or `ranged(2e-4, "(0, inf)")`; `check_ranges` reads them from whatever schema a node has.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


def ranged(default: Any, interval: str, **metadata: Any) -> Any:
    """A field with a default and a range, e.g. lr: float = ranged(2e-4, "(0, inf)"); for a
    list, the range of each item. Intervals: "[" / "]" closed, "(" / ")" open."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"each": interval,
                                                                      **metadata})
    return field(default=default, metadata={"range": interval, **metadata})


def sizes(default: list[int]) -> Any:
    """A list of layer sizes, each at least 1."""
    return field(default_factory=lambda: list(default), metadata={"each": "[1, inf)"})


def one_of(default: str, *allowed: str) -> Any:
    """A string key with a fixed set of values."""
    return field(default=default, metadata={"choices": allowed})



class Source(str, Enum):
    auto = "auto"  # full set when on disk or downloadable, else the bundled digits (mnist only)
    full = "full"
    bundled = "bundled"


class Inception(str, Enum):
    off = "off"
    auto = "auto"  # when the weights file is already on disk
    on = "on"  # download the weights if needed; offline without them: an error


class SubstituteArchitecture(str, Enum):
    lenet = "lenet"  # conv stages `channels`, then `hidden`
    mlp = "mlp"  # `hidden` only (cleverhans' substitute: hidden=[200,200])


class AttackMethod(str, Enum):
    fgsm = "fgsm"
    ifgsm = "ifgsm"
    pgd = "pgd"


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
class CelebaDatasetConfig:
    name: str = "celeba"
    image_size: int = 64  # after the centre crop: 64 or 32
    channels: int = 3
    crop: int = ranged(148, "[1, inf)")  # centre crop of the 178x218 aligned faces before resizing
    attributes: bool = True  # false: any folder of face images (data_dir/celeba/img_align_celeba)
    # train | valid | test | all (the official partition)
    split: str = one_of("train", "train", "valid", "test", "all")
    max_images: int | None = ranged(None, "[1, inf)")  # the first N of the split, for quick runs
    cache: bool = True  # keep the resized uint8 images in one file beside the data


@dataclass
class UnpairedDatasetConfig:
    name: str = MISSING  # the folder under data_dir: trainA/ trainB/ (testA/ testB/ optional)
    loader: str = "unpaired"  # the dataset builder (the name is the folder)
    image_size: int = 256  # the random crop the networks see
    channels: int = 3
    # resized to this before cropping; null: 1.12 x image_size
    load_size: int | None = ranged(None, "[1, inf)")
    flip: bool = True  # random horizontal flips
    # the first N files of each folder, for quick runs
    max_images: int | None = ranged(None, "[1, inf)")
    cache: bool = True  # keep the decoded uint8 images in one file beside the data
    download: bool = True  # fetch known archives (horse2zebra) when the folders are missing


@dataclass
class Red2BlueDatasetConfig:
    name: str = "red2blue"
    image_size: int = 32
    channels: int = 3
    n_samples: int = 1000  # training images per domain
    n_test: int = ranged(100, "[1, inf)")  # test images per domain
    # drawn at this size, then cropped; null: 1.12 x image_size
    load_size: int | None = ranged(None, "[1, inf)")
    flip: bool = True


@dataclass
class SyntheticDatasetConfig:
    name: str = "synthetic"
    image_size: int = 28
    channels: int = 1
    n_samples: int = 512
    num_classes: int = 10


# --- attacks (the `attack` command) --------------------------------------------------------

DEFAULT_EPS = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]


@dataclass
class FgsmAttackConfig:
    name: str = "fgsm"
    eps: list[float] = field(default_factory=lambda: list(DEFAULT_EPS))
    targeted: bool = False
    target: str | None = None  # with targeted=true: a class (0..9), random (default), least_likely


@dataclass
class IfgsmAttackConfig(FgsmAttackConfig):
    name: str = "ifgsm"
    step_size: float = 1 / 255  # Kurakin et al.: one grey level per step
    steps: int | None = None  # None: Kurakin's min(255 * eps + 4, 1.25 * 255 * eps)


# the eps list of an attack that leaves attack.eps unset: L-inf (fractions of the pixel range)
# or L2 (a 28x28 image's L2 norm is at most 28)
DEFAULT_EPS_BY_NORM = {"inf": DEFAULT_EPS, "2": [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]}


@dataclass
class PgdAttackConfig(FgsmAttackConfig):
    name: str = "pgd"
    eps: list[float] | None = None  # None: 0 to 0.3 by 0.05 (L-inf), 0 to 3 by 0.5 (L2)
    norm: str = one_of("inf", "inf", "2")  # the ball: L-inf (signed steps) or L2
    step_size: float | None = None  # None: 2.5 * eps / steps (Madry et al.)
    steps: int = 40
    random_start: bool = True


@dataclass
class TransferAttackConfig(FgsmAttackConfig):
    name: str = "transfer"
    source_ckpt: str = MISSING  # the model the examples are crafted on
    method: AttackMethod = AttackMethod.fgsm
    step_size: float | None = None  # ifgsm/pgd; None: their own defaults
    steps: int | None = None
    random_start: bool = True  # pgd


@dataclass
class SubstituteAttackConfig:
    name: str = "substitute"
    eps: list[float] = field(default_factory=lambda: [0.3])
    seed_size: int = 150  # held-out images the attacker starts from (Papernot et al.: 150)
    rounds: int = 6  # substitute training epochs rho; the set doubles between rounds
    epochs: int = 10  # training epochs of the substitute per round
    lmbda: float = 0.1  # Jacobian augmentation step
    tau: int = 3  # the augmentation step changes sign every tau rounds
    # the attacker's own network: a small convnet transfers best to a convnet target
    architecture: SubstituteArchitecture = SubstituteArchitecture.lenet
    channels: list[int] = field(default_factory=lambda: [16, 32])
    hidden: list[int] = field(default_factory=lambda: [100])
    lr: float = 1e-3
    batch_size: int = 128


@dataclass
class CwAttackConfig:
    """Carlini & Wagner L2: a minimal perturbation, no eps."""

    name: str = "cw"
    targeted: bool = False
    target: str | None = None  # with targeted=true: a class, random (default), least_likely
    kappa: float = ranged(0.0, "[0, inf)")  # the logit margin the result must have
    c: float = ranged(1e-3, "(0, inf)")  # the first weight of the loss term; searched per image
    search_steps: int = ranged(9, "[1, inf)")  # rounds of the binary search over c
    steps: int = ranged(1000, "[1, inf)")  # Adam steps per round (C&W: up to 10,000)
    lr: float = ranged(1e-2, "(0, inf)")  # Adam's learning rate
    abort_early: bool = True  # end a round for an image once its loss stops falling


@dataclass
class JsmaAttackConfig:
    """Papernot et al.'s saliency map attack: targeted, L0, no eps."""

    name: str = "jsma"
    target: str = "random"  # a class, random, least_likely
    theta: float = ranged(1.0, "[-1, 1]")  # the change of each chosen pixel (+1: to white)
    gamma: float = ranged(0.145, "(0, 1]")  # the largest share of pixels changed (14.5%)


@dataclass
class DeepfoolAttackConfig:
    """Moosavi-Dezfooli et al.'s DeepFool (L2): a minimal perturbation, no eps."""

    name: str = "deepfool"
    steps: int = ranged(50, "[1, inf)")  # linearisation steps at most
    overshoot: float = ranged(0.02, "[0, inf)")  # the total step is scaled by 1 + overshoot


@dataclass
class LbfgsAttackConfig:
    """Szegedy et al.'s box-constrained L-BFGS: targeted, L2, no eps."""

    name: str = "lbfgs"
    target: str = "random"  # a class, random, least_likely
    c: float = ranged(1e-2, "(0, inf)")  # the first weight of the loss term; searched per image
    search_steps: int = ranged(5, "[1, inf)")  # rounds of the search over c
    steps: int = ranged(100, "[1, inf)")  # L-BFGS-B iterations per round


@dataclass
class ApgdAttackConfig:
    """Croce & Hein's Auto-PGD (wrapped from torchattacks), untargeted."""

    name: str = "apgd"
    eps: list[float] | None = None  # None: 0 to 0.3 by 0.05 (L-inf), 0 to 3 by 0.5 (L2)
    norm: str = one_of("inf", "inf", "2")
    loss: str = one_of("ce", "ce", "dlr")  # cross-entropy or the difference of logits ratio
    steps: int = ranged(100, "[1, inf)")
    restarts: int = ranged(1, "[1, inf)")


@dataclass
class AutoattackAttackConfig:
    """AutoAttack's standard version (APGD-CE, APGD-T, FAB-T, Square; per-image worst case)."""

    name: str = "autoattack"
    eps: list[float] | None = None  # None: [0.3] (L-inf) or [2.0] (L2), the MNIST budgets
    norm: str = one_of("inf", "inf", "2")
    steps: int = ranged(100, "[1, inf)")  # APGD-CE, APGD-T and FAB-T iterations
    n_queries: int = ranged(5000, "[1, inf)")  # Square's queries
    # APGD-T and FAB-T target the K most likely other classes in turn; None: all (9 of 10)
    n_target_classes: int | None = ranged(None, "[1, inf)")


@dataclass
class EotAttackConfig:
    """Athalye et al.'s Expectation over Transformation: PGD (L-inf) on the loss averaged over
    random transformations, evaluated under fresh ones beside plain PGD's examples."""

    name: str = "eot"
    eps: list[float] = field(default_factory=lambda: [0.3])
    targeted: bool = False
    target: str | None = None  # with targeted=true: a class, random (default), least_likely
    steps: int = ranged(40, "[1, inf)")
    step_size: float | None = None  # None: 2.5 * eps / steps (Madry et al.)
    random_start: bool = True
    samples: int = ranged(10, "[1, inf)")  # transformations averaged per gradient step
    # the distribution: Athalye et al. 2018, Table 4 (2-D), each uniform in its range
    rotation: float = ranged(22.5, "[0, 180]")  # degrees, either way
    scale: list[float] = ranged([0.9, 1.4], "(0, inf)")  # [min, max] zoom
    translate: float = ranged(0.1, "[0, 1]")  # shift, a fraction of the image size, either way
    brightness: float = ranged(0.05, "[0, 1]")  # lighten / darken by up to this
    noise: float = ranged(0.1, "[0, 1]")  # Gaussian noise, standard deviation up to this
    eval_samples: int = ranged(10, "[1, inf)")  # fresh transformations per held-out image


@dataclass
class PatchAttackConfig:
    """Brown et al.'s adversarial patch: one universal, targeted square patch trained over
    random placements and training images; its success rate on held-out images."""

    name: str = "patch"
    target: int = ranged(0, "[0, inf)")  # the class every patched image should become
    size: float = ranged(0.1, "(0, 1]")  # the patch's share of the image area
    rotation: float = ranged(22.5, "[0, 180]")  # degrees, either way (the reference code's)
    scale: list[float] = ranged([0.8, 1.2], "(0, inf)")  # [min, max] of the side, in training
    steps: int = ranged(1000, "[1, inf)")  # gradient steps
    batch_size: int = ranged(16, "[1, inf)")  # training images per step (the reference's 16)
    lr: float = ranged(1.25, "(0, inf)")  # the reference's 5.0 on [-1, 1] images
    train_images: int = ranged(2000, "[1, inf)")  # from the dataset's training split
    eval_samples: int = ranged(10, "[1, inf)")  # random placements per held-out image


@dataclass
class InferenceDefenseConfig:
    """The lecture's failed defences, applied at test time by the `attack` command: the model
    attacked (and evaluated) is the average of the logits over `samples` Gaussian-noised copies
    of the input (noise > 0; the attacks differentiate through the draws, as EOT), of the
    models of ckpt and the `ensemble` checkpoints, or both."""

    noise: float = ranged(0.0, "[0, 1]")  # standard deviation of the noise (0: none)
    samples: int = ranged(8, "[1, inf)")  # noise draws averaged per forward pass
    ensemble: list[str] = field(default_factory=list)  # more checkpoints averaged with ckpt


@dataclass
class AttackCommandConfig:
    # the attacked classifier: checkpoint file or run dir, or a torch.export program (.pt2)
    # of any classifier taking [0, 1] images, with `dataset=` naming its held-out data
    ckpt: str = MISSING
    attack: Any = MISSING
    dataset: Any = None  # .pt2 only: the dataset (a dataset= choice) whose held-out split
    n_examples: int = 1000  # held-out images attacked (0: all of them)
    batch_size: int = 500
    seed: int = 0  # random starts and random targets
    out: str | None = None  # folder for the results; default <run dir>/attack_<name>
    data_dir: str | None = None  # default: the data_dir the model was trained with
    device: str = "cpu"
    show: int = 8  # examples in the picture grid
    test_time: InferenceDefenseConfig = field(default_factory=InferenceDefenseConfig)


# --- training ------------------------------------------------------------------------------


@dataclass
class TrainerConfig:
    seed: int = 0
    max_steps: int = ranged(5000, "[1, inf)")
    # when set, overrides max_steps with epochs * batches per epoch
    epochs: int | None = ranged(None, "[1, inf)")
    batch_size: int = ranged(64, "[1, inf)")
    ckpt_every: int = ranged(1000, "[0, inf)")
    # 32 | bf16 | 16: autocast for the training steps (fp16 with loss scaling); weights and
    # checkpoints stay fp32; the gradient penalty is always fp32
    precision: str = one_of("32", "32", "bf16", "16")
    # checkpoints/step_<N>.pt of the K most recent saves (0: only last.pt)
    keep_last: int = ranged(3, "[0, inf)")
    # speed switches; none changes what is saved: checkpoints load with any of them
    compile: bool = False  # torch.compile the networks (the first steps pay the compile time)
    channels_last: bool = False  # NHWC memory format for image networks (faster convs on GPUs)
    cudnn_benchmark: bool = True  # CUDA: time cuDNN's algorithms once, use the fastest
    # under torchrun: BatchNorm statistics over the global batch instead of each process's
    sync_batchnorm: bool = False


@dataclass
class LogConfig:
    # scalars to TensorBoard and the progress bar every N steps; null: about 50 points per
    # curve (every max_steps / 50 steps, at most every 50); 0: never
    every: int | None = ranged(None, "[0, inf)")
    # sample grid to TensorBoard and samples/step_<N>.png every N steps, and one at step 0;
    # null: about 10 grids (every max_steps / 10 steps, at most every 500); 0: none
    sample_every: int | None = ranged(None, "[0, inf)")
    n_samples: int = ranged(64, "[1, inf)")  # images in the sample grid (fixed noise)
    progress: bool = True  # tqdm progress bar


@dataclass
class EvalConfig:
    # measure every N steps (0: only at the end): the family's own metrics and the sample metrics
    every: int = ranged(1000, "[0, inf)")
    n_samples: int = ranged(10_000, "[1, inf)")  # samples drawn for the metrics
    # toys: a mode counts when it holds this share of 1/K of samples
    mode_min_share: float = ranged(0.2, "[0, inf)")
    # digit datasets (mnist, fashion_mnist): class coverage, class KL, confidence and FID in
    # the feature space of a reference classifier, built once per dataset and source at its
    # native size (`python -m ganlab reference`, or before a run trains) and cached in data_dir
    classifier_metrics: bool = True
    classifier: str | None = None  # a classifier checkpoint to use instead of the reference
    # the classifier's held-out accuracy must reach this, or its metrics are left out (with
    # one warning): numbers measured with a poor classifier mean little
    reference_min_accuracy: float = ranged(0.9, "[0, 1]")
    # any image dataset: FID and KID with the standard Inception network (torchmetrics /
    # torch-fidelity weights). Off in training by default: on a CPU it costs minutes per 10k
    inception: Inception = Inception.off
    inception_weights: str | None = None  # weights-inception-2015-12-05-6726825d.pth
    # VAEs: the held-out log-likelihood by importance sampling with this many samples per
    # image (Burda et al.'s bound, heldout_nll_iwae beside heldout_neg_elbo); 0: not measured.
    # It costs k decoder passes per image: the `eval` command is the place for k = 5000
    iwae_k: int = ranged(0, "[0, inf)")


@dataclass
class DataConfig:
    # the training set is copied to the training device when it takes at most this many bytes,
    # and streamed from host memory (a memory map of its cache file, when it has one) in
    # prefetched batches otherwise; null: half of the device's free memory (CUDA) or of the
    # available RAM (CPU); 0: always stream. The same batches come either way
    max_device_bytes: int | None = ranged(None, "[0, inf)")


# The run config's root is conf/config.yaml: trainer, log and eval typed by the schemas above,
# then dataset, model (the family's settings) and what the model's file brings along (loss for
# GANs, defense for classifiers), then data_dir, device and resume. It has no dataclass of its
# own, so a section only one family reads exists only in that family's runs.


def _in_interval(value: float, interval: str) -> bool:
    low, high = (float(part.strip("[]() ")) for part in interval.split(","))
    above = value >= low if interval.startswith("[") else value > low
    below = value <= high if interval.endswith("]") else value < high
    return above and below


def check_ranges(cfg, prefix: str = "") -> None:
    """Raise a UserError naming the first key outside the range its schema gives it. Walks
    every node whose type is a dataclass; None (e.g. trainer.epochs unset) passes."""
    from omegaconf import DictConfig, OmegaConf

    from ganlab.errors import UserError

    schema = OmegaConf.get_type(cfg)
    limits = {f.name: f.metadata for f in fields(schema)} if is_dataclass(schema) else {}
    for key in cfg:
        if OmegaConf.is_missing(cfg, key):
            continue
        value, name = cfg[key], f"{prefix}{key}"
        if isinstance(value, DictConfig):
            check_ranges(value, f"{name}.")
            continue
        meta = limits.get(key, {})
        if value is None:
            continue
        if "range" in meta and not _in_interval(value, meta["range"]):
            raise UserError(f"{name}={value} is outside its range {meta['range']}")
        if "choices" in meta and value not in meta["choices"]:
            raise UserError(f"{name}={value} is not one of: {', '.join(meta['choices'])}")
        if "each" in meta:
            for item in value:
                if not _in_interval(item, meta["each"]):
                    raise UserError(f"{name} values must lie in {meta['each']}, got {item}")


SCHEMA_PREFIX = "schema_"


def _conf_dir() -> Path:
    """conf/: inside the installed package (the wheel maps it to ganlab/conf, see setup.py),
    or at the top of a source tree (editable installs, a checkout on sys.path)."""
    installed = Path(__file__).resolve().parent / "conf"
    if (installed / "config.yaml").is_file():
        return installed
    return Path(__file__).resolve().parent.parent / "conf"


CONF_DIR = _conf_dir()
# (group, name) -> the dataclass a config file in conf/<group>/ declares as its schema
SCHEMAS: dict[tuple[str, str], type] = {}


def register_schema(group: str | None, name: str, node: type) -> type:
    """Store a schema in Hydra's ConfigStore as <group>/schema_<name>, for the defaults list of
    a config file in conf/<group>/; returns the dataclass (usable as a decorator factory's
    result). Registering the same name twice with another class is a bug."""
    known = SCHEMAS.get((group or "", name))
    if known is not None and known is not node:
        raise ValueError(f"schema {group}/{name} is registered twice")
    SCHEMAS[(group or "", name)] = node
    ConfigStore.instance().store(group=group, name=SCHEMA_PREFIX + name, node=node)
    return node


def schema(group: str, name: str):
    """Class decorator: @schema("model", "dcgan") on a dataclass registers it."""

    def add(node: type) -> type:
        return register_schema(group, name, node)

    return add


def register_configs() -> None:
    from ganlab import run_names

    run_names.register()  # the resolvers that name run dirs (conf/config.yaml's hydra.run.dir)
    register_schema(None, "trainer", TrainerConfig)
    register_schema(None, "log", LogConfig)
    register_schema(None, "eval", EvalConfig)
    register_schema(None, "data", DataConfig)
    for name, node in (("image", ImageDatasetConfig), ("toy", ToyDatasetConfig),
                       ("synthetic", SyntheticDatasetConfig), ("celeba", CelebaDatasetConfig),
                       ("unpaired", UnpairedDatasetConfig), ("red2blue", Red2BlueDatasetConfig)):
        register_schema("dataset", name, node)
    register_schema(None, "attack_command", AttackCommandConfig)
    for name, node in (("fgsm", FgsmAttackConfig), ("ifgsm", IfgsmAttackConfig),
                       ("pgd", PgdAttackConfig), ("transfer", TransferAttackConfig),
                       ("substitute", SubstituteAttackConfig), ("cw", CwAttackConfig),
                       ("jsma", JsmaAttackConfig), ("deepfool", DeepfoolAttackConfig),
                       ("lbfgs", LbfgsAttackConfig), ("apgd", ApgdAttackConfig),
                       ("autoattack", AutoattackAttackConfig), ("eot", EotAttackConfig),
                       ("patch", PatchAttackConfig)):
        register_schema("attack", name, node)


def build_config(model: Any, dataset: Any, **sections: Any):
    """A run config from schema instances, without Hydra or config files: for tests and
    notebooks that build a family directly, e.g.
    build_config(DcganConfig(g_features=8), SyntheticDatasetConfig(), loss=LossConfig()).
    Keyword sections (loss, defense, trainer, log, eval) are dataclass instances or dicts;
    trainer, log and eval default to the schema's defaults."""
    from omegaconf import OmegaConf

    parts = {"trainer": TrainerConfig(), "log": LogConfig(), "eval": EvalConfig(),
             **sections, "dataset": dataset, "model": model}
    cfg = OmegaConf.create({name: OmegaConf.structured(value) for name, value in parts.items()})
    cfg.merge_with({"data_dir": "${oc.env:GANLAB_DATA,data}", "device": "auto", "resume": None})
    OmegaConf.set_struct(cfg, True)
    return cfg


def compose(overrides: list[str] | tuple[str, ...] = (), config_name: str = "config"):
    """The config a command line would give, composed in-process (no run dir, no logging):
    for Python callers, tests and commands that need a family's settings with their defaults."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from ganlab.plugins import discover

    discover()
    if GlobalHydra.instance().is_initialized():  # inside a Hydra app or another compose
        return hydra_compose(config_name, overrides=list(overrides))
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name, overrides=list(overrides))


register_configs()
