"""`python -m ganlab reference dataset=mnist [dataset.source=bundled] [data_dir=...]
[device=cpu] [steps=N] [force=true]`

Builds the reference classifier of a digit dataset (the one its classifier metrics measure
with), or reports the cached one: its held-out accuracy, how long it took to train, and where
it is cached. A run builds it itself before it trains when it is missing; this command does it
ahead of time, on a machine of your choice, or again (force=true) with another budget.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from ganlab.commandline import parse_options
from ganlab.config import EvalConfig, ImageDatasetConfig, Source
from ganlab.errors import UserError
from ganlab.metrics.reference import REFERENCE_DATASETS, REFERENCE_STEPS


@dataclass
class ReferenceDataset:
    name: str = "mnist"  # mnist or fashion_mnist
    source: Source = Source.auto  # auto | full | bundled (mnist), as for training


@dataclass
class ReferenceCommandConfig:
    dataset: ReferenceDataset = field(default_factory=ReferenceDataset)
    data_dir: str | None = None  # default: $GANLAB_DATA, else data
    device: str = "cpu"
    steps: int = REFERENCE_STEPS  # training steps (batch 128) when it is built
    force: bool = False  # build it again even when it is cached


def parse(args: list[str]) -> ReferenceCommandConfig:
    # dataset=NAME is short for dataset.name=NAME, as in `train`
    args = [f"dataset.name={a.split('=', 1)[1]}" if a.startswith("dataset=") else a
            for a in args]
    cfg = parse_options(ReferenceCommandConfig, args, "reference")
    if cfg.dataset.name not in REFERENCE_DATASETS:
        raise UserError(f"reference: ganlab has reference classifiers for "
                        f"{', '.join(REFERENCE_DATASETS)}, not {cfg.dataset.name!r}")
    if cfg.steps < 1:
        raise UserError(f"reference: steps must be at least 1, got {cfg.steps}")
    return cfg  # type: ignore[return-value]


def main(args: list[str]) -> None:
    from ganlab.metrics.reference import cached_details, train_reference
    from ganlab.runtime import flush_denormals
    from ganlab.train import resolve_device

    cfg = parse(args)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    flush_denormals()
    device = resolve_device(cfg.device)
    data_dir = Path(cfg.data_dir or os.environ.get("GANLAB_DATA") or "data").expanduser()
    dataset = OmegaConf.structured(ImageDatasetConfig(name=cfg.dataset.name,
                                                      source=cfg.dataset.source))
    reference = train_reference(dataset, data_dir, device, steps=cfg.steps, force=cfg.force,
                                download=True)
    details = cached_details(reference.path)
    steps, seconds = details.get("steps"), details.get("seconds", math.nan)
    how = (f"trained now: {steps} steps in {reference.trained_seconds:.1f} s on {device}"
           if reference.trained_seconds is not None else
           f"cached: {steps} steps, trained in {seconds:.1f} s; force=true trains it again")
    print(f"reference classifier of {cfg.dataset.name}: {reference.description}")
    print(f"  held-out accuracy: {reference.accuracy:.4f} on {details.get('heldout')}")
    print(f"  {how}")
    print(f"  {reference.path}")
    minimum = EvalConfig().reference_min_accuracy
    if not reference.accuracy >= minimum:
        print(f"  below eval.reference_min_accuracy's default {minimum}: runs leave its metrics "
              f"out (steps={2 * cfg.steps} force=true trains longer)")
