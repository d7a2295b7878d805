"""The reference classifier of the digit datasets, and sample quality measured with it.

GAN losses say little about sample quality, and Inception features mean little for 28-px
digits. So ganlab trains a small LeNet on the real training digits once (cached in
data_dir/ganlab_reference/) and measures generated digits in its terms: class coverage, KL of
the predicted-class histogram to the data's, mean confidence, and the Fréchet distance between
its penultimate-layer features of fakes and of real held-out images ("classifier FID").
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn

from ganlab.data.base import Batches, InMemoryDataset
from ganlab.errors import UserError
from ganlab.families.capabilities import Classifier
from ganlab.images import UNIT, to_float
from ganlab.metrics.frechet import class_metrics, feature_stats, frechet_distance

log = logging.getLogger("ganlab")

REFERENCE_DATASETS = ("mnist", "fashion_mnist")
REFERENCE_ARCH = {"channels": [32, 64], "hidden": [128]}
BATCH = 500  # images per forward pass when measuring


@dataclass
class ReferenceClassifier:
    model: nn.Module  # [0, 1] images -> logits; an nn.Sequential whose last layer is linear
    description: str  # what it is, for metrics.json: where it came from, its accuracy

    @torch.no_grad()
    def probs_and_features(self, images: torch.Tensor,
                           progress: Callable[[Iterable], Iterable] = iter
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """Softmax outputs and penultimate features of [0, 1] images (or uint8)."""
        self.model.eval()
        body, head = self.model[:-1], self.model[-1]
        probs, feats = [], []
        for start in progress(range(0, len(images), BATCH)):
            x = images[start : start + BATCH]
            f = body(to_float(x, UNIT) if x.dtype == torch.uint8 else x)
            feats.append(f.double().cpu())
            probs.append(head(f).softmax(dim=1).cpu())
        return torch.cat(probs), torch.cat(feats)


def _reference_config(cfg_dataset, steps: int):
    """A classifier training config: a LeNet with REFERENCE_ARCH on all classes."""
    from omegaconf import open_dict

    from ganlab.config import compose

    cfg = compose(["model=lenet", "defense=none"])
    with open_dict(cfg):
        cfg.dataset = OmegaConf.merge(cfg_dataset, {"classes": None})
    cfg.model.merge_with(REFERENCE_ARCH)
    cfg.trainer.max_steps, cfg.trainer.batch_size = steps, 128
    cfg.eval.n_samples = 10_000
    return cfg


def _cache_path(cfg_dataset, data_dir: Path, n_train: int, steps: int) -> Path:
    name = (f"{cfg_dataset.name}_{cfg_dataset.image_size}px_{n_train}train_"
            f"lenet{'-'.join(map(str, REFERENCE_ARCH['channels']))}_{steps}steps.pt")
    return data_dir / "ganlab_reference" / name


def train_reference(cfg_dataset, data_dir: Path, device: torch.device,
                    steps: int) -> ReferenceClassifier:
    """The cached reference classifier of a digit dataset, trained on first use."""
    from ganlab.checkpoint import save
    from ganlab.data import build_dataset
    from ganlab.families.classifier import ClassifierFamily

    if cfg_dataset.name not in REFERENCE_DATASETS:
        raise UserError(f"ganlab has no reference classifier for {cfg_dataset.name}; give one "
                        "with eval.classifier=PATH or set eval.classifier_metrics=false")
    cfg = _reference_config(cfg_dataset, steps)
    data = build_dataset(cfg.dataset, data_dir, seed=0, heldout=True)
    path = _cache_path(cfg_dataset, data_dir, len(data), steps)
    family = ClassifierFamily(cfg, data.spec, device)
    if path.is_file():
        try:
            state = torch.load(path, map_location=device, weights_only=True)
            family.model.load_state_dict(state["model"])
            return ReferenceClassifier(family.model.eval(), state["description"])
        except Exception as e:  # a damaged cache is rebuilt, never fatal
            log.warning("reference classifier %s is unreadable (%s); training it again",
                        path, type(e).__name__)
    log.info("training the reference classifier of %s once (%d steps; cached in %s)",
             cfg_dataset.name, steps, path)
    # its own seed, and the caller's RNG states (CPU and CUDA) back afterwards: training the
    # reference in the middle of a GAN run must not change that run's trajectory
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        data = data.to(device)
        batches = Batches(data, min(128, len(data)), seed=0)
        family.train()
        for _ in range(steps):
            family.train_step(next(batches))
        family.use_heldout(data.heldout)
        accuracy = family.evaluate()["accuracy"]
    description = (f"ganlab reference LeNet ({cfg_dataset.name}, {len(data):,} training images, "
                   f"{steps} steps; held-out accuracy {accuracy:.4f} on {data.heldout.source})")
    save({"model": family.model.state_dict(), "description": description}, path)
    log.info("%s", description)
    return ReferenceClassifier(family.model.eval(), description)


def load_reference(cfg_eval, cfg_dataset, data_dir: Path,
                   device: torch.device) -> ReferenceClassifier:
    """eval.classifier=PATH when given, else the cached reference classifier."""
    if cfg_eval.classifier:
        from ganlab.checkpoint import load_checkpoint

        family = load_checkpoint(cfg_eval.classifier, device)
        if not isinstance(family, Classifier) or not isinstance(family.model, nn.Sequential):
            raise UserError(f"eval.classifier={cfg_eval.classifier} is not a classifier "
                            "checkpoint (train one with model=lenet, mlp or softmax)")
        return ReferenceClassifier(family.model, f"classifier checkpoint {cfg_eval.classifier} "
                                                 f"({family.config.model.name}, step "
                                                 f"{family.step})")
    return train_reference(cfg_dataset, data_dir, device, cfg_eval.reference_steps)


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
        self.real_mu, self.real_sigma = self._real_stats(real, cache_dir)

    def _real_stats(self, real: InMemoryDataset, cache_dir: Path | None):
        """The real images' feature statistics, cached per classifier and held-out set."""
        key = "|".join([self.reference.description, real.source, str(len(real)),
                        str(self.data_histogram.tolist())])
        path = (cache_dir / f"real_stats_{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"
                if cache_dir is not None else None)
        if path is not None and path.is_file():
            try:
                stats = torch.load(path, weights_only=True)
                return stats["mu"].numpy(), stats["sigma"].numpy()
            except Exception as e:  # recomputed below, never fatal
                log.warning("cached real statistics %s are unreadable (%s)", path,
                            type(e).__name__)
        _, features = self.reference.probs_and_features(real.x)
        mu, sigma = feature_stats(features)
        if path is not None:
            from ganlab.checkpoint import save

            save({"mu": torch.from_numpy(mu), "sigma": torch.from_numpy(sigma)}, path)
        return mu, sigma

    def measure(self, fakes: torch.Tensor,
                progress: Callable[[Iterable], Iterable] = iter) -> dict:
        """fakes: [0, 1] images (N, C, H, W). Numbers, then what they were measured with."""
        probs, features = self.reference.probs_and_features(fakes, progress)
        mu, sigma = feature_stats(features)
        out: dict = class_metrics(probs, self.data_histogram, self.min_share)
        out["classifier_fid"] = frechet_distance(mu, sigma, self.real_mu, self.real_sigma)
        out["classifier_backbone"] = self.reference.description
        out["classifier_real_images"] = self.n_real
        out["classifier_fake_images"] = len(fakes)
        out["classifier_reference_split"] = self.real_source
        return out
