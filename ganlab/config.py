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


class Architecture(str, Enum):
    mlp = "mlp"
    conv = "conv"


class Likelihood(str, Enum):
    auto = "auto"  # bernoulli for 1-channel images (digits), gaussian for colour
    bernoulli = "bernoulli"  # binary cross-entropy on [0, 1] pixels
    gaussian = "gaussian"  # N(x; decoder mean, vae.gaussian_std^2), i.e. a scaled MSE


class Inception(str, Enum):
    off = "off"
    auto = "auto"  # when the weights file is already on disk
    on = "on"  # download the weights if needed; offline without them: an error


class SubstituteArchitecture(str, Enum):
    lenet = "lenet"  # conv stages `channels`, then `hidden`
    mlp = "mlp"  # `hidden` only (cleverhans' substitute: hidden=[200,200])


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
    crop: int = 148  # centre crop of the 178x218 aligned faces before resizing
    attributes: bool = True  # false: any folder of face images (data_dir/celeba/img_align_celeba)
    split: str = "train"  # train | valid | test | all (the official partition)
    max_images: int | None = None  # the first N of the split, for quick runs
    cache: bool = True  # keep the resized uint8 images in one file beside the data


@dataclass
class UnpairedDatasetConfig:
    name: str = MISSING  # the folder under data_dir: trainA/ trainB/ (testA/ testB/ optional)
    loader: str = "unpaired"  # the dataset builder (the name is the folder)
    image_size: int = 256  # the random crop the networks see
    channels: int = 3
    load_size: int | None = None  # resized to this before cropping; null: 1.12 x image_size
    flip: bool = True  # random horizontal flips
    max_images: int | None = None  # the first N files of each folder, for quick runs
    cache: bool = True  # keep the decoded uint8 images in one file beside the data
    download: bool = True  # fetch known archives (horse2zebra) when the folders are missing


@dataclass
class Red2BlueDatasetConfig:
    name: str = "red2blue"
    image_size: int = 32
    channels: int = 3
    n_samples: int = 1000  # training images per domain
    n_test: int = 100  # test images per domain
    load_size: int | None = None  # drawn at this size, then cropped; null: 1.12 x image_size
    flip: bool = True


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


class Conditioning(str, Enum):
    projection = "projection"  # D(x, y) = psi(phi(x)) + <embed(y), phi(x)> (Miyato & Koyama)
    concat = "concat"  # the label's one-hot planes concatenated to D's input (Mirza & Osindero)


@dataclass
class CganConfig(DcganConfig):
    """A class-conditional DCGAN: G sees z joined with a learnt label embedding."""

    name: str = "cgan"
    embed_dim: int = 50  # size of G's label embedding, concatenated to z
    conditioning: Conditioning = Conditioning.projection  # how D sees the label


@dataclass
class ProganConfig:
    """Karras et al.'s progressive growing at small scale (4 px doubling to the data size)."""

    name: str = "progan"
    family: str = "progan"
    latent_dim: int = 128
    max_features: int = 128  # channels at 4-16 px; halved per doubling above (min_features)
    min_features: int = 32
    # every stage (4 px, 8 px, ..., the data size) gets an equal share of the run, or this many
    # steps each (the last stage takes whatever is left)
    stage_steps: int | None = None
    fade_fraction: float = 0.5  # of each stage after the first, the share spent fading in
    drift: float = 0.001  # Karras' epsilon_drift: a penalty on D(x)^2 keeping scores near 0


@dataclass
class MlpGanConfig:
    name: str = "mlp_gan"
    family: str = "gan"
    latent_dim: int = 100
    g_hidden: list[int] = field(default_factory=lambda: [300])
    d_hidden: list[int] = field(default_factory=lambda: [300, 100])
    output: Output = Output.auto


@dataclass
class ClassifierModelConfig:
    name: str = MISSING
    family: str = "classifier"
    # inputs are [0, 1] images; the model standardises them itself, (x - mean) / std, so
    # attacks always work in [0, 1] (MNIST's own statistics: 0.1307 / 0.3081)
    input_mean: float = 0.0
    input_std: float = 1.0


@dataclass
class SoftmaxConfig(ClassifierModelConfig):
    name: str = "softmax"


@dataclass
class MlpClassifierConfig(ClassifierModelConfig):
    name: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    dropout: float = 0.0


@dataclass
class LenetConfig(ClassifierModelConfig):
    name: str = "lenet"
    # 5x5 convs, each followed by ReLU and 2x2 max pooling, then the hidden layers: the MNIST
    # net of Madry et al.; LeNet-5's widths are channels=[6,16] hidden=[120,84]
    channels: list[int] = field(default_factory=lambda: [32, 64])
    hidden: list[int] = field(default_factory=lambda: [1024])
    dropout: float = 0.0


@dataclass
class CycleganModelConfig:
    name: str = "cyclegan"
    family: str = "cyclegan"  # the networks and their training are set in the cyclegan section


@dataclass
class AutoencoderConfig:
    name: str = MISSING
    family: str = MISSING  # ae or vae
    architecture: Architecture = Architecture.mlp
    latent_dim: int = 20
    hidden: list[int] = field(default_factory=lambda: [400])  # mlp: encoder widths
    features: int = 32  # conv: width of the first encoder stage; doubles per stage


# --- defences (adversarial training) -------------------------------------------------------


@dataclass
class NoDefenseConfig:
    name: str = "none"


@dataclass
class FgsmDefenseConfig:
    name: str = "fgsm"
    eps: float = 0.3
    clean_weight: float = 0.5  # Goodfellow's alpha: alpha * J(x) + (1 - alpha) * J(x_adv)
    random_start: bool = False  # step from a random point of the eps-ball (against masking)


@dataclass
class PgdDefenseConfig:
    name: str = "pgd"
    eps: float = 0.3
    step_size: float = 0.01
    steps: int = 40
    random_start: bool = True
    clean_weight: float = 0.0  # Madry et al. train on adversarial examples only


@dataclass
class MixupDefenseConfig:
    name: str = "mixup"
    alpha: float = 1.0  # lam ~ Beta(alpha, alpha)


@dataclass
class GradRegDefenseConfig:
    name: str = "gradreg"
    weight: float = 10.0  # J + weight * mean over the batch of ||grad_x J(x_i, y_i)||^2


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


@dataclass
class PgdAttackConfig(FgsmAttackConfig):
    name: str = "pgd"
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
class AttackCommandConfig:
    ckpt: str = MISSING  # the attacked classifier: checkpoint file or run dir
    attack: Any = MISSING
    n_examples: int = 1000  # held-out images attacked (0: all of them)
    batch_size: int = 500
    seed: int = 0  # random starts and random targets
    out: str | None = None  # folder for the results; default <run dir>/attack_<name>
    data_dir: str | None = None  # default: the data_dir the model was trained with
    device: str = "cpu"
    show: int = 8  # examples in the picture grid


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
    # mode-collapse tools, all off by default
    d_dropout: float = 0.0  # dropout in the discriminator
    minibatch_std: bool = False  # D sees the batch's feature std (Karras et al.)
    instance_noise: float = 0.0  # std of Gaussian noise on D's inputs, annealed to 0 over the run
    history: int = 0  # past fakes kept; half of D's fake batch comes from them (Shrivastava)
    ema: float = 0.0  # decay of an exponential moving average of G (0.999); samples use it
    spectral_norm: bool = False  # spectral normalisation of every D layer (Miyato et al.)


@dataclass
class ClassifierConfig:
    lr: float = 1e-3  # Adam
    weight_decay: float = 0.0
    # held-out accuracy is measured clean and under this attack at every evaluation
    eval_attack: AttackMethod = AttackMethod.fgsm
    eval_eps: float = 0.3
    eval_steps: int = 20  # ifgsm/pgd, step 2.5 * eps / steps


@dataclass
class VaeConfig:
    lr: float = 1e-3  # Adam (autoencoders and VAEs)
    beta: float = 1.0  # weight of the KL term (Higgins et al.'s beta-VAE); the ELBO uses 1
    likelihood: Likelihood = Likelihood.auto
    gaussian_std: float = 0.1  # gaussian likelihood: the fixed pixel std


@dataclass
class CycleganConfig:
    # Zhu et al. and their reference implementation's defaults
    generator: CycleganGenerator = CycleganGenerator.auto
    g_features: int = 64  # width of the generators' first layer
    d_features: int = 64  # width of the PatchGAN's first layer
    d_layers: int = 3  # stride-2 layers of the PatchGAN: 3 gives the 70x70 receptive field
    norm: CycleganNorm = CycleganNorm.instance
    dropout: bool = False  # dropout 0.5 in the generators' residual / middle blocks
    init_gain: float = 0.02  # weights drawn from N(0, init_gain)
    gan_loss: CycleganLoss = CycleganLoss.lsgan
    lambda_a: float = 10.0  # weight of the A -> B -> A cycle loss
    lambda_b: float = 10.0  # weight of the B -> A -> B cycle loss
    lambda_identity: float = 0.5  # identity loss weight, relative to lambda_a / lambda_b
    pool_size: int = 50  # past fakes per discriminator; 0: none
    lr: float = 2e-4  # Adam, generators and discriminators
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    decay_start: float = 0.5  # fraction of the run after which the lr decays linearly to 0


@dataclass
class TrainerConfig:
    seed: int = 0
    max_steps: int = 5000
    epochs: int | None = None  # when set, overrides max_steps with epochs * batches per epoch
    batch_size: int = 64
    ckpt_every: int = 1000
    # 32 | bf16 | 16: autocast for the training steps (fp16 with loss scaling); weights and
    # checkpoints stay fp32; the gradient penalty is always fp32
    precision: str = "32"
    keep_last: int = 3  # checkpoints/step_<N>.pt of the K most recent saves (0: only last.pt)
    # speed switches; none changes what is saved: checkpoints load with any of them
    compile: bool = False  # torch.compile the networks (the first steps pay the compile time)
    channels_last: bool = False  # NHWC memory format for image networks (faster convs on GPUs)
    cudnn_benchmark: bool = True  # CUDA: time cuDNN's algorithms once, use the fastest
    # under torchrun: BatchNorm statistics over the global batch instead of each process's
    sync_batchnorm: bool = False


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
    # digit datasets (mnist, fashion_mnist): class coverage, class KL, confidence and FID in
    # the feature space of a reference classifier, trained once by ganlab and cached in data_dir
    classifier_metrics: bool = True
    classifier: str | None = None  # a classifier checkpoint to use instead of the reference
    reference_steps: int = 600  # training steps of the reference classifier (batch 128)
    # any image dataset: FID and KID with the standard Inception network (torchmetrics /
    # torch-fidelity weights). Off in training by default: on a CPU it costs minutes per 10k
    inception: Inception = Inception.off
    inception_weights: str | None = None  # weights-inception-2015-12-05-6726825d.pth


@dataclass
class Config:
    dataset: Any = MISSING
    model: Any = MISSING
    loss: LossConfig = field(default_factory=LossConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    vae: VaeConfig = field(default_factory=VaeConfig)
    cyclegan: CycleganConfig = field(default_factory=CycleganConfig)
    defense: Any = MISSING
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
    "trainer.keep_last": "[0, inf)",
    "log.every": "[0, inf)",
    "log.sample_every": "[0, inf)",
    "log.n_samples": "[1, inf)",
    "eval.every": "[0, inf)",
    "eval.n_samples": "[1, inf)",
    "eval.mode_min_share": "[0, inf)",
    "eval.reference_steps": "[1, inf)",
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
    "gan.d_dropout": "[0, 1)",
    "gan.instance_noise": "[0, inf)",
    "gan.history": "[0, inf)",
    "gan.ema": "[0, 1)",
    "model.embed_dim": "[1, inf)",
    "model.max_features": "[1, inf)",
    "model.min_features": "[1, inf)",
    "model.stage_steps": "[1, inf)",
    "model.fade_fraction": "[0, 1]",
    "model.drift": "[0, inf)",
    "model.dropout": "[0, 1)",
    "model.input_std": "(0, inf)",
    "classifier.lr": "(0, inf)",
    "classifier.weight_decay": "[0, inf)",
    "classifier.eval_eps": "[0, 1]",
    "classifier.eval_steps": "[1, inf)",
    "defense.eps": "[0, 1]",
    "defense.clean_weight": "[0, 1]",
    "defense.step_size": "(0, inf)",
    "defense.steps": "[1, inf)",
    "defense.alpha": "(0, inf)",
    "defense.weight": "[0, inf)",
    "vae.lr": "(0, inf)",
    "vae.beta": "[0, inf)",
    "vae.gaussian_std": "(0, inf)",
    "model.features": "[1, inf)",
    "dataset.crop": "[1, inf)",
    "dataset.load_size": "[1, inf)",
    "dataset.n_test": "[1, inf)",
    "cyclegan.g_features": "[1, inf)",
    "cyclegan.d_features": "[1, inf)",
    "cyclegan.d_layers": "[1, inf)",
    "cyclegan.init_gain": "(0, inf)",
    "cyclegan.lambda_a": "[0, inf)",
    "cyclegan.lambda_b": "[0, inf)",
    "cyclegan.lambda_identity": "[0, inf)",
    "cyclegan.pool_size": "[0, inf)",
    "cyclegan.lr": "(0, inf)",
    "cyclegan.decay_start": "[0, 1]",
    "dataset.max_images": "[1, inf)",
}


# string keys with a fixed set of values (kept as plain strings in the schema)
CHOICES = {
    "dataset.split": ("train", "valid", "test", "all"),
    "trainer.precision": ("32", "bf16", "16"),
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
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and value not in allowed:
            raise UserError(f"{key}={value} is not one of: {', '.join(allowed)}")
    for key in ("model.g_hidden", "model.d_hidden", "model.hidden", "model.channels"):
        for size in OmegaConf.select(cfg, key, default=None) or []:
            if size < 1:
                raise UserError(f"{key} sizes must be at least 1, got {size}")


SCHEMA_PREFIX = "schema_"
# the config folder at the top of the project (an editable install keeps it beside the package)
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="schema_config", node=Config)
    cs.store(group="dataset", name=SCHEMA_PREFIX + "image", node=ImageDatasetConfig)
    cs.store(group="dataset", name=SCHEMA_PREFIX + "toy", node=ToyDatasetConfig)
    cs.store(group="dataset", name=SCHEMA_PREFIX + "synthetic", node=SyntheticDatasetConfig)
    cs.store(group="dataset", name=SCHEMA_PREFIX + "celeba", node=CelebaDatasetConfig)
    cs.store(group="dataset", name=SCHEMA_PREFIX + "unpaired", node=UnpairedDatasetConfig)
    cs.store(group="dataset", name=SCHEMA_PREFIX + "red2blue", node=Red2BlueDatasetConfig)
    cs.store(group="model", name=SCHEMA_PREFIX + "dcgan", node=DcganConfig)
    cs.store(group="model", name=SCHEMA_PREFIX + "mlp_gan", node=MlpGanConfig)
    cs.store(group="model", name=SCHEMA_PREFIX + "cgan", node=CganConfig)
    cs.store(group="model", name=SCHEMA_PREFIX + "progan", node=ProganConfig)
    cs.store(group="model", name=SCHEMA_PREFIX + "softmax", node=SoftmaxConfig)
    cs.store(group="model", name=SCHEMA_PREFIX + "mlp", node=MlpClassifierConfig)
    cs.store(group="model", name=SCHEMA_PREFIX + "lenet", node=LenetConfig)
    cs.store(group="model", name=SCHEMA_PREFIX + "autoencoder", node=AutoencoderConfig)
    cs.store(group="model", name=SCHEMA_PREFIX + "cyclegan", node=CycleganModelConfig)
    for name, node in (("none", NoDefenseConfig), ("fgsm", FgsmDefenseConfig),
                       ("pgd", PgdDefenseConfig), ("mixup", MixupDefenseConfig),
                       ("gradreg", GradRegDefenseConfig)):
        cs.store(group="defense", name=SCHEMA_PREFIX + name, node=node)
    cs.store(name="schema_attack_command", node=AttackCommandConfig)
    for name, node in (("fgsm", FgsmAttackConfig), ("ifgsm", IfgsmAttackConfig),
                       ("pgd", PgdAttackConfig), ("transfer", TransferAttackConfig),
                       ("substitute", SubstituteAttackConfig)):
        cs.store(group="attack", name=SCHEMA_PREFIX + name, node=node)


register_configs()
