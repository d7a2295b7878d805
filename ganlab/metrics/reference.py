"""The reference classifier of the digit datasets, and sample quality measured with it.

GAN losses say little about sample quality, and Inception features mean little for 28-px
digits. So ganlab trains a small LeNet on the real training digits and measures generated
digits in its terms: class coverage, KL of the predicted-class histogram to the data's, mean
confidence, and the Fréchet distance between its penultimate-layer features of fakes and of
real held-out images ("classifier FID").

One reference per dataset and training source, at the dataset's native size (28 px, 1 channel
for mnist and fashion_mnist), whatever a run's image size or class subset: trained on the whole
training split the source gives, its held-out accuracy measured on the dataset's held-out split
and stored beside its weights in data_dir/ganlab_reference/. It is built (about half a minute
on one CPU core) by `python -m ganlab reference`, or announced and built once before a run
trains (`SampleMetrics.prepare`), never in the middle of one. Images of another size or channel
count are brought to the classifier's input (antialiased bilinear resizing; channels averaged
or repeated) before it sees them. A classifier below eval.reference_min_accuracy measures
nothing: one warning, and the classifier metrics are left out of the run.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from ganlab.data.base import Batches, DataSpec, InMemoryDataset
from ganlab.errors import UserError
from ganlab.families.capabilities import Classifier
from ganlab.images import UNIT, to_float
from ganlab.metrics.compare import PRDC_K, FeatureSet, compare
from ganlab.metrics.frechet import class_metrics, label_agreement

log = logging.getLogger("ganlab")

REFERENCE_DATASETS = ("mnist", "fashion_mnist")
NATIVE = {"mnist": (1, 28), "fashion_mnist": (1, 28)}  # (channels, px) of the reference
# a LeNet: two 5x5 conv + max-pool stages, one hidden layer; Adam, batch 128, no augmentation.
# On one CPU core (torch 2.x) a step takes about 0.05 s: 400 steps are 20-30 s, and reach
# 0.96-0.97 held-out accuracy on the 4,500 bundled training digits (0.97+ on MNIST's test split)
REFERENCE_ARCH = {"channels": [16, 32], "hidden": [128]}
REFERENCE_STEPS = 400
REFERENCE_BATCH = 128
REFERENCE_LR = 2e-3
CPU_SECONDS_PER_STEP = 0.06  # for the announcement only
FOLDER = "ganlab_reference"  # under data_dir: the references and the real statistics
BATCH = 500  # images per forward pass when measuring


@dataclass
class ReferenceClassifier:
    model: nn.Module  # [0, 1] images -> logits; an nn.Sequential whose last layer is linear
    description: str  # what it is, for metrics.json (classifier_backbone)
    accuracy: float  # held-out accuracy (classifier_accuracy); nan when it cannot be measured
    input_shape: tuple[int, int, int]  # (C, H, W) the model takes
    path: Path | None = None  # the cache file (or the checkpoint) it came from
    trained_seconds: float | None = None  # when it was trained just now, how long it took

    def adapt(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] float images (or uint8) of any size as the model's input: channels averaged
        (C -> 1) or repeated (1 -> C), then resized with antialiased bilinear interpolation."""
        device = next(self.model.parameters()).device
        x = images.to(device)
        x = to_float(x, UNIT) if x.dtype == torch.uint8 else x.float()
        channels, height, width = self.input_shape
        if x.shape[1] != channels:
            if channels == 1:
                x = x.mean(dim=1, keepdim=True)
            elif x.shape[1] == 1:
                x = x.expand(-1, channels, -1, -1)
            else:
                raise UserError(f"the classifier takes {channels}-channel images; these have "
                                f"{x.shape[1]} channels")
        if tuple(x.shape[-2:]) != (height, width):
            x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True,
                              align_corners=False).clamp_(0, 1)
        return x

    @torch.no_grad()
    def probs_and_features(self, images: torch.Tensor,
                           progress: Callable[[Iterable], Iterable] = iter
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """Softmax outputs and penultimate features of [0, 1] images (or uint8)."""
        self.model.eval()
        body, head = self.model[:-1], self.model[-1]
        probs, feats = [], []
        for start in progress(range(0, len(images), BATCH)):
            f = body(self.adapt(images[start : start + BATCH]))
            feats.append(f.double().cpu())
            probs.append(head(f).softmax(dim=1).cpu())
        return torch.cat(probs), torch.cat(feats)

    @torch.no_grad()
    def measure_accuracy(self, heldout: InMemoryDataset) -> float:
        """Accuracy on labelled held-out images (nan without class labels it can predict)."""
        y = heldout.y
        outputs = self.model[-1].out_features
        if y is None or y.ndim != 1 or len(y) == 0 or int(y.max()) >= outputs:
            return math.nan
        probs, _ = self.probs_and_features(heldout.x)
        return float((probs.argmax(dim=1) == y.cpu()).double().mean())


# --- the cached reference of a digit dataset --------------------------------------------------


def _resolved_source(cfg_dataset, data_dir: Path, download: bool) -> str:
    """dataset.source=auto as what it gives: without download, "full" when the full set is on
    disk (a run already tried to download it), else the bundled digits (mnist)."""
    source = str(getattr(cfg_dataset.source, "value", cfg_dataset.source))
    if source != "auto" or download:
        return source
    from torchvision import datasets

    from ganlab.data import mnist

    cls = datasets.MNIST if cfg_dataset.name == "mnist" else datasets.FashionMNIST
    if mnist._present(mnist._raw_folder(cls, Path(data_dir)), cls):
        return "full"
    return "bundled" if cfg_dataset.name == "mnist" else source


def native_config(cfg_dataset, data_dir: Path, download: bool = False,
                  keep_classes: bool = False):
    """A digit dataset's config at its native size (all classes unless keep_classes)."""
    channels, size = NATIVE[cfg_dataset.name]
    return OmegaConf.merge(cfg_dataset, {
        "image_size": size, "channels": channels,
        "classes": cfg_dataset.get("classes") if keep_classes else None,
        "source": _resolved_source(cfg_dataset, data_dir, download)})


def _source_tag(data: InMemoryDataset) -> str:
    from ganlab.data.mnist import BUNDLED

    return "bundled" if BUNDLED in data.source else "full"


def cache_path(name: str, data: InMemoryDataset, data_dir: Path) -> Path:
    """data_dir/ganlab_reference/<dataset>_<source>_<N>train_<px>px_lenet<widths>.pt"""
    channels, size = NATIVE[name]
    widths = "-".join(map(str, [*REFERENCE_ARCH["channels"], *REFERENCE_ARCH["hidden"]]))
    colour = "" if channels == 1 else f"{channels}ch"
    return (Path(data_dir) / FOLDER /
            f"{name}_{_source_tag(data)}_{len(data)}train_{size}px{colour}_lenet{widths}.pt")


def _lenet(shape: tuple[int, int, int], device: torch.device) -> nn.Sequential:
    from ganlab.models import MODELS

    cfg = OmegaConf.create({"name": "lenet", "input_mean": 0.0, "input_std": 1.0,
                            "dropout": 0.0, **REFERENCE_ARCH})
    spec = DataSpec("reference", "image", tuple(shape), num_classes=10)
    return MODELS.get("lenet")(cfg, spec).to(device)


def _about(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def train_reference(cfg_dataset, data_dir: Path, device: torch.device,
                    steps: int | None = None, force: bool = False,
                    download: bool = False) -> ReferenceClassifier:
    """The reference classifier of a digit dataset: read from its cache file, or trained
    (announced in the log first) and cached. `steps` (default REFERENCE_STEPS) and `force`
    (train again over a cached one) are the `reference` command's; `download`: whether
    dataset.source=auto may try to download the full set (a run has tried already)."""
    from ganlab.checkpoint import save
    from ganlab.data import build_dataset

    if cfg_dataset.name not in REFERENCE_DATASETS:
        raise UserError(f"ganlab has no reference classifier for {cfg_dataset.name} (it has one "
                        f"for {', '.join(REFERENCE_DATASETS)}); give one with "
                        "eval.classifier=PATH or set eval.classifier_metrics=false")
    data_dir = Path(data_dir)
    data = build_dataset(native_config(cfg_dataset, data_dir, download), data_dir, seed=0,
                         heldout=True)
    path = cache_path(cfg_dataset.name, data, data_dir)
    shape = tuple(data.spec.shape)
    if path.is_file() and not force:
        try:
            state = torch.load(path, map_location=device, weights_only=True)
            model = _lenet(shape, device)
            model.load_state_dict(state["model"])
            reference = ReferenceClassifier(model.eval(), state["description"],
                                            float(state["accuracy"]), shape, path)
            log.info("reference classifier: %s (held-out accuracy %.4f)", path,
                     reference.accuracy)
            return reference
        except Exception as e:  # a damaged (or older) cache is rebuilt, never fatal
            log.warning("reference classifier %s is unreadable (%s); training it again",
                        path, type(e).__name__)
    steps = int(steps or REFERENCE_STEPS)
    log.info("building the reference classifier of %s once (a LeNet, %d steps on its %s "
             "training images at %d px: about %s on one CPU core); cached in %s",
             cfg_dataset.name, steps, f"{len(data):,} {_source_tag(data)}", shape[-1],
             _about(steps * CPU_SECONDS_PER_STEP), path)
    started = time.perf_counter()
    # its own seed, and the caller's RNG states (CPU and CUDA) back afterwards: building the
    # reference before (or, for API callers, during) a run must not change that run
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        model = _lenet(shape, device)
        train = InMemoryDataset(data.spec, data.x.to(device), data.y.to(device), data.source)
        batches = Batches(train, min(REFERENCE_BATCH, len(train)), seed=0)
        opt = torch.optim.Adam(model.parameters(), lr=REFERENCE_LR)
        model.train()
        for _ in range(steps):
            x, y = next(batches)
            loss = F.cross_entropy(model(to_float(x, UNIT)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
    seconds = time.perf_counter() - started
    widths = "/".join(map(str, REFERENCE_ARCH["channels"]))
    description = (f"ganlab reference LeNet {widths}-{REFERENCE_ARCH['hidden'][0]}, "
                   f"{steps} steps at {shape[-1]} px on {data.source}")
    reference = ReferenceClassifier(model, description, math.nan, shape, path, seconds)
    reference.accuracy = reference.measure_accuracy(data.heldout)
    save({"model": model.state_dict(), "description": description,
          "accuracy": reference.accuracy, "heldout": data.heldout.source,
          "input_shape": list(shape), "steps": steps, "seconds": seconds}, path)
    log.info("reference classifier of %s: held-out accuracy %.4f on %s (trained in %.0f s on "
             "%s; %s)", cfg_dataset.name, reference.accuracy, data.heldout.source, seconds,
             device, path)
    return reference


def cached_details(path: Path) -> dict:
    """What a reference's cache file records besides the weights (accuracy, steps, seconds)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v for k, v in state.items() if k != "model"}


def load_classifier_checkpoint(cfg_eval, cfg_dataset, data_dir: Path, heldout,
                               device: torch.device) -> ReferenceClassifier:
    """eval.classifier=PATH, its held-out accuracy measured at its own input size on the
    dataset's held-out split (native size for the digits, else the run's)."""
    from ganlab.checkpoint import load_checkpoint

    family = load_checkpoint(cfg_eval.classifier, device)
    if not isinstance(family, Classifier) or not isinstance(family.model, nn.Sequential):
        raise UserError(f"eval.classifier={cfg_eval.classifier} is not a classifier "
                        "checkpoint (train one with model=lenet, mlp or softmax)")
    shape = tuple(family.spec.shape)
    reference = ReferenceClassifier(
        family.model.eval(), f"classifier checkpoint {cfg_eval.classifier} "
        f"({family.config.model.name}, step {family.step}; {shape[-1]} px)", math.nan, shape,
        Path(cfg_eval.classifier))
    if heldout is not None:
        reference.accuracy = reference.measure_accuracy(
            native_heldout(cfg_dataset, data_dir, heldout, all_classes=True))
    return reference


def load_reference(cfg_eval, cfg_dataset, data_dir: Path, device: torch.device,
                   heldout: InMemoryDataset | None = None) -> ReferenceClassifier:
    """eval.classifier=PATH when given, else the cached reference classifier (built on first
    use)."""
    if cfg_eval.classifier:
        return load_classifier_checkpoint(cfg_eval, cfg_dataset, data_dir, heldout, device)
    return train_reference(cfg_dataset, data_dir, device)


def native_heldout(cfg_dataset, data_dir: Path, heldout: InMemoryDataset,
                   all_classes: bool = False) -> InMemoryDataset:
    """A run's held-out images at its dataset's native size: the same images (the held-out
    split does not depend on the image size), built again at that size when the run resized
    them; other datasets' held-out images as they are. all_classes: the whole split, whatever
    dataset.classes keeps."""
    from ganlab.data import build_dataset

    if cfg_dataset.name not in NATIVE:
        return heldout
    channels, size = NATIVE[cfg_dataset.name]
    same_classes = not all_classes or cfg_dataset.get("classes") is None
    if tuple(heldout.x.shape[1:]) == (channels, size, size) and same_classes:
        return heldout
    native = native_config(cfg_dataset, Path(data_dir), keep_classes=not all_classes)
    return build_dataset(native, Path(data_dir), seed=0, heldout=True).heldout


class LeftOut:
    """Stands in for a ClassifierSpace whose classifier failed its accuracy check."""

    def measure(self, fakes: torch.Tensor, progress: Callable[[Iterable], Iterable] = iter,
                labels: torch.Tensor | None = None) -> dict:
        return {}


LEFT_OUT = LeftOut()


def classifier_space(cfg_eval, cfg_dataset, data_dir: Path, heldout: InMemoryDataset,
                     min_share: float, device: torch.device) -> ClassifierSpace | None:
    """The classifier space of a run (what SampleMetrics.prepare builds): its classifier loaded
    or built, its held-out accuracy checked, the real statistics of the run's held-out images
    at native size. None, after one warning, when the accuracy is below
    eval.reference_min_accuracy."""
    data_dir = Path(data_dir)
    reference = load_reference(cfg_eval, cfg_dataset, data_dir, device, heldout)
    minimum = float(cfg_eval.get("reference_min_accuracy", 0.9))
    if not reference.accuracy >= minimum:  # nan (not measurable) fails too
        what = (f"eval.classifier={cfg_eval.classifier}" if cfg_eval.classifier
                else str(reference.path))
        reached = ("an unmeasurable" if math.isnan(reference.accuracy)
                   else f"only {reference.accuracy:.2f}")
        log.warning("reference classifier %s reaches %s held-out accuracy "
                    "(< eval.reference_min_accuracy=%g): classifier metrics left out%s", what,
                    reached, minimum,
                    "" if cfg_eval.classifier else
                    f" (python -m ganlab reference dataset={cfg_dataset.name} force=true "
                    f"steps={2 * REFERENCE_STEPS} trains a better one)")
        return None
    real = native_heldout(cfg_dataset, data_dir, heldout)
    return ClassifierSpace(reference, real, min_share, data_dir / FOLDER)


class ClassifierSpace:
    """Sample quality of generated digits, measured against real held-out digits."""

    def __init__(self, reference: ReferenceClassifier, real: InMemoryDataset,
                 min_share: float, cache_dir: Path | None = None) -> None:
        self.reference = reference
        self.real_source = real.source
        self.n_real = len(real)
        self.min_share = min_share
        counts = torch.bincount(real.y.cpu(), minlength=reference.model[-1].out_features)
        self.data_histogram = counts.double() / counts.sum()
        self.real = self._real_features(real, cache_dir)

    def _real_features(self, real: InMemoryDataset, cache_dir: Path | None) -> FeatureSet:
        """The real images' features, cached per classifier and held-out set."""
        from ganlab.data.imagefiles import read_cache, write_cache

        key = "|".join([self.reference.description, f"{self.reference.accuracy:.6f}",
                        real.source, str(len(real)), str(tuple(real.x.shape[1:])),
                        str(self.data_histogram.tolist())])
        path = (cache_dir / f"real_features_{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"
                if cache_dir is not None else None)

        def check(blob) -> None:
            if not isinstance(blob.get("features"), torch.Tensor):
                raise ValueError("no features")

        blob = read_cache(path, "classifier features", check) if path is not None else None
        if blob is not None:
            return FeatureSet.of(blob["features"].double())
        _, features = self.reference.probs_and_features(real.x)
        if path is not None:
            write_cache(path, {"features": features}, "classifier features")
        return FeatureSet.of(features)

    def measure(self, fakes: torch.Tensor, progress: Callable[[Iterable], Iterable] = iter,
                labels: torch.Tensor | None = None) -> dict:
        """fakes: [0, 1] images (N, C, H, W) or uint8, of any size (resized to the
        classifier's); labels: the classes a conditional generator was asked for. Class
        coverage/KL/confidence, the label agreement (with labels), then FID, precision/recall/
        density/coverage and the Inception Score (the "MNIST IS") in the classifier's terms,
        all prefixed classifier_, then what they were measured with."""
        probs, features = self.reference.probs_and_features(fakes, progress)
        out: dict = class_metrics(probs, self.data_histogram, self.min_share)
        if labels is not None:
            out.update(label_agreement(probs, labels, self.data_histogram))
        wanted = {"fid", "is"} | ({"prdc"} if min(len(fakes), self.n_real) > PRDC_K else set())
        measured = compare(FeatureSet.of(features, probs.double()), self.real, wanted)
        out.update({f"classifier_{key}": value for key, value in measured.items()})
        out["classifier_accuracy"] = float(self.reference.accuracy)
        out["classifier_backbone"] = self.reference.description
        out["classifier_real_images"] = self.n_real
        out["classifier_fake_images"] = len(fakes)
        out["classifier_reference_split"] = self.real_source
        return out
