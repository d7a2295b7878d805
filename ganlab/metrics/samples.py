"""Sample-quality metrics of any family that draws samples (a capabilities.Sampler): mode
coverage on the 2-D toys, class coverage / confidence / FID in a reference classifier's
feature space on digits (and, for a conditional sampler, how often a sample is the class it
was asked for), Inception FID/KID on any image data.

The loop and the `eval` command build one `SampleMetrics` from the run's config and call
`measure(family)`; families hold no metric code, disk caches or reference networks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from ganlab.config import Inception
from ganlab.errors import UserError
from ganlab.families.capabilities import HeldoutTranslations, Sampler, Translator, num_classes

log = logging.getLogger("ganlab")

CHUNK = 1000  # samples generated at once


def inception_weights(cfg_eval) -> Path | None:
    """Resolved when the metrics are built, so missing weights with eval.inception=on stop a
    run before it trains; None when Inception metrics are off or (auto) the weights are
    absent."""
    from ganlab.metrics.inception import weights_path

    mode = cfg_eval.inception
    if mode == Inception.off:
        if cfg_eval.inception_weights:
            raise UserError("eval.inception_weights is set but eval.inception=off; "
                            "set eval.inception=on or auto")
        return None
    path = weights_path(cfg_eval.inception_weights, download=mode == Inception.on)
    if path is None:
        log.info("eval.inception=auto: no Inception weights on disk, so no FID/KID "
                 "(eval.inception=on downloads them)")
    return path


def draw_images(family: Sampler, n: int, seed: int) -> torch.Tensor:
    """n samples as uint8 images (like the real images and the saved samples), drawn from a
    generator of their own seeded with `seed` (the global RNG is left alone), on the family's
    device; a conditional family draws its classes in turn."""
    return draw_labelled_images(family, n, seed)[0]


def draw_labelled_images(family: Sampler, n: int,
                         seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """draw_images, and the labels a conditional family was asked for (0, 1, ..., K-1, 0, ...;
    None for an unconditional one)."""
    z = family.sample_noise(n, torch.Generator().manual_seed(seed))
    k = num_classes(family)
    labels = torch.arange(n) % k if k else None
    with torch.no_grad():
        images = torch.cat([
            family.to_uint8(family.generate(z[i : i + CHUNK]) if labels is None else
                            family.generate(z[i : i + CHUNK], labels=labels[i : i + CHUNK]))
            for i in range(0, len(z), CHUNK)])
    return images, labels


def uses_classifier(cfg_eval, cfg_dataset) -> bool:
    """Classifier-space metrics: on the digit datasets, or with eval.classifier given."""
    from ganlab.metrics.reference import REFERENCE_DATASETS

    return bool(cfg_eval.classifier_metrics) and (
        cfg_dataset.name in REFERENCE_DATASETS or cfg_eval.classifier is not None)


def wants_heldout(cfg) -> bool:
    """Whether the sample metrics compare with real held-out images under this config."""
    return "image_size" in cfg.dataset and (
        uses_classifier(cfg.eval, cfg.dataset)
        or cfg.eval.inception != Inception.off)


class SampleMetrics:
    """The metrics of `eval.*` for one run: `measure(family)` draws eval.n_samples samples
    from a fixed seed (trainer.seed + 2, its own generator: measuring never moves the
    training RNG) and compares them with the held-out real data."""

    def __init__(self, cfg, spec, heldout, device: torch.device) -> None:
        self.cfg_eval, self.cfg_dataset = cfg.eval, cfg.dataset
        self.data_dir = Path(cfg.data_dir)
        self.spec, self.heldout, self.device = spec, heldout, device
        self.seed = int(cfg.trainer.seed) + 2
        self.n_samples = int(cfg.eval.n_samples)
        self.mode_min_share = float(cfg.eval.mode_min_share)
        # images: generated ones, or translations between two image domains ("unpaired")
        self.weights = (inception_weights(cfg.eval)
                        if spec.kind in ("image", "unpaired", "paired") else None)
        self.classifier = spec.kind == "image" and uses_classifier(cfg.eval, cfg.dataset)
        # the `eval` command wraps the chunked work in a progress bar
        self.progress: Callable[[Iterable], Iterable] = iter
        # built on first use: the reference classifier may need training first
        self._classifier_space = self._inception_space = None
        self._translation_spaces: dict = {}  # per direction: its target domain's features
        self._inception_net = None

    def applies(self) -> bool:
        if self.spec.kind == "points":
            return bool(self.spec.modes)
        return self.heldout is not None and (self.classifier or self.weights is not None)

    def measure(self, family) -> dict[str, float]:
        """Not under no_grad: the first call may train the reference classifier."""
        if isinstance(family, Translator):
            if self.weights is None or not isinstance(family, HeldoutTranslations):
                return {}
            return self._translations(family)
        if not isinstance(family, Sampler):
            return {}
        if self.spec.kind == "points":
            if not self.applies():
                return {}
            generator = torch.Generator().manual_seed(self.seed)
            z = family.sample_noise(self.n_samples, generator)
            with torch.no_grad():
                return self._modes(family.generate(z).float().cpu())
        if self.heldout is None:
            return {}
        if self.spec.kind == "voxels":  # 3-D shapes: IoU and occupancy, no image metrics
            from ganlab.metrics.voxels import shape_metrics

            fakes = draw_images(family, self.n_samples, self.seed)
            return shape_metrics(fakes, self.heldout.x, self.progress, self.heldout.y,
                                 self.spec.class_names)
        from ganlab.metrics.sharpness import sharpness_ratio

        fakes, labels = draw_labelled_images(family, self.n_samples, self.seed)
        # blur: the samples' Laplacian variance over the held-out images' (1: as sharp)
        metrics: dict = {"sharpness": sharpness_ratio(fakes, self.heldout.x[: self.n_samples])}
        if self.classifier:
            metrics.update(self._classifier().measure(fakes, self.progress, labels))
        if self.weights is not None:
            metrics.update(self._inception().measure(fakes, self.progress))
        return metrics

    def _translations(self, family: HeldoutTranslations) -> dict[str, float]:
        """Inception FID/KID of the translated held-out inputs against the real held-out images
        of the target domain (up to eval.n_samples per direction). One direction (pix2pix and
        the paired families): fid, kid_mean, kid_std. Two (CycleGAN): the same per direction
        (fid_AtoB, ...) and their mean FID, fid_translation, the run's primary metric."""
        import dataclasses

        from ganlab.data.base import InMemoryDataset
        from ganlab.metrics.inception import InceptionNet, InceptionSpace

        pairs = family.heldout_pairs()
        for direction, (_, real) in pairs.items():
            if direction not in self._translation_spaces:
                if self._inception_net is None:
                    self._inception_net = InceptionNet(self.weights, self.device)
                spec = dataclasses.replace(self.spec, kind="image", shape=tuple(real.shape[1:]))
                name = f"{self.heldout.source}: {direction[-1]}"  # the target domain
                self._translation_spaces[direction] = InceptionSpace(
                    self._inception_net, InMemoryDataset(spec, real, name),
                    self.data_dir / "ganlab_reference")
        metrics: dict = {}
        for direction, (inputs, _) in pairs.items():
            images = inputs[: self.n_samples]
            with torch.no_grad():
                fakes = torch.cat([family.translate(images[i : i + CHUNK], direction)
                                   for i in range(0, len(images), CHUNK)])
            measured = self._translation_spaces[direction].measure(fakes, self.progress)
            suffix = f"_{direction}" if len(pairs) > 1 else ""
            for key in ("fid", "kid_mean", "kid_std"):
                metrics[key + suffix] = measured[key]
            metrics["inception_backbone"] = measured["inception_backbone"]
        if len(pairs) > 1:
            metrics["fid_translation"] = sum(metrics[f"fid_{d}"] for d in pairs) / len(pairs)
        return metrics

    def _modes(self, points: torch.Tensor) -> dict[str, float]:
        from ganlab.metrics.toy import mode_metrics

        return mode_metrics(points, torch.tensor(self.spec.modes), self.spec.mode_std,
                            self.mode_min_share)

    def prepare(self) -> None:
        """What the metrics need, loaded or built before a run trains (the loop) or before
        the `eval` command measures: the reference classifier (one log line before it is
        built: what, about how long, where it is cached), its held-out accuracy checked
        against eval.reference_min_accuracy (below it: one warning, and no classifier metrics
        in any evaluation of this run), and the real images' statistics. Idempotent;
        measure() calls it when nobody did."""
        if not (self.classifier and self.heldout is not None) or self._classifier_space:
            return
        from ganlab.metrics.reference import classifier_space

        self._classifier_space = classifier_space(self.cfg_eval, self.cfg_dataset,
                                                  self.data_dir, self.heldout,
                                                  self.mode_min_share, self.device)
        if self._classifier_space is None:  # refused, with its warning
            self.classifier = False

    def _classifier(self):
        from ganlab.metrics.reference import LEFT_OUT

        self.prepare()
        return self._classifier_space or LEFT_OUT

    def _inception(self):
        if self._inception_space is None:
            from ganlab.metrics.inception import InceptionNet, InceptionSpace

            self._inception_space = InceptionSpace(InceptionNet(self.weights, self.device),
                                                   self.heldout,
                                                   self.data_dir / "ganlab_reference")
        return self._inception_space
