"""Sweeps that optimise: hydra/sweeper=optuna (the `sweep` extra) searches by what each job
returns, the run's primary metric signed so that lower is better (-accuracy for a classifier).
The sweeps run in this process (the basic launcher runs the jobs here)."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from conftest import job_dirs, train_in_process, train_refused_in_process

from ganlab.errors import UserError
from ganlab.sweep import check_direction, objective

# the `sweep` extra: pip install -e ".[sweep]"
pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    # optuna 2.10 (the plugin needs optuna < 3) uses SQLAlchemy's pre-2.0 API at import
    pytest.mark.filterwarnings("ignore:Deprecated API features detected"),
]

# a softmax classifier on the bundled digits, 20 steps: accuracy differs with the step size
DIGITS = ["model=softmax", "dataset=mnist", "dataset.source=bundled", "trainer.batch_size=32",
          "trainer.max_steps=20", "log.every=10", "log.sample_every=0", "trainer.ckpt_every=0",
          "eval.every=0", "log.progress=false", "device=cpu"]
OPTUNA = ["-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2"]


def the_sweep(workdir):
    (sweep,) = (workdir / "outputs" / "multirun").glob("*/*")
    return sweep, job_dirs(sweep)


def test_optuna_sweep_minimises_the_signed_primary_metric(workdir):
    train_in_process([*OPTUNA, "hydra.sweeper.sampler.seed=0",
                      "model.lr=tag(log,interval(1e-4,1e-1))", *DIGITS], workdir)
    sweep, jobs = the_sweep(workdir)
    assert len(jobs) == 2
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    best, params = results["best_value"], results["best_params"]
    assert isinstance(best, float) and math.isfinite(best)
    assert 1e-4 <= params["model.lr"] <= 1e-1
    # what each job returned: its held-out accuracy, negated (lower is better)
    returned = {}
    for job in jobs:
        accuracy = json.loads((job / "metrics.json").read_text())["accuracy"]
        assert 0 < accuracy <= 1
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        lr = float(next(o for o in overrides if o.startswith("model.lr=")).split("=", 1)[1])
        returned[lr] = -accuracy
        assert "returned to the sweeper (minimised): -accuracy = " in (
            job / "train.log").read_text()
    assert best == min(returned.values())
    assert returned[params["model.lr"]] == best


def test_a_failed_trial_is_named_and_the_search_goes_on(workdir, capsys):
    # seed 0 draws each choice once; a batch larger than the dataset fails at run time
    result = train_refused_in_process(
        [*OPTUNA, "hydra.sweeper.sampler.seed=0", "trainer.batch_size=choice(32,100000)",
         *(o for o in DIGITS if not o.startswith("trainer.batch_size=")),
         "trainer.max_steps=2"], workdir, capsys)
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 1 sweep job(s) failed: job "), last
    assert "trainer.batch_size=100000" in last and "larger than the dataset" in last
    sweep, _ = the_sweep(workdir)
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_params"] == {"trainer.batch_size": 32}
    assert math.isfinite(results["best_value"])


def test_a_direction_other_than_minimize_is_refused(workdir, capsys):
    result = train_refused_in_process(
        [*OPTUNA, "hydra.sweeper.direction=maximize", "model.lr=interval(1e-4,1e-1)",
         *DIGITS], workdir, capsys)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: hydra.sweeper.direction=maximize: every job returns one value to minimise "
        "(its primary metric, negated when higher is better: -modes_covered, -iou_coverage, "
        "-accuracy, -psnr, -real_return); leave the direction at minimize")
    assert not (workdir / "outputs").exists()


def test_an_interval_needs_a_sweeper_that_optimises(workdir, capsys):
    result = train_refused_in_process(["-m", "model.lr=interval(1e-4,1e-1)", *DIGITS],
                                      workdir, capsys)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(
        "error: model.lr=interval(1e-4,1e-1): an interval is a search space for a sweeper "
        "that optimises (hydra/sweeper=optuna")
    # both ends are checked against the schema, as every value of a list sweep is
    result = train_refused_in_process([*OPTUNA, "model.lr=interval(0,1e-1)", *DIGITS],
                                      workdir, capsys)
    assert result.returncode == 2
    assert "model.lr=0" in result.stderr and "outside its range" in result.stderr
    assert not (workdir / "outputs").exists()


def test_objective_signs_the_primary_metric():
    assert objective({"fid": 12.5, "accuracy": 0.9}) == 12.5  # the first primary metric
    assert objective({"accuracy": 0.9}) == -0.9
    assert str(objective({"modes_covered": 0})) == "0.0"  # not -0.0
    assert objective({"loss/D": 0.7}) is None  # a run without one, not optimised
    assert objective({"fid": math.nan}) is None
    with pytest.raises(UserError, match="reports no primary metric"):
        objective({"loss/D": 0.7}, required=True)
    with pytest.raises(UserError, match="its primary metric fid is nan"):
        objective({"fid": math.nan}, required=True)
    check_direction(None)  # the basic sweeper: nothing to check
