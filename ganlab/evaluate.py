"""`python -m ganlab eval run=outputs/<run> [ckpt=last|best] [n_samples=N] [truncation=psi]`

Runs every metric that applies to the run's family on its checkpoint (classifier-space metrics
for generated digits, mode coverage on the toys, held-out ELBO for VAEs, held-out accuracy for
classifiers), prints them, and writes <run>/eval_<ckpt>.json (or `out=`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import MISSING
from tqdm import tqdm

from ganlab import checkpoint
from ganlab.commandline import parse_options
from ganlab.errors import UserError
from ganlab.families.capabilities import Sampler, Translator, check_truncation, truncation
from ganlab.metrics.samples import SampleMetrics, wants_heldout
from ganlab.runtime import flush_denormals

PROBE = 500  # samples timed first, for the estimate


@dataclass
class EvalCommandConfig:
    run: str = MISSING  # a run dir or a checkpoint file
    ckpt: str = "last"  # with a run dir: last or best
    n_samples: int | None = None  # default: the run's eval.n_samples
    classifier: str | None = None  # a classifier checkpoint instead of the reference one
    inception: str = "auto"  # FID/KID with Inception: auto (weights on disk), on, off
    inception_weights: str | None = None
    data_dir: str | None = None  # default: the data_dir the run was trained with
    device: str = "cpu"
    out: str | None = None  # default: <run>/eval_<ckpt>.json
    # VAEs: -log p(x) on held-out images by importance sampling, k samples each (Burda et al.
    # use 5000); null: the run's eval.iwae_k (0: not measured)
    iwae_k: int | None = None
    truncation: float = 1.0  # the sample metrics under the truncation trick (stylegan, biggan)


def parse(args: list[str]) -> EvalCommandConfig:
    cfg = parse_options(EvalCommandConfig, args, "eval")
    # key=value parsing reads a bare on/off as YAML 1.1 booleans
    cfg.inception = {"True": "on", "False": "off"}.get(cfg.inception, cfg.inception)
    if cfg.ckpt not in ("last", "best"):
        raise UserError(f"eval: ckpt must be last or best, got {cfg.ckpt!r}")
    if cfg.inception not in ("auto", "on", "off"):
        raise UserError(f"eval: inception must be auto, on or off, got {cfg.inception!r}")
    if cfg.n_samples is not None and cfg.n_samples < 1:
        raise UserError(f"eval: n_samples must be at least 1, got {cfg.n_samples}")
    if cfg.iwae_k is not None and cfg.iwae_k < 1:
        raise UserError(f"eval: iwae_k must be at least 1, got {cfg.iwae_k}")
    check_truncation(cfg.truncation, "eval")
    return cfg  # type: ignore[return-value]


def checkpoint_file(run: str, which: str) -> Path:
    path = Path(run).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / (checkpoint.BEST if which == "best" else checkpoint.LAST)
        if not path.is_file() and which == "best":
            raise UserError(f"{path} does not exist: the run kept no best checkpoint (it needs "
                            "an evaluation with a primary metric); use ckpt=last")
    return checkpoint.resolve_path(path)


def main(args: list[str]) -> None:
    from ganlab.data import build_dataset
    from ganlab.families import FAMILIES
    from ganlab.train import resolve_device

    cfg = parse(args)
    flush_denormals()  # as in training: denormals slow CPU inference up to 100x
    path = checkpoint_file(cfg.run, cfg.ckpt)
    device = resolve_device(cfg.device)
    overrides: dict = {"eval": {"inception": cfg.inception,
                                "inception_weights": cfg.inception_weights}}
    if cfg.classifier:
        overrides["eval"]["classifier"] = cfg.classifier
    if cfg.iwae_k is not None:
        overrides["eval"]["iwae_k"] = cfg.iwae_k
    family = checkpoint.load_checkpoint(path, device, overrides)
    truncation(family, cfg.truncation, str(path), "eval")  # refused here, before any work
    train_cfg = family.config
    n = cfg.n_samples or int(train_cfg.eval.n_samples)
    heldout = None
    if FAMILIES.get(train_cfg.model.family).wants_heldout(train_cfg) or wants_heldout(train_cfg):
        data = build_dataset(train_cfg.dataset, Path(cfg.data_dir or train_cfg.data_dir),
                             train_cfg.trainer.seed, heldout=True)
        heldout = data.heldout.to(device)
        family.use_heldout(heldout)
    if cfg.data_dir:  # the reference classifier and the caches live in data_dir too
        from omegaconf import OmegaConf

        train_cfg = OmegaConf.merge(train_cfg, {"data_dir": cfg.data_dir})
    samples = (SampleMetrics(train_cfg, family.spec, heldout, device)
               if isinstance(family, (Sampler, Translator)) else None)
    if samples is not None:  # the reference classifier: loaded, or built and announced, first
        import logging
        import sys

        logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
        samples.prepare()

    def evaluate(count: int) -> dict:
        family.eval_samples = count  # a family's own held-out metrics
        with truncation(family, cfg.truncation, str(path), "eval"):
            metrics = family.evaluate()
            if samples is not None:
                samples.n_samples = count
                metrics.update(samples.measure(family))
        return metrics

    print(f"evaluating {train_cfg.model.name} ({train_cfg.model.family}) at step {family.step} "
          f"from {path}")

    # a first small pass builds what is cached (the reference classifier, real statistics);
    # a second one is timed for the estimate
    evaluate(min(n, PROBE))
    if n > PROBE:
        started = time.perf_counter()
        evaluate(min(n, PROBE))
        seconds = (time.perf_counter() - started) * n / PROBE
        print(f"{n:,} samples: about {seconds:.0f} s on {device}", flush=True)
    if samples is not None:
        samples.progress = lambda chunks: tqdm(chunks, unit="batch", leave=False)
    with torch.no_grad():
        metrics = evaluate(n)
    if not metrics:
        raise UserError(f"no metric applies to {train_cfg.model.name} on "
                        f"{train_cfg.dataset.name}")
    result = {"checkpoint": str(path), "step": family.step, "n_samples": n,
              **({"truncation": cfg.truncation} if cfg.truncation != 1 else {}), **metrics}
    out = Path(cfg.out) if cfg.out else path.parent.parent / f"eval_{cfg.ckpt}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    for key, value in metrics.items():
        shown = f"{value:.4f}" if isinstance(value, float) else value
        print(f"  {key}: {shown}")
    print(f"wrote {out}")
