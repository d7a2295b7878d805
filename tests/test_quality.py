"""Sample quality in training: the best checkpoint, classifier-space metrics for generated
digits, the reference classifier's cache, and the `eval` command."""

from __future__ import annotations

import json
from typing import ClassVar

import pytest
import torch
from conftest import (
    TINY,
    assert_bad_input,
    in_dir,
    read_events,
    run_cli,
    run_in_process,
    train_in_process,
)
from test_loop import CountingFamily, _loop
from test_reference import cheap_reference

from ganlab import checkpoint
from ganlab.metrics import primary_metric


class ScriptedFamily(CountingFamily):
    """Evaluates to a scripted sequence of a metric: quality that peaks, then collapses."""

    def __init__(self, values: list[float], name: str = "classifier_fid") -> None:
        super().__init__()
        self.values, self.name, self.calls = list(values), name, 0

    def evaluate(self):
        value = self.values[self.calls]
        self.calls += 1
        return {self.name: value}


def test_primary_metric_preference():
    assert primary_metric({"classifier_fid": 3.0, "modes_covered": 8}) == ("classifier_fid", "min")
    assert primary_metric({"modes_covered": 8, "mode_kl": 0.1}) == ("modes_covered", "max")
    assert primary_metric({"loss": 1.0}) is None


@pytest.mark.parametrize(("name", "values", "best_step", "best_value"), [
    ("classifier_fid", [9.0, 4.0, 2.5, 7.0, 30.0], 6, 2.5),  # peaks at the 3rd eval, collapses
    ("modes_covered", [2, 8, 8, 3, 1], 4, 8),  # a tie keeps the earlier checkpoint
])
def test_best_checkpoint_survives_a_collapse(tmp_path, name, values, best_step, best_value):
    family = ScriptedFamily(values, name)
    loop = _loop(tmp_path, family, max_steps=10)
    loop.cfg.eval.every = 2
    loop.cfg.log.sample_every = 0
    result = loop.run()
    assert family.calls == 5
    best = checkpoint.load(tmp_path / "checkpoints" / "best.pt")
    assert best["step"] == best_step and float(best["family"]["w"]) == best_step
    assert best["best"] == {"metric": name, "mode": primary_metric({name: 1})[1],
                            "value": best_value, "step": best_step}
    assert result["best_step"] == best_step and result[f"best_{name}"] == best_value
    assert checkpoint.load(tmp_path / "checkpoints" / "last.pt")["step"] == 10


def test_best_survives_resume(tmp_path):
    loop = _loop(tmp_path, ScriptedFamily([5.0, 1.0, 3.0]), max_steps=6)
    loop.cfg.eval.every, loop.cfg.log.sample_every = 2, 0
    loop.run()
    resumed = _loop(tmp_path, ScriptedFamily([2.0, 0.5]), max_steps=10)
    resumed.cfg.eval.every, resumed.cfg.log.sample_every = 2, 0
    result = resumed.run(resume=str(tmp_path / "checkpoints" / "last.pt"))
    # 2.0 at step 8 does not beat 1.0 from before the resume; 0.5 at step 10 does
    assert result["best_step"] == 10 and result["best_classifier_fid"] == 0.5


# a DCGAN on the bundled digits with the classifier-space metrics, and a tiny reference
DIGITS_GAN = ["dataset=mnist", "dataset.source=bundled", "trainer.max_steps=4",
              "trainer.batch_size=16", "log.every=1", "log.sample_every=2", "eval.every=2",
              "log.n_samples=16", "eval.n_samples=300", "eval.reference_min_accuracy=0",
              "log.progress=false", "device=cpu"]


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("quality")
    cheap_reference(root / "data")  # quick and poor: the reference's own tests are elsewhere
    result = run_cli(["train", *DIGITS_GAN, "hydra.run.dir=run"], root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "run"


def test_dcgan_logs_classifier_space_metrics(gan_run):
    metrics = json.loads((gan_run / "metrics.json").read_text())
    for key in ("classifier_fid", "class_coverage", "class_kl", "mean_confidence"):
        assert isinstance(metrics[key], float), key
    assert metrics["classifier_fid"] > 0 and 0 <= metrics["class_coverage"] <= 1
    assert metrics["classifier_fake_images"] == 300
    assert metrics["classifier_real_images"] == 500  # the 10% kept out of the 5,000
    assert "ganlab reference LeNet" in metrics["classifier_backbone"]
    assert 0 < metrics["classifier_accuracy"] < 1  # of the quick reference the fixture built
    assert "kept out of training" in metrics["classifier_reference_split"]
    assert metrics["best_step"] in (2, 4)
    events = read_events(gan_run / "tb")
    fid = events.Scalars("eval/classifier_fid")
    assert [e.step for e in fid] == [2, 4]
    assert "eval/classifier_backbone" not in events.Tags()["scalars"]
    assert (gan_run / "checkpoints" / "best.pt").is_file()
    # the reference classifier and the real statistics were cached in data_dir
    cached = sorted(p.name for p in (gan_run.parent / "data" / "ganlab_reference").iterdir())
    assert "mnist_bundled_4500train_28px_lenet16-32-128.pt" in cached, cached
    assert any(name.startswith("real_features_") for name in cached), cached


def test_eval_command_reuses_the_cache_and_writes_json(gan_run):
    result = run_cli(["eval", f"run={gan_run}", "ckpt=best", "n_samples=600", "inception=off"],
                     gan_run.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "building the reference classifier" not in result.stderr + result.stdout
    assert "600 samples: about" in result.stdout
    report = json.loads((gan_run / "eval_best.json").read_text())
    assert report["n_samples"] == 600 and report["classifier_fake_images"] == 600
    assert report["checkpoint"].endswith("best.pt")
    assert report["classifier_fid"] > 0


def test_eval_bad_input(gan_run, workdir, capsys):
    assert_bad_input(run_in_process(["eval", f"run={workdir / 'none'}"], capsys),
                     "does not exist")
    assert_bad_input(run_in_process(["eval", f"run={gan_run}", "ckpt=first"], capsys),
                     "ckpt must be last or best")
    toy = workdir / "toy"
    args = [*[a for a in TINY if not a.startswith("dataset")], "dataset=ring",
            "model=mlp_gan", "eval.every=0", f"hydra.run.dir={toy}"]
    train_in_process(args, workdir)
    from ganlab import __main__

    with in_dir(workdir):
        __main__.main(["eval", f"run={toy}", "n_samples=1000"])
    assert "modes_covered" in json.loads((toy / "eval_last.json").read_text())
    plain = workdir / "plain"  # random synthetic images: no metric applies
    train_in_process([*TINY, f"hydra.run.dir={plain}"], workdir)
    assert_bad_input(run_in_process(["eval", f"run={plain}", "ckpt=best"], capsys),
                     "kept no best checkpoint")
    assert_bad_input(run_in_process(["eval", f"run={plain}", "inception=off"], capsys),
                     "no metric applies")


def test_inception_weights_absent_offline_is_a_clear_error(tmp_path, monkeypatch):
    from ganlab.errors import UserError
    from ganlab.metrics import inception

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(inception, "fid_helper_weights", lambda: None)  # no [fid] extra
    assert inception.weights_path(None, download=False) is None  # auto: skipped, no error

    def offline(path):
        raise OSError("network unreachable")

    monkeypatch.setattr(inception, "_download", offline)
    with pytest.raises(UserError) as err:
        inception.weights_path(None, download=True)
    message = str(err.value)
    assert inception.WEIGHTS_FILE in message and str(tmp_path / "hub" / "checkpoints") in message
    assert "eval.inception_weights=PATH" in message and "[fid] extra" in message
    with pytest.raises(UserError, match="does not exist"):
        inception.weights_path(str(tmp_path / "missing.pth"), download=False)


def test_inception_options_are_checked_before_training(workdir):
    result = run_cli(["train", *TINY, "eval.inception=on",
                      f"eval.inception_weights={workdir / 'missing.pth'}", "hydra.run.dir=run"],
                     workdir)
    assert_bad_input(result, "missing.pth does not exist")
    assert not (workdir / "run" / "checkpoints").exists()
    result = run_cli(["train", *TINY, "eval.inception_weights=w.pth", "hydra.run.dir=run"],
                     workdir)
    assert_bad_input(result, "eval.inception_weights is set but eval.inception=off")


class FakeInception(torch.nn.Module):
    """Stands in for torchmetrics' NoTrainInceptionV3: uint8 RGB in, 2048 numbers out."""

    calls: ClassVar[list[tuple[int, ...]]] = []

    def __init__(self, name, features_list, feature_extractor_weights_path, antialias):
        super().__init__()
        assert features_list == ["2048"] and feature_extractor_weights_path.endswith(".pth")
        assert antialias is False  # torch-fidelity's resize, not torchmetrics' default
        self.proj = torch.nn.Linear(3, 2048)
        self.fc = torch.nn.Linear(2048, 1008)  # a head: the Inception Score is measured

    def forward(self, x):
        assert x.dtype == torch.uint8 and x.shape[1] == 3
        FakeInception.calls.append(tuple(x.shape))
        return self.proj(x.float().mean(dim=(2, 3)) / 255)


def test_inception_space_plumbing(tmp_path, monkeypatch):
    import torchmetrics.image.fid

    from ganlab.data.base import DataSpec, InMemoryDataset
    from ganlab.metrics.inception import InceptionNet, InceptionSpace

    monkeypatch.setattr(torchmetrics.image.fid, "NoTrainInceptionV3", FakeInception)
    torch.manual_seed(0)
    gray = torch.randint(0, 256, (250, 1, 28, 28), dtype=torch.uint8)
    real = InMemoryDataset(DataSpec("d", "image", (1, 28, 28)), gray, source="real test split")
    weights = tmp_path / "w.pth"
    weights.touch()
    net = InceptionNet(weights, torch.device("cpu"))
    space = InceptionSpace(net, real, tmp_path / "cache")
    assert [c[0] for c in FakeInception.calls] == [100, 100, 50]  # batches, 3 channels
    same = space.measure(gray)
    assert same["fid"] == pytest.approx(0, abs=1e-6)
    brighter = space.measure((gray.int() // 2 + 128).to(torch.uint8))
    assert brighter["fid"] > 1e-3 and brighter["kid_mean"] > same["kid_mean"]
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    assert same["is_mean"] >= 1.0
    assert same["inception_real_images"] == 250 and same["inception_fake_images"] == 250
    assert same["inception_reference_split"] == "real test split"
    # the real features were cached: a second space reads them without the network's help
    FakeInception.calls.clear()
    InceptionSpace(net, real, tmp_path / "cache")
    assert FakeInception.calls == []


def test_measuring_quality_leaves_the_training_trajectory_alone(workdir):
    """The same GAN run with and without classifier metrics (which train the reference
    before the first step when it is not cached) ends with bit-identical weights: evaluation
    draws on RNGs of its own."""
    from test_data import write_idx

    raw = workdir / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    torch.manual_seed(0)  # a test split on disk, so both runs train on the same 5,000 digits
    write_idx(raw, "t10k", torch.randint(0, 256, (200, 28, 28), dtype=torch.uint8),
              torch.arange(200) % 10)
    weights = {}
    for metrics in ("true", "false"):
        run = workdir / metrics
        result = run_cli(["train", *DIGITS_GAN, f"eval.classifier_metrics={metrics}",
                          f"hydra.run.dir={run}"], workdir)
        assert result.returncode == 0, result.stderr[-3000:]
        has_fid = "classifier_fid" in json.loads((run / "metrics.json").read_text())
        assert has_fid == (metrics == "true")
        weights[metrics] = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    from conftest import assert_states_equal

    for state in weights.values():  # what differs: the eval settings and what they ranked
        del state["config"], state["overrides"], state["best"]
    assert_states_equal(weights["true"], weights["false"])  # networks, optimizers, RNGs, ...
