"""The shared training loop: data, steps, cadence, checkpoints, resume, guards, signals.

It drives any Family through `train_step`, `visuals`, `evaluate` and `state_dict`; it knows
nothing of generators or ELBOs.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from ganlab import checkpoint
from ganlab.data.base import Batches, InMemoryDataset
from ganlab.distributed import Replicas, ShardedBatches
from ganlab.errors import EXIT_INTERRUPTED, UserError
from ganlab.families.base import Family
from ganlab.logging import NullLogger, RunLogger
from ganlab.metrics import primary_metric
from ganlab.metrics.samples import SampleMetrics
from ganlab.provenance import command_line

log = logging.getLogger("ganlab")


def preemption_signal() -> int:
    """The signal a Slurm job gets before its time limit (sbatch --signal; submitit's
    SUBMITIT_PREEMPT_SIGNAL, USR2 by default)."""
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").upper()
    return getattr(signal, name if name.startswith("SIG") else f"SIG{name}", signal.SIGUSR2)


class StopRequested:
    """SIGINT, SIGTERM and the preemption signal set a flag; the loop finishes its step,
    saves and exits 130. A second signal interrupts at once.

    Under a cluster launcher that handles the preemption signal itself (submitit requeues the
    job on SIGUSR2), the loop saves first and then hands the signal on; and SIGTERM, which
    Slurm sends at a preemption ahead of SIGUSR2, only saves and training goes on, so the
    launcher's requeue still comes."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self.save_now = False  # a checkpoint at the end of this step, then go on
        self.preempt = preemption_signal()
        self._previous: dict[int, Any] = {}

    @property
    def launcher_handles_preemption(self) -> bool:
        previous = self._previous.get(self.preempt)
        return callable(previous) and previous is not signal.default_int_handler

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGTERM and self.launcher_handles_preemption:
            self.save_now = True
            log.warning("%s received under a cluster launcher: saving after this step and "
                        "going on (its %s requeues the job)", name,
                        signal.Signals(self.preempt).name)
            return
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum
        log.warning("%s received: stopping after this step", name)

    def __enter__(self):
        for s in {signal.SIGINT, signal.SIGTERM, self.preempt}:
            self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def hand_on(self) -> None:
        """After the save: the launcher's own preemption handler (submitit requeues the job
        and exits); when there is none, or it returns, the loop exits 130."""
        if self.signal == self.preempt and self.launcher_handles_preemption:
            handler = self._previous[self.preempt]
            self.__exit__()
            try:
                handler(self.preempt, None)
            except Exception as e:  # submitit: "timed-out too many times", say
                log.error("the launcher did not requeue this job (%s: %s); its checkpoint "
                          "is saved: resubmit with resume=auto to continue", type(e).__name__,
                          str(e).strip().splitlines()[0] if str(e).strip() else "")


CADENCES = ("log.every", "log.sample_every", "eval.every", "trainer.ckpt_every")
# null cadences: about this many points per run, but never sparser than the cap
AUTO_CADENCES = {"log.every": (50, 50), "log.sample_every": (10, 500)}


def cadences(cfg: DictConfig, max_steps: int) -> dict[str, int]:
    """Every how many steps each thing happens (0: never); a null log cadence is chosen from
    the run's length, so a short run still has curves and a slider of sample grids."""
    every = {}
    for key in CADENCES:
        value = OmegaConf.select(cfg, key)
        if value is None and key in AUTO_CADENCES:
            points, cap = AUTO_CADENCES[key]
            value = min(cap, max(1, max_steps // points))
        every[key] = int(value or 0)
    return every
# settings a resumed run may change without a word of warning: how long and how it reports
HARMLESS_ON_RESUME = ("trainer.max_steps", "trainer.epochs", "trainer.ckpt_every",
                      "trainer.keep_last", "trainer.compile", "trainer.channels_last",
                      "trainer.cudnn_benchmark", "log.", "eval.", "data.", "logger.", "device",
                      "data_dir",
                      "resume")


def config_changes(stored: dict, current: dict) -> list[tuple[str, Any, Any]]:
    """(key, stored value, current value) for every dotted key that differs."""
    from ganlab.logging import flatten

    old, new = flatten(stored), flatten(current)
    return [(k, old.get(k, "<absent>"), new.get(k, "<absent>"))
            for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]


WARMUP_STEPS = 50  # steps left out of steady_steps_per_second (at most a fifth of the run)


def total_steps(cfg: DictConfig, batches: Batches, family: Family) -> int:
    if cfg.trainer.epochs is None:
        return int(cfg.trainer.max_steps)
    steps_per_epoch = max(1, batches.batches_per_epoch // family.batches_per_step)
    return int(cfg.trainer.epochs) * steps_per_epoch


class Loop:
    def __init__(self, cfg: DictConfig, family: Family, data: InMemoryDataset, run_dir: Path,
                 overrides: list[str], replicas: Replicas | None = None,
                 sample_metrics: SampleMetrics | None = None) -> None:
        self.cfg = cfg
        self.family = family
        self.sample_metrics = sample_metrics  # eval.* on the family's samples
        self.data = data
        self.run_dir = run_dir
        self.overrides = overrides  # the command-line overrides, stored so resume can reuse them
        self.ckpt_path = run_dir / "checkpoints" / checkpoint.LAST
        self.best_path = run_dir / "checkpoints" / checkpoint.BEST
        self.best: dict[str, Any] | None = None  # metric, mode, value, step of best.pt
        self.batches = data.batches(cfg.trainer.batch_size, cfg.trainer.seed)
        # under torchrun: this process's place, its shard of the data; only rank 0 writes
        self.replicas = replicas or Replicas()
        if self.replicas.active:
            self.batches = ShardedBatches(self.batches, self.replicas)
        self._networks = list(family.networks().values())
        self.max_steps = total_steps(cfg, self.batches, family)
        family.run_length = self.max_steps
        self.step = 0
        self.every: dict[str, int] = {}  # the cadences, read from the config when run() starts
        # the non-finite guard without a host sync per step: the first bad step and which
        # losses were bad stay on the device until the loop looks (log cadence, saves, end)
        self._first_bad: torch.Tensor | None = None
        self._bad_keys: torch.Tensor | None = None
        self._tracked_keys: list[str] = []

    # --- state ---------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "config": OmegaConf.to_container(self.cfg, resolve=True, enum_to_str=True),
            "overrides": self.overrides,
            "spec": self.data.spec.to_dict(),
            "family": self.family.state_dict(),
            "amp": self.family.amp.state_dict(),
            "data": self.batches.state_dict(),
            "rng": checkpoint.rng_state(),
            "best": self.best,
            "world_size": self.replicas.world,
        }

    def save(self) -> None:
        """checkpoints/last.pt (atomic), and step_<N>.pt for the trainer.keep_last most recent
        saves. A full disk or a read-only folder is a UserError; last.pt stays as it was."""
        checkpoint.save(self.state(), self.ckpt_path)
        checkpoint.keep_recent(self.ckpt_path, self.step, int(self.cfg.trainer.keep_last))

    def restore(self, path: str) -> None:
        state = checkpoint.load(path)
        current = OmegaConf.to_container(self.cfg, resolve=True, enum_to_str=True)
        changes = config_changes(state["config"], current)
        significant = [c for c in changes if not c[0].startswith(HARMLESS_ON_RESUME)]
        try:
            self.family.load_state_dict(state["family"])
        except (RuntimeError, KeyError, ValueError) as e:
            first = str(e).strip().splitlines()[0]
            if significant:  # name what changed: that is what the user can act on
                listed = ", ".join(f"{k}: {a} -> {b}" for k, a, b in significant[:6])
                raise UserError(f"cannot resume {path}: these settings change the networks' "
                                f"shapes or state ({listed}); resume with the stored values "
                                "or start a new run") from e
            raise UserError(f"checkpoint {path} does not match this model/config: {first}") from e
        for key, old, new in changes:
            level = logging.INFO if key.startswith(HARMLESS_ON_RESUME) else logging.WARNING
            log.log(level, "resuming with %s changed: %s -> %s", key, old, new)
        self.family.amp.load_state_dict(state.get("amp", {}))
        self.batches.load_state_dict(state["data"])
        checkpoint.set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.best = state.get("best")
        resumed_file = checkpoint.resolve_path(path)
        if (self.replicas.is_main and self.ckpt_path.exists()
                and os.path.samefile(resumed_file, self.ckpt_path)):
            # a kill between last.pt's rename and its step_<N>.pt link leaves that link missing
            checkpoint.keep_recent(self.ckpt_path, self.step, int(self.cfg.trainer.keep_last))
        trained_on = state.get("world_size", 1)
        log.info("resumed from %s at step %d%s", path, self.step,
                 f" (trained by {trained_on} processes, continued by {self.replicas.world})"
                 if trained_on != self.replicas.world else "")

    # --- the loop ------------------------------------------------------------------------

    def _read(self, losses: dict[str, torch.Tensor]) -> dict[str, float]:
        return {k: float(v) for k, v in losses.items()}

    def _track_finite(self, losses: dict[str, torch.Tensor]) -> None:
        """Device-side bookkeeping of non-finite losses (the "loss/" entries); no host sync."""
        keys = sorted(k for k in losses if k.startswith("loss/")) or sorted(losses)
        if self._tracked_keys != keys:  # first step (a family keeps its loss names)
            self._tracked_keys = keys
            self._first_bad = torch.full((), -1, dtype=torch.long,
                                         device=losses[keys[0]].device)
            self._bad_keys = torch.zeros(len(keys), dtype=torch.bool,
                                         device=self._first_bad.device)
        bad = ~torch.isfinite(torch.stack([losses[k].reshape(()) for k in keys]))
        newly = bad.any() & (self._first_bad < 0)
        self._first_bad = torch.where(newly, self.step, self._first_bad)
        self._bad_keys = torch.where(newly, bad, self._bad_keys)

    def _check_finite(self, losses: dict[str, torch.Tensor]) -> None:
        """Stop with an error if a loss was non-finite since the last look (one host sync;
        under torchrun every process stops if one saw it)."""
        here = self._first_bad is not None and int(self._first_bad) >= 0
        if not self.replicas.any(here):
            return
        if not here:
            raise UserError(f"non-finite loss in another process of this run by step "
                            f"{self.step}")
        names = [k for k, b in zip(self._tracked_keys, self._bad_keys.tolist(), strict=True)
                 if b]
        values = ", ".join(f"{k}={float(v):.4g}" for k, v in losses.items())
        kept = f"; {self.ckpt_path} from an earlier step is kept" if self.ckpt_path.exists() else ""
        raise UserError(f"non-finite loss at step {int(self._first_bad)} ({', '.join(names)}; "
                        f"at step {self.step}: {values}){kept}")

    def _visuals_and_metrics(self, logger: RunLogger, visuals: bool = True,
                             measure: bool = True) -> dict[str, float]:
        """Sample grids (log.sample_every) and the metrics (eval.every, and at the end): the
        metrics can cost minutes, so a sample grid alone does not measure."""
        self.family.eval()
        # whatever a family's measuring draws (building a reference network, say), training
        # continues with the RNG states it had: the trajectory does not depend on eval cadence
        cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        try:
            with torch.random.fork_rng(devices=cuda):
                if visuals:
                    logger.images(self.family.visuals(), self.step)
                metrics = self.family.evaluate() if measure else {}
                if measure and self.sample_metrics is not None:
                    metrics.update(self.sample_metrics.measure(self.family))
        finally:
            self.family.train()
        numbers = {f"eval/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}
        if numbers:  # descriptions (which backbone, which split) go to metrics.json only
            logger.scalars(numbers, self.step, self.max_steps)
        self._keep_best(metrics)
        return metrics

    def _keep_best(self, metrics: dict[str, Any]) -> None:
        """checkpoints/best.pt: the state at the best value of the primary metric so far, so
        a run whose quality peaks and then collapses keeps its peak."""
        chosen = primary_metric(metrics)
        if chosen is None or not math.isfinite(metrics[chosen[0]]):
            return
        name, mode = chosen
        value = float(metrics[name])
        if self.best is not None and self.best["metric"] == name:
            previous = self.best["value"]
            if (value >= previous) if mode == "min" else (value <= previous):
                return
        previous_best, self.best = self.best, {"metric": name, "mode": mode, "value": value,
                                               "step": self.step}
        try:
            checkpoint.save(self.state(), self.best_path)  # holds its own "best" entry
        except BaseException:
            self.best = previous_best  # best.pt was not written: do not claim it
            raise
        log.info("best %s so far: %.4g at step %d (saved %s)", name, value, self.step,
                 self.best_path)

    def run(self, resume: str | None = None) -> dict[str, float]:
        if resume:
            self.restore(resume)
        if self.step >= self.max_steps:
            raise UserError(f"nothing to do: the run is at step {self.step} and "
                            f"trainer.max_steps is {self.max_steps}")
        cfg = self.cfg
        # read once: OmegaConf lookups in the hot loop cost more than the arithmetic
        self.every = cadences(cfg, self.max_steps)
        main = self.replicas.is_main
        self.replicas.decorrelate_rng(int(cfg.trainer.seed), self.step)
        logger = (RunLogger(self.run_dir, cfg, purge_step=self.step if resume else None,
                            overrides=self.overrides) if main else NullLogger())
        resumed = [f"resume={resume}"] if resume else []
        logger.config_text(command_line([*self.overrides, *resumed]))
        logger.dashboard(self.family.chart_layout, self.family.visual_notes)
        if self.step == 0 and self.every["log.sample_every"] and main:
            # where training starts from: the first picture of every slider
            self._visuals_and_metrics(logger, measure=False)
        self.family.train()
        last_losses: dict[str, float] = {}
        metrics: dict[str, float] = {}
        visualised = measured = -1  # the steps of the latest visuals and metrics
        # redirected to a file (a cluster log), the bar redraws rarely instead of 10 times a second
        bar = tqdm(total=self.max_steps, initial=self.step,
                   disable=not (cfg.log.progress and main),
                   dynamic_ncols=True, unit="step", smoothing=0.05,
                   mininterval=0.1 if sys.stderr.isatty() else 30.0)
        started, start_step = time.perf_counter(), self.step
        warm_step = start_step + min(WARMUP_STEPS, (self.max_steps - start_step) // 5)
        warm_time = started
        n = self.family.batches_per_step
        try:
            with StopRequested() as stop:
                while self.step < self.max_steps:
                    batch = next(self.batches) if n == 1 else [next(self.batches) for _ in range(n)]
                    # the family may skip diagnostics (grad norms, ...) nobody will read
                    coming, every = self.step + 1, self.every["log.every"]
                    self.family.diagnostics = ((every > 0 and coming % every == 0) or
                                               coming == self.max_steps)
                    if self.replicas.active:  # as DDP: rank 0's BatchNorm statistics for all
                        self.replicas.broadcast(self._networks, buffers_only=True)
                    with self.family.amp.autocast():
                        losses = self.family.train_step(batch)
                    self.family.amp.update()
                    self.step += 1
                    self._track_finite(losses)
                    bar.update(1)
                    if self.step == warm_step:
                        warm_time = time.perf_counter()
                    at = self._due(self.step)
                    stopping, saving = self.replicas.any_each(stop.signal is not None,
                                                              stop.save_now)
                    if at("log.every"):
                        self._check_finite(losses)
                        last_losses = self._read(self.replicas.mean(losses))
                        logger.scalars(last_losses, self.step, self.max_steps)
                        bar.set_postfix({k.replace("loss/", ""): f"{v:.3g}"
                                         for k, v in last_losses.items() if k.startswith("loss/")})
                    if at("log.sample_every") or at("eval.every"):
                        self._check_finite(losses)
                        if main:
                            metrics = self._visuals_and_metrics(
                                logger, measure=at("eval.every")) or metrics
                        visualised = self.step
                        measured = self.step if at("eval.every") else measured
                    if at("trainer.ckpt_every") or stopping or saving:
                        self._check_finite(losses)  # never checkpoint a diverged state
                        if main:
                            self.save()
                        stop.save_now = False
                    if stopping:
                        log.warning("interrupted at step %d; checkpoint saved to %s",
                                    self.step, self.ckpt_path)
                        stop.hand_on()  # submitit: requeue (and exit there)
                        raise SystemExit(EXIT_INTERRUPTED)
            loop_end = time.perf_counter()
            self._check_finite(losses)
            last_losses = self._read(self.replicas.mean(losses))
            if not main:
                return {**last_losses, "step": self.step}
            if visualised != self.step or measured != self.step:  # the end: both, once
                metrics = self._visuals_and_metrics(logger, visuals=visualised != self.step,
                                                    measure=measured != self.step) or metrics
            self.save()
            elapsed = time.perf_counter() - started
            result = {**last_losses, **metrics, "step": self.step,
                      "steps_per_second": (self.step - start_step) / max(elapsed, 1e-9)}
            if self.step > warm_step:  # the training loop alone, after its first steps
                result["steady_steps_per_second"] = ((self.step - warm_step) /
                                                     max(loop_end - warm_time, 1e-9))
            if self.data.heldout is not None:  # say which unseen data the metrics come from
                result["heldout_data"] = self.data.heldout.source
            if self.best is not None:
                result["best_step"] = self.best["step"]
                result[f"best_{self.best['metric']}"] = self.best["value"]
            logger.final(result)
            log.info("done: %d steps in %.1f s; final %s", self.step, elapsed,
                     ", ".join(f"{k}={v:.4g}" for k, v in result.items()
                               if isinstance(v, float) and math.isfinite(v)))
            return result
        finally:
            bar.close()
            logger.close()

    def _due(self, step: int):
        def at(key: str) -> bool:
            every = self.every[key]
            return every > 0 and step % every == 0

        return at
