"""Sweeps through Hydra's joblib and submitit_local launchers (the `sweep` extra): jobs run in
other processes, and the end-of-sweep summary still names the jobs that failed."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY, job_dirs, make_job, run_cli
from hydra.core.utils import JobReturn, JobStatus

from ganlab import report
from ganlab.sweep import SweepCallback, sweep_failures

# the `sweep` extra: pip install -e ".[sweep]"
pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

# two steps of TINY, nothing but the final checkpoint and metrics
SWEEP = [*TINY, "trainer.max_steps=2", "log.sample_every=0", "trainer.ckpt_every=0",
         "eval.every=0", "loss=lsgan"]


@pytest.fixture(autouse=True)
def one_thread_per_job(monkeypatch):
    """Every job is a process of its own here: on a small machine, one torch thread each."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def sweep_jobs(workdir: Path) -> tuple[Path, list[Path]]:
    (sweep,) = (workdir / "outputs" / "multirun").glob("*/*")
    return sweep, job_dirs(sweep)


def test_joblib_runs_the_jobs_in_parallel_workers(workdir, capsys):
    result = run_cli(["train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *SWEEP,
                      "trainer.seed=0,1"], workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep, jobs = sweep_jobs(workdir)
    assert [j.name for j in jobs] == ["0_trainer.seed-0", "1_trainer.seed-1"]
    for job, seed in zip(jobs, ["0", "1"], strict=True):
        assert json.loads((job / "metrics.json").read_text())["step"] == 2
        assert f"trainer.seed={seed}" in (job / ".hydra" / "overrides.yaml").read_text()
    report.main([str(sweep)])
    assert "2 runs (2 ok)" in capsys.readouterr().out


def test_joblib_failed_job_is_named_and_the_other_finishes(workdir, capsys):
    # a batch larger than the dataset: preflight lets it through, the job stops at run time
    result = run_cli(["train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *SWEEP,
                      "dataset.n_samples=8,64"], workdir)
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 1 sweep job(s) failed: job 0 ("), last
    assert "dataset.n_samples=8" in last and "larger than the dataset" in last
    sweep, jobs = sweep_jobs(workdir)
    assert str(sweep.relative_to(workdir)) in last  # where to look
    failed, finished = jobs
    assert "error: trainer.batch_size=16 is larger than the dataset" in (
        failed / "train.log").read_text()
    assert not (failed / "metrics.json").exists()
    assert (finished / "metrics.json").is_file()
    report.main([str(sweep)])
    assert "2 runs (1 ok, 1 failed)" in capsys.readouterr().out


def test_submitit_local_writes_the_run_dir(workdir):
    result = run_cli(["train", "-m", "hydra/launcher=submitit_local",
                      "hydra.launcher.timeout_min=5", *SWEEP, "trainer.seed=3"], workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep, jobs = sweep_jobs(workdir)
    assert [j.name for j in jobs] == ["0"]  # nothing swept: the number alone
    assert (jobs[0] / "metrics.json").is_file()
    assert (jobs[0] / "checkpoints" / "last.pt").is_file()
    assert list((sweep / ".submitit").glob("*/*_0_log.out"))  # submitit's own logs


def job_pid(group: int) -> int | None:
    """The pid of submitit's job runner (`python -u -m submitit.core._submit FOLDER`, the
    process that trains) among the processes of one process group, or None."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            if b"submitit.core._submit" in command and os.getpgid(int(entry.name)) == group:
                return int(entry.name)
        except OSError:  # gone meanwhile
            continue
    return None


def wait_for(what: str, found, deadline: float, sweep: subprocess.Popen):
    """Poll found() until it returns something; fail at the deadline or if the sweep ended."""
    while time.monotonic() < deadline:
        value = found()
        if value:
            return value
        if sweep.poll() is not None:
            pytest.fail(f"the sweep exited {sweep.returncode} while waiting for {what}")
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads /proc (Linux)")
def test_submitit_local_preemption_saves_requeues_and_resume_auto_continues(workdir):
    """What a Slurm preemption with a grace time sends: SIGTERM (the job saves and goes on),
    then SIGUSR2 (it saves, and submitit's handler requeues it); the requeued job continues
    from that save with resume=auto, in the same job dir, and the sweep succeeds."""
    max_steps = 2000  # ~6 s of training on a busy CPU: the signals come within its first steps
    args = [sys.executable, "-m", "ganlab", "train", "-m", "hydra/launcher=submitit_local",
            "dataset=ring", "model=mlp_gan", "device=cpu", f"trainer.max_steps={max_steps}",
            "trainer.ckpt_every=100000", "log.every=1", "log.sample_every=0", "eval.every=0",
            "log.progress=false", "resume=auto"]
    env = {**os.environ, "GANLAB_DATA": str(workdir / "data")}
    env.pop("HYDRA_FULL_ERROR", None)
    env.pop("SUBMITIT_PREEMPT_SIGNAL", None)  # SIGUSR2, submitit's default
    deadline = time.monotonic() + 150
    with open(workdir / "sweep.out", "wb") as out:
        # a session of its own: the sweep, submitit's controller and the job form one group
        sweep = subprocess.Popen(args, cwd=workdir, env=env, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    try:
        train_log = wait_for(
            "the job's train.log", lambda: next(
                iter((workdir / "outputs" / "multirun").glob("*/*/0/train.log")), None),
            deadline, sweep)
        job = train_log.parent
        wait_for("the job's first steps", lambda: "step 5/" in train_log.read_text(),
                 deadline, sweep)
        pid = wait_for("the job's process", lambda: job_pid(sweep.pid), deadline, sweep)
        os.kill(pid, signal.SIGTERM)
        saved = wait_for("the checkpoint of SIGTERM", lambda: sorted(
            (job / "checkpoints").glob("step_*.pt")), deadline, sweep)
        first = int(saved[0].stem.removeprefix("step_"))
        wait_for("a step after that save", lambda: f"step {first + 1}/" in train_log.read_text(),
                 deadline, sweep)
        os.kill(pid, signal.SIGUSR2)
        sweep.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pytest.fail("timed out waiting for the sweep to finish")
    finally:  # nothing of the group outlives the test, whatever happened
        try:
            os.killpg(sweep.pid, signal.SIGKILL)
        except ProcessLookupError:  # all gone already
            pass
        sweep.wait(timeout=30)
    output = (workdir / "sweep.out").read_text(errors="replace")
    assert sweep.returncode == 0, output[-3000:]

    text = train_log.read_text()
    assert "resume=auto: no checkpoint" in text  # the first start
    term = text.index("SIGTERM received under a cluster launcher: saving after this step and "
                      "going on")
    stop = re.compile(r"interrupted at step (\d+); checkpoint saved").search(text, term)
    assert stop, text[-3000:]
    step = int(stop.group(1))
    assert first < step < max_steps  # SIGTERM saved at `first` and training went on
    again = text.index("resume=auto: continuing", stop.end())
    assert re.compile(rf"resumed from \S+ at step {step}\b").search(text, again), text[again:]
    # the requeued job finished in the same job dir; the saves: SIGTERM's, SIGUSR2's, the end
    sweep_dir, jobs = sweep_jobs(workdir)
    assert jobs == [job]
    assert json.loads((job / "metrics.json").read_text())["step"] == max_steps
    assert sorted(int(p.stem.removeprefix("step_"))
                  for p in (job / "checkpoints").glob("step_*.pt")) == [first, step, max_steps]
    (submitit_log,) = (sweep_dir / ".submitit").glob("*/*_0_log.out")
    assert "Requeued job" in submitit_log.read_text()  # by submitit's own handler


# in-process: the callback and the summary without a launcher

FINISHED = {"step": 2}  # a job's metrics.json: it finished


def test_sweep_failures_reads_each_jobs_train_log(tmp_path):
    line = "[2026-01-01 12:00:00,000][ganlab][ERROR] - error: {}\n"
    make_job(tmp_path, 0, ["loss=hinge", "resume=auto"], None, line.format("data missing"))
    make_job(tmp_path, 1, ["loss=lsgan"], FINISHED)
    make_job(tmp_path, 2, ["loss=wgan"])  # killed: no metrics, no error line
    old = make_job(tmp_path, 3, ["loss=minimax"], None, line.format("an earlier sweep's"))
    stamp = (old / ".hydra" / "overrides.yaml").stat().st_mtime
    failures = sweep_failures(tmp_path, before={str(old): stamp})
    assert failures == ["job 0 (loss=hinge): data missing",
                        "job 2 (loss=wgan): no metrics.json and no error line in its train.log "
                        "(killed?)"]
    # a metrics.json older than the job's overrides.yaml is an earlier run's
    stale = make_job(tmp_path, 4, ["loss=hinge"], FINISHED, line.format("diverged"))
    later = time.time() + 10
    os.utime(stale / ".hydra" / "overrides.yaml", (later, later))
    assert sweep_failures(tmp_path)[-1] == "job 4 (loss=hinge): diverged"


def test_callback_writes_a_crash_traceback_into_the_jobs_log(tmp_path):
    handler = logging.FileHandler(tmp_path / "train.log")
    logging.getLogger().addHandler(handler)
    try:
        try:
            raise ValueError("boom\nsecond line")
        except ValueError as e:
            crash = JobReturn(status=JobStatus.FAILED, _return_value=e)
        SweepCallback().on_job_end(config=None, job_return=crash)
        SweepCallback().on_job_end(
            config=None, job_return=JobReturn(status=JobStatus.COMPLETED, _return_value=None))
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    text = (tmp_path / "train.log").read_text()
    assert "Traceback (most recent call last)" in text and 'raise ValueError("boom' in text
    assert report.read_error(tmp_path / "train.log") == "crashed with ValueError: boom"
