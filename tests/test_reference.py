"""The reference classifier of the digit metrics: built once per dataset and source at 28 px,
before a run trains; its held-out accuracy recorded beside every number it gives and checked
(below eval.reference_min_accuracy its metrics are left out); classifier FID orders real
digits, a trained generator and an untrained one; the `reference` command.

One reference is trained for the module (about half a minute on one core) in a temporary
data_dir, and the runs here read it from there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import assert_bad_input, run_in_process, tiny_loop, train_in_process
from omegaconf import OmegaConf
from test_loop import CountingFamily

from ganlab.config import ImageDatasetConfig
from ganlab.metrics import reference

pytestmark = pytest.mark.usefixtures("one_thread")

# a run on the bundled digits, evaluated once at its end
DIGITS = ["dataset=mnist", "dataset.source=bundled", "model=mlp_gan", "trainer.batch_size=64",
          "log.progress=false", "log.sample_every=0", "eval.every=0", "eval.n_samples=1000",
          "device=cpu"]


def bundled_digits():
    return OmegaConf.structured(ImageDatasetConfig(name="mnist", source="bundled"))


def cheap_reference(data_dir: Path, steps: int = 30) -> reference.ReferenceClassifier:
    """A reference trained for a few steps only (a second or two; well below 0.9 held-out
    accuracy, so runs that use it set eval.reference_min_accuracy=0): for tests whose subject
    is not the reference itself."""
    return reference.train_reference(bundled_digits(), data_dir, torch.device("cpu"),
                                     steps=steps)


@pytest.fixture(scope="module")
def root(tmp_path_factory, one_thread):
    return tmp_path_factory.mktemp("reference")


@pytest.fixture(scope="module")
def ref(root) -> reference.ReferenceClassifier:
    return reference.train_reference(bundled_digits(), root / "data", torch.device("cpu"))


def metrics_of(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_the_reference_is_accurate_and_cached_once_per_dataset_and_source(ref, root):
    assert ref.accuracy >= 0.95  # 0.972 on the 500 held-out bundled digits when written
    assert ref.input_shape == (1, 28, 28)
    assert ref.path == (root / "data" / "ganlab_reference" /
                        "mnist_bundled_4500train_28px_lenet16-32-128.pt")
    assert ref.trained_seconds is not None and ref.trained_seconds < 300
    stored = reference.cached_details(ref.path)
    assert stored["accuracy"] == ref.accuracy and stored["steps"] == reference.REFERENCE_STEPS
    assert "kept out of training" in stored["heldout"]
    # a run at any size, with any class subset, reads the same file and does not train it again
    again = reference.train_reference(OmegaConf.merge(bundled_digits(), {"image_size": 64,
                                                                          "classes": [3]}),
                                      root / "data", torch.device("cpu"))
    assert again.path == ref.path and again.trained_seconds is None
    assert again.accuracy == ref.accuracy and again.description == ref.description


SHARED_T10K = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-t10k"


@pytest.mark.skipif(not SHARED_T10K.is_dir(),
                    reason="the team's copy of MNIST's test split is not here")
def test_the_reference_generalises_to_the_official_test_split(ref):
    from ganlab.data.base import DataSpec, InMemoryDataset
    from ganlab.data.mnist import read_idx

    folder = SHARED_T10K
    x = read_idx(folder / "t10k-images-idx3-ubyte.gz").unsqueeze(1)
    y = read_idx(folder / "t10k-labels-idx1-ubyte.gz").long()
    test = InMemoryDataset(DataSpec("mnist", "image", (1, 28, 28), 10), x, y)
    assert ref.measure_accuracy(test) >= 0.95


def test_larger_images_are_resized_to_the_reference(ref):
    """64-px images are brought to 28 px (antialiased bilinear) and classified as well."""
    from ganlab.data import build_dataset
    from ganlab.data.base import InMemoryDataset
    from ganlab.images import resize_uint8

    heldout = build_dataset(reference.native_config(bundled_digits(), ref.path.parent.parent),
                            ref.path.parent.parent, 0, heldout=True).heldout
    big = InMemoryDataset(heldout.spec, resize_uint8(heldout.x, 64), heldout.y)
    assert ref.adapt(big.x[:2]).shape == (2, 1, 28, 28)
    assert ref.measure_accuracy(big) >= ref.accuracy - 0.02


def test_classifier_fid_ranks_real_digits_a_trained_and_an_untrained_generator(ref, root):
    from ganlab.data import build_dataset

    data = build_dataset(reference.native_config(bundled_digits(), root / "data"),
                         root / "data", 0, heldout=True)
    space = reference.ClassifierSpace(ref, data.heldout, min_share=0.2)
    # training digits (the bundled ones are sorted by class: a random 1,000) against the
    # held-out ones
    real = space.measure(data.x[torch.randperm(len(data),
                                               generator=torch.Generator().manual_seed(0))[:1000]])
    # the lecture's MLP GAN: 1,500 steps (about 15 s) give blurry digits of most classes
    for steps in (1, 1500):
        train_in_process([*DIGITS, f"trainer.max_steps={steps}", f"hydra.run.dir=gan{steps}"],
                         root)
    untrained, trained = metrics_of(root / "gan1"), metrics_of(root / "gan1500")
    print(f"classifier FID: real {real['classifier_fid']:.1f}, trained "
          f"{trained['classifier_fid']:.1f}, untrained {untrained['classifier_fid']:.1f}")
    # when written: real 23, trained 863-1194 (seeds 0-2), untrained 2957
    assert real["classifier_fid"] < trained["classifier_fid"] < untrained["classifier_fid"]
    assert 10 * real["classifier_fid"] < trained["classifier_fid"]  # not by a hair
    assert trained["classifier_fid"] < 0.6 * untrained["classifier_fid"]
    assert real["class_coverage"] == 1.0 and real["mean_confidence"] > 0.9
    # the accuracy of what measured them, beside what it is
    for metrics in (trained, untrained, real):
        assert metrics["classifier_accuracy"] == ref.accuracy
        assert metrics["classifier_backbone"] == ref.description


def test_a_64px_run_measures_with_the_28px_reference(ref, root):
    train_in_process(["dataset=mnist", "dataset.source=bundled", "dataset.image_size=64",
                      "model=dcgan", "model.g_features=8", "model.d_features=8",
                      "trainer.max_steps=2", "trainer.batch_size=8", "log.progress=false",
                      "log.sample_every=0", "eval.every=0", "eval.n_samples=200",
                      "device=cpu", "hydra.run.dir=big"], root)
    metrics = metrics_of(root / "big")
    assert metrics["classifier_accuracy"] == ref.accuracy
    assert metrics["classifier_backbone"] == ref.description
    assert metrics["classifier_fake_images"] == 200 and metrics["classifier_fid"] > 0
    assert metrics["classifier_real_images"] == 500  # the run's own held-out digits, at 28 px
    references = sorted(p.name for p in (root / "data" / "ganlab_reference").glob("mnist_*"))
    assert references == [ref.path.name]  # one file for every image size
    assert "building the reference classifier" not in (root / "big" / "train.log").read_text()


def test_a_reference_below_the_threshold_leaves_its_metrics_out(ref, root):
    train_in_process([*DIGITS, "trainer.max_steps=3", "eval.every=1", "eval.n_samples=100",
                      "eval.reference_min_accuracy=0.999", "hydra.run.dir=strict"], root)
    metrics = metrics_of(root / "strict")
    assert not [k for k in metrics if k.startswith("class")], metrics  # no classifier metrics
    log = (root / "strict" / "train.log").read_text()
    warning = (f"reference classifier {ref.path} reaches only {ref.accuracy:.2f} held-out "
               "accuracy (< eval.reference_min_accuracy=0.999): classifier metrics left out")
    assert log.count(warning) == 1, log  # once for the run's three evaluations


def test_a_classifier_checkpoint_is_checked_too(ref, root):
    """eval.classifier=PATH: its accuracy on the held-out digits, at its own input size."""
    train_in_process(["model=lenet", "dataset.source=bundled", "dataset.image_size=32",
                      "trainer.max_steps=1", "trainer.batch_size=16", "eval.every=0",
                      "eval.n_samples=50", "log.sample_every=0", "log.progress=false",
                      "device=cpu", "hydra.run.dir=lenet"], root)
    train_in_process([*DIGITS, "trainer.max_steps=1", "eval.n_samples=100",
                      f"eval.classifier={root / 'lenet'}", "hydra.run.dir=judged"], root)
    assert "class_coverage" not in metrics_of(root / "judged")
    log = (root / "judged" / "train.log").read_text()
    assert f"reference classifier eval.classifier={root / 'lenet'} reaches only" in log
    # trusted when the threshold allows it: its accuracy comes along with its numbers
    train_in_process([*DIGITS, "trainer.max_steps=1", "eval.n_samples=100",
                      f"eval.classifier={root / 'lenet'}", "eval.reference_min_accuracy=0",
                      "hydra.run.dir=judged_anyway"], root)
    metrics = metrics_of(root / "judged_anyway")
    assert 0 <= metrics["classifier_accuracy"] < 0.9
    assert "classifier checkpoint" in metrics["classifier_backbone"]


def test_the_reference_is_built_before_training_and_measures_once_at_the_end(tmp_path,
                                                                              monkeypatch):
    """A run shorter than eval.every and log.sample_every: the reference is built (announced
    in the log) before the loop starts, and the one evaluation, at the end, trains nothing."""
    from ganlab.loop import Loop

    events: list[str] = []
    build, run, measure = (reference.train_reference, Loop.run,
                           reference.ClassifierSpace.measure)
    monkeypatch.setattr(reference, "REFERENCE_STEPS", 20)  # a quick, poor one
    monkeypatch.setattr(reference, "train_reference",
                        lambda *a, **k: events.append("reference") or build(*a, **k))
    monkeypatch.setattr(Loop, "run", lambda self, *a, **k: events.append("loop") or
                        run(self, *a, **k))
    monkeypatch.setattr(reference.ClassifierSpace, "measure",
                        lambda self, *a, **k: events.append("measure") or measure(self, *a, **k))
    train_in_process([*DIGITS, "trainer.max_steps=3", "eval.every=1000",
                      "log.sample_every=500", "eval.n_samples=100",
                      "eval.reference_min_accuracy=0", "hydra.run.dir=run"], tmp_path)
    assert events == ["reference", "loop", "measure"]
    log = (tmp_path / "run" / "train.log").read_text()
    announced = log.index("building the reference classifier of mnist once")
    assert "about" in log[announced:].splitlines()[0]
    assert announced < log.index("done: 3 steps")
    assert "class_coverage" in metrics_of(tmp_path / "run")


class EvaluationCountingFamily(CountingFamily):
    def __init__(self) -> None:
        super().__init__()
        self.evaluations: list[int] = []

    def evaluate(self):
        self.evaluations.append(self.steps)
        return {}


def test_a_run_shorter_than_the_cadences_evaluates_once_at_the_end(tmp_path):
    family = EvaluationCountingFamily()
    loop = tiny_loop(tmp_path, family, max_steps=6)
    loop.cfg.eval.every, loop.cfg.log.sample_every = 1000, 500
    loop.run()
    assert family.evaluations == [6]


@pytest.mark.parametrize(("every", "expected"), [(1000, [6]), (0, [6]), (4, [4, 6]),
                                                  (3, [3, 6])])
def test_sample_grids_do_not_evaluate(tmp_path, every, expected):
    """Metrics at eval.every and once at the end (eval.every=0: only there), whatever the
    sample-grid cadence."""
    family = EvaluationCountingFamily()
    loop = tiny_loop(tmp_path, family, max_steps=6)
    loop.cfg.eval.every, loop.cfg.log.sample_every = every, 2
    loop.run()
    assert family.evaluations == expected


def test_old_runs_lose_the_retired_reference_steps():
    from ganlab import checkpoint

    state = checkpoint.migrate({"config": {"eval": {"every": 0, "reference_steps": 30}},
                                "overrides": ["eval.reference_steps=30", "eval.every=0"]})
    assert state["config"] == {"eval": {"every": 0}}
    assert state["overrides"] == ["eval.every=0"]


def test_reference_command(ref, root, capsys):
    from ganlab import __main__

    capsys.readouterr()
    __main__.main(["reference", "dataset=mnist", "dataset.source=bundled",
                   f"data_dir={root / 'data'}"])
    out = capsys.readouterr().out
    assert f"held-out accuracy: {ref.accuracy:.4f}" in out
    assert "cached: 400 steps" in out and str(ref.path) in out
    assert_bad_input(run_in_process(["reference", "dataset=celeba"], capsys),
                     "reference classifiers for mnist, fashion_mnist, not 'celeba'")
    assert_bad_input(run_in_process(["reference", "steps=0"], capsys),
                     "steps must be at least 1")
    assert_bad_input(run_in_process(["reference", "dataset.image_size=64"], capsys),
                     "image_size")
    assert_bad_input(run_in_process(["reference", "force=maybe"], capsys), "force")
    assert_bad_input(run_in_process(["reference", "dataset=fashion_mnist",
                                     "dataset.source=bundled", f"data_dir={root / 'data'}"],
                                    capsys), "fashion_mnist has no bundled copy")


def test_the_reference_command_trains_a_new_one(tmp_path, capsys):
    from ganlab import __main__

    capsys.readouterr()
    __main__.main(["reference", "dataset.source=bundled", f"data_dir={tmp_path}", "steps=5",
                   "force=true"])
    out = capsys.readouterr().out
    assert "trained now: 5 steps in" in out
    assert "below eval.reference_min_accuracy's default 0.9" in out
    assert (tmp_path / "ganlab_reference" / "mnist_bundled_4500train_28px_lenet16-32-128.pt"
            ).is_file()
