"""What one `python -m ganlab train` invocation learns about its jobs, whatever the launcher.

A single run or the basic launcher runs jobs in this process: train.main records in `LAUNCH`
whether a job started and which jobs failed on bad input. The joblib and submitit launchers
run jobs in other processes (loky workers, submitit jobs), so this process learns nothing from
that bookkeeping: SweepCallback notes the sweep dir when the sweep starts, and at the end
`sweep_failures` reads each job's own run dir, as `report` does.

A sweeper that optimises (hydra/sweeper=optuna, the `sweep` extra) reads what each job returns:
`objective`, the run's primary metric signed so that lower is always better, so the sweeper's
direction is always `minimize` (SweepCallback refuses another before any job runs).
"""

from __future__ import annotations

import logging
import math
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig

from ganlab.errors import UserError, fail
from ganlab.metrics import PRIMARY_METRICS, primary_metric
from ganlab.report import find_runs, read_error

# added to a sweep's Hydra overrides by ganlab.__main__ (Hydra instantiates it by name)
CALLBACK = "++hydra.callbacks.ganlab_sweep._target_=ganlab.sweep.SweepCallback"
# the first line SweepCallback writes into a crashed job's train.log, before the traceback
CRASHED = "error: crashed with {kind}: {message}"


@dataclass
class Launch:
    """One invocation's record; `start()` clears it (in-process callers may run several)."""

    # set once a job's task function runs: Hydra's exit code 1 before that is a config error
    task_started: bool = False
    # jobs that failed on bad input (a diverged loss, say) while the others still ran
    failed_jobs: list[str] = field(default_factory=list)
    # the sweep dir (set by SweepCallback in the launching process), and the job dirs already
    # there when the sweep started -> mtime of their .hydra/overrides.yaml (a reused
    # hydra.sweep.dir): a job this sweep runs rewrites that file
    dir: Path | None = None
    before: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        self.__init__()

    def failures(self) -> list[str]:
        """The failed jobs: recorded here by in-process jobs, else read from the job dirs."""
        if self.failed_jobs or self.dir is None:
            return list(self.failed_jobs)
        return sweep_failures(self.dir, self.before)


LAUNCH = Launch()


def to_train_log(message: str) -> None:
    """Write a message into the run's train.log (the file handlers Hydra's job logging set
    up) without repeating it on the console."""
    log = logging.getLogger("ganlab")
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def optimising(sweeper: DictConfig | None) -> bool:
    """Whether the sweeper searches by what the jobs return (hydra/sweeper=optuna has a
    `direction`; the basic sweeper only enumerates the combinations)."""
    return sweeper is not None and "direction" in sweeper


def objective_name(name: str, mode: str) -> str:
    """How the value a job returns is made from its primary metric: `fid`, `-accuracy`."""
    return name if mode == "min" else f"-{name}"


def objective(metrics: dict[str, Any], required: bool = False) -> float | None:
    """What a job returns to the sweeper: the run's primary metric (ganlab.metrics; its final
    value, the one `report` ranks by), negated when higher is better, so lower is always
    better. None when the run reports no finite primary metric; a UserError instead when a
    sweeper optimises the value (`required`)."""
    chosen = primary_metric(metrics)
    value = float(metrics[chosen[0]]) if chosen is not None else math.nan
    if chosen is None or not math.isfinite(value):
        if not required:
            return None
        what = (f"its primary metric {chosen[0]} is {value}" if chosen is not None else
                "it reports no primary metric (one of "
                f"{', '.join(name for name, _ in PRIMARY_METRICS)}; a GAN on an image folder "
                "has fid with eval.inception=on)")
        raise UserError(f"this run gives the sweeper nothing to minimise: {what}")
    return value if chosen[1] == "min" else 0.0 - value  # 0.0 - 0.0 is 0.0, -0.0 is not


def check_direction(sweeper: DictConfig | None) -> None:
    """An optimising sweeper must minimise: every job returns a value where lower is better."""
    if not optimising(sweeper):
        return
    given = sweeper.direction
    names = [getattr(d, "name", d) for d in given] if isinstance(given, (list, ListConfig)) \
        else [getattr(given, "name", given)]
    if [str(n) for n in names] != ["minimize"]:
        shown = names[0] if len(names) == 1 else f"[{','.join(str(n) for n in names)}]"
        signed = ", ".join(objective_name(name, mode) for name, mode in PRIMARY_METRICS
                           if mode == "max")
        raise UserError(f"hydra.sweeper.direction={shown}: every job returns one value to "
                        "minimise (its primary metric, negated when higher is better: "
                        f"{signed}); leave the direction at minimize")


class SweepCallback(Callback):
    """The Hydra callback `train -m` adds (ganlab.__main__.run_train).

    on_multirun_start runs in the launching process: it refuses a sweeper direction other than
    minimize (check_direction; one `error:` line, exit code 2, before any job runs), and notes
    the sweep dir for the summary at the end (sweep_failures). on_job_end runs where the job
    ran: for a job that crashed (an exception other than UserError, which train.main logs and
    turns into a failed job itself) it writes the traceback into the job's train.log, because
    Hydra hands the exception back to the launching process, and the joblib and submitit
    launchers pickle it without its traceback.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweeper = config.hydra.get("sweeper")
        try:
            check_direction(sweeper)
        except UserError as e:
            fail(str(e))  # SystemExit(2): Hydra lets it through, ganlab.__main__ exits with it
        if optimising(sweeper):
            # optuna imports alembic, whose plugin set-up logs a line per plugin at INFO
            logging.getLogger("alembic").setLevel(logging.WARNING)
            logging.getLogger("ganlab").info(
                "the sweeper minimises what each job returns: its primary metric, negated "
                "when higher is better (%s)", ", ".join(
                    objective_name(name, mode) for name, mode in PRIMARY_METRICS))
        root = Path(str(config.hydra.sweep.dir))
        LAUNCH.dir = root
        LAUNCH.before = ({str(d): _mtime(d / ".hydra" / "overrides.yaml")
                          for d in find_runs(root)} if root.is_dir() else {})

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        error = job_return._return_value  # .return_value would raise it
        if job_return.status != JobStatus.FAILED or not isinstance(error, BaseException):
            return
        text = str(error).strip().splitlines()
        first = CRASHED.format(kind=type(error).__name__, message=text[0] if text else "")
        trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        to_train_log(f"{first}\n{trace}")


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return -1.0


def sweep_failures(root: Path, before: dict[str, float] | None = None) -> list[str]:
    """`job NAME (OVERRIDES): ERROR` for every job of the sweep under root that did not finish:
    its train.log's first `error: ...` line (read_error, as `report` shows it). Job dirs in
    `before` whose overrides.yaml is unchanged belong to an earlier sweep and are left out; a
    metrics.json older than the job's overrides.yaml is an earlier run's."""
    failures = []
    for run_dir in find_runs(root):
        started = _mtime(run_dir / ".hydra" / "overrides.yaml")
        if before and before.get(str(run_dir)) == started:
            continue
        if _mtime(run_dir / "metrics.json") >= started:
            continue
        error = read_error(run_dir / "train.log") or (
            "no metrics.json and no error line in its train.log (killed?)")
        try:
            items = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()) or []
        except (OSError, yaml.YAMLError):
            items = []
        overrides = " ".join(str(o) for o in items if not str(o).startswith("resume="))
        failures.append(f"job {run_dir.relative_to(root).as_posix()} ({overrides}): {error}")
    return failures
