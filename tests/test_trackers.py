"""`logger=mlflow` and `logger=wandb`: the run's params, scalars, pictures and final metrics
reach the tracker too (MLflow's local SQLite store, W&B's offline mode: no network)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from conftest import assert_bad_input, run_in_process, train_in_process, train_refused_in_process

RING = ["model=mlp_gan", "dataset=ring", "dataset.n_samples=512", "model.g_hidden=[16]",
        "model.d_hidden=[16]", "trainer.batch_size=32", "trainer.max_steps=10",
        "log.progress=false", "device=cpu", "hydra.run.dir=run"]


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.mark.skipif(not installed("mlflow"), reason="the [mlflow] extra is not installed")
def test_mlflow_receives_params_scalars_images_and_the_final_metrics(tmp_path: Path,
                                                                      monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    train_in_process([*RING, "logger=mlflow"], tmp_path)
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("ganlab").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["model.name"] == "mlp_gan"
    assert "logger.name" not in run.data.params  # how it was logged is no hyperparameter
    history = client.get_metric_history(run.info.run_id, "loss/D")
    assert [m.step for m in history] == list(range(1, 11))  # the default cadence: every step
    assert "final/modes_covered" in run.data.metrics
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    assert images  # the sample grids
    assert run.data.tags["ganlab.run_dir"] == str((tmp_path / "run").resolve())


@pytest.mark.skipif(not installed("wandb"), reason="the [wandb] extra is not installed")
def test_wandb_offline_run_holds_the_numbers_and_pictures(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    train_in_process([*RING, "logger=wandb"], tmp_path)
    (offline,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    images = sorted(p.name.split("_")[1] for p in (offline / "files" / "media" / "images")
                    .glob("samples_*.png"))
    assert sorted(map(int, images)) == list(range(0, 11))  # a grid each step, from step 0
    (log,) = offline.glob("run-*.wandb")
    records = log.read_bytes()  # protobuf records: the names are stored as they are
    for name in (b"loss/D", b"grad_norm/G", b"model.name", b"modes_covered"):
        assert name in records, name


def test_a_tracker_whose_extra_is_missing_is_bad_input(tmp_path: Path, monkeypatch,
                                                        capsys) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    result = train_refused_in_process([*RING, "logger=wandb"], tmp_path, capsys)
    assert_bad_input(result, "logger=wandb needs the wandb package",
                     "pip install 'ganlab[wandb]'")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_an_unknown_tracker_names_the_choices(capsys) -> None:
    result = run_in_process(["train", "logger=mlfow"], capsys)
    assert_bad_input(result, "unknown logger 'mlfow'; choose one of: mlflow, tensorboard, wandb")
