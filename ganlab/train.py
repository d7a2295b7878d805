"""The single training entrypoint: compose the config, build the parts, run the loop."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from ganlab.amp import Amp
from ganlab.checkpoint import LAST, seed_everything
from ganlab.config import CONF_DIR, check_ranges  # importing config registers the schema
from ganlab.data import build_dataset
from ganlab.data.stream import place
from ganlab.distributed import Replicas, sync_batchnorm
from ganlab.errors import UserError, fail
from ganlab.families import FAMILIES, check_family_data
from ganlab.families.capabilities import Sampler, Translator
from ganlab.loop import Loop
from ganlab.metrics import primary_metric
from ganlab.metrics.samples import SampleMetrics, wants_heldout
from ganlab.plugins import discover
from ganlab.preflight import RESUME_AUTO
from ganlab.provenance import command_line, source_version
from ganlab.runtime import flush_denormals, speed_switches
from ganlab.sweep import LAUNCH, objective, objective_name, optimising, to_train_log
from ganlab.trackers import check_tracker

log = logging.getLogger("ganlab")
discover()  # every family, dataset and loss registers its config schema before Hydra composes




def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise UserError(f"unknown device {name!r}; choose one of: auto, cpu, cuda, cuda:N, mps"
                        ) from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={name} but CUDA is not available here; use device=auto or cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device={name} but MPS is not available here; use device=auto or cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"unsupported device {name!r}; choose one of: auto, cpu, cuda, cuda:N, mps")
    return device


def train(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> dict[str, float]:
    check_ranges(cfg)  # preflight checked already; this serves callers that skip it
    check_family_data(cfg)
    check_tracker(cfg)
    replicas = Replicas()
    device = replicas.device(resolve_device(cfg.device))
    flush_denormals()
    seed_everything(cfg.trainer.seed)  # the same on every replica: identical initial networks
    family_cls = FAMILIES.get(cfg.model.family)
    with replicas.main_first():  # under torchrun, one process downloads and caches
        data = build_dataset(cfg.dataset, Path(cfg.data_dir), cfg.trainer.seed,
                             heldout=family_cls.wants_heldout(cfg) or wants_heldout(cfg),
                             mapped=True)
    log.info("data: %s", data.source)
    data = place(data, device, cfg.data.max_device_bytes)  # the held-out split on the device
    family = family_cls(cfg, data.spec, device)
    family.amp = Amp(str(cfg.trainer.precision), device.type,
                     replicas=replicas if replicas.active else None)
    prepare_networks(family, cfg, device, replicas)
    if data.heldout is not None:
        log.info("held-out data: %s", data.heldout.source)
        family.use_heldout(data.heldout)
    log.info("model: %s (%s family) on %s; run dir %s", cfg.model.name, cfg.model.family,
             device, run_dir)
    if replicas.active:
        log.info("torchrun: %d processes, batch %d each (%d in all)", replicas.world,
                 cfg.trainer.batch_size, replicas.world * cfg.trainer.batch_size)
    # sample-quality metrics (eval.*) for every family that draws samples
    sample_metrics = (SampleMetrics(cfg, data.spec, data.heldout, device)
                      if isinstance(family, (Sampler, Translator)) else None)
    if sample_metrics is not None and replicas.is_main:  # only the main process measures
        # before the first step: the reference classifier is loaded, or built with a log line
        # saying so (its RNG forked: the run's trajectory does not change)
        sample_metrics.prepare()
    loop = Loop(cfg, family, data, run_dir, overrides, replicas=replicas,
                sample_metrics=sample_metrics)
    return loop.run(resume=resume_path(cfg.resume, run_dir))


def prepare_networks(family, cfg: DictConfig, device: torch.device, replicas: Replicas) -> None:
    """What the runtime does to every network of a family: SyncBatchNorm, one initial state
    across replicas, then channels_last and torch.compile (in place, names unchanged)."""
    networks = family.networks()
    if cfg.trainer.sync_batchnorm:
        sync_batchnorm(networks, device)
        if not replicas.active:
            log.info("trainer.sync_batchnorm: one process, so nothing to synchronise")
    replicas.broadcast(networks.values())
    speed_switches(networks, cfg.trainer, device, set(family.double_backward))


def resume_path(resume: str | None, run_dir: Path) -> str | None:
    """resume=auto (a requeued cluster job, say): continue this run dir's own checkpoint if
    it has one, else start fresh."""
    if resume != RESUME_AUTO:
        return resume
    last = run_dir / "checkpoints" / LAST
    if last.is_file():
        log.info("resume=auto: continuing %s", last)
        return str(last)
    log.info("resume=auto: no checkpoint in %s yet; starting a new run", run_dir)
    return None


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    """The task function. It returns the run's primary metric, negated when higher is better
    (fid as it is, -accuracy): lower is always better, so a sweeper that optimises
    (hydra/sweeper=optuna) minimises it. A job that failed returns None (Optuna: a failed
    trial), as does a run without a primary metric outside such a sweeper."""
    LAUNCH.task_started = True
    hydra_cfg = HydraConfig.get()
    overrides = [o for o in hydra_cfg.overrides.task if not o.startswith("resume=")]
    log.info("command: %s", command_line(list(hydra_cfg.overrides.task)))
    log.info("source: %s", source_version())
    optimised = hydra_cfg.mode == RunMode.MULTIRUN and optimising(hydra_cfg.get("sweeper"))
    try:
        metrics = train(cfg, Path(hydra_cfg.runtime.output_dir), overrides)
        value = objective(metrics, required=optimised)
    except UserError as e:
        to_train_log(f"error: {e}")
        if hydra_cfg.mode != RunMode.MULTIRUN:
            fail(str(e))
        LAUNCH.failed_jobs.append(f"job {hydra_cfg.job.num} ({' '.join(overrides)}): {e}")
        log.error("error: %s; the sweep goes on", e)
        return None
    if optimised:
        chosen = primary_metric(metrics)
        log.info("returned to the sweeper (minimised): %s = %.6g",
                 objective_name(*chosen), value)
    return value
