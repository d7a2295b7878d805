"""CIFAR-10 / CIFAR-100 from tiny hand-made batch files in torchvision's pickle layout, and the
commands users run on them (DCGAN, cGAN, VAE, a classifier and its attack)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, assert_bad_input, in_dir, train_in_process, train_refused_in_process
from omegaconf import OmegaConf

from ganlab import __main__
from ganlab.data import build_dataset
from ganlab.data.cifar import CifarConfig
from ganlab.errors import UserError

pytestmark = pytest.mark.usefixtures("no_download")

N_PER_FILE = 8


def write_batch(path: Path, images: np.ndarray, labels: list[int], label_key: str) -> None:
    """One batch file as torchvision reads it: a Python-2 style pickle of a dict with `data`
    (N x 3072 uint8, the R, G and B planes one after another) and the labels."""
    entry = {"batch_label": "made by a test", label_key: labels,
             "data": images.reshape(len(images), -1), "filenames": []}
    path.write_bytes(pickle.dumps(entry, protocol=2))


def fake_cifar10(data_dir: Path, n: int = N_PER_FILE, skip: str | None = None) -> dict:
    """data_dir/cifar-10-batches-py with five training batches and a test batch of n images
    each; returns {file: (images, labels)}. Image k of each file is a constant colour (R, G, B
    differ) so channel order and resizing can be checked."""
    root = data_dir / "cifar-10-batches-py"
    root.mkdir(parents=True)
    files = {}
    rng = np.random.default_rng(0)
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        images[0] = np.array([200, 100, 30], dtype=np.uint8)[:, None, None]
        labels = [(i + j) % 10 for j in range(n)]
        files[name] = (images, labels)
        if name != skip:
            write_batch(root / name, images, labels, "labels")
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"]
    (root / "batches.meta").write_bytes(pickle.dumps({"label_names": names}, protocol=2))
    return files


def cifar_cfg(**kw):
    return OmegaConf.structured(CifarConfig(**kw))


def test_cifar10_reads_the_batches_in_order(tmp_path: Path, no_download: list[str]) -> None:
    files = fake_cifar10(tmp_path)
    data = build_dataset(cifar_cfg(), tmp_path, seed=0, heldout=True)
    train = [files[f"data_batch_{k}"] for k in range(1, 6)]
    assert data.x.shape == (5 * N_PER_FILE, 3, 32, 32) and data.x.dtype == torch.uint8
    assert torch.equal(data.x, torch.from_numpy(np.concatenate([x for x, _ in train])))
    assert data.y.tolist() == [label for _, labels in train for label in labels]
    assert data.spec.shape == (3, 32, 32) and data.spec.num_classes == 10
    assert data.spec.class_names[3] == "cat"  # from batches.meta
    assert data.x[0, :, 0, 0].tolist() == [200, 100, 30]  # R, G, B planes in that order
    # the official test split is the held-out data, not a slice of training
    test_x, test_y = files["test_batch"]
    assert torch.equal(data.heldout.x, torch.from_numpy(test_x))
    assert data.heldout.y.tolist() == test_y
    assert "official test split" in data.heldout.source and "train split" in data.source
    assert no_download == []  # files on disk: no download attempted


def test_cifar10_resizes_grayscales_and_keeps_classes(tmp_path: Path) -> None:
    fake_cifar10(tmp_path)
    data = build_dataset(cifar_cfg(image_size=16, channels=1, classes=[3]), tmp_path, seed=0)
    assert data.x.shape[1:] == (1, 16, 16) and set(data.y.tolist()) == {3}
    assert len(data) == 4  # labels (i + j) % 10 over 5 files of 8: label 3 in four of them
    constant = build_dataset(cifar_cfg(image_size=16, channels=1), tmp_path, seed=0).x[0]
    # BT.601 luma of (200, 100, 30), as PIL's convert("L")
    assert (constant == round(0.299 * 200 + 0.587 * 100 + 0.114 * 30)).all()


def test_cifar100_reads_fine_labels(tmp_path: Path) -> None:
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    images = np.zeros((6, 3, 32, 32), dtype=np.uint8)
    write_batch(root / "train", images, [0, 99, 5, 5, 7, 42], "fine_labels")
    write_batch(root / "test", images[:2], [1, 2], "fine_labels")
    data = build_dataset(cifar_cfg(name="cifar100"), tmp_path, seed=0, heldout=True)
    assert data.y.tolist() == [0, 99, 5, 5, 7, 42] and data.spec.num_classes == 100
    assert data.spec.class_names is None  # no meta file: the labels stay numbers
    assert data.heldout.y.tolist() == [1, 2]


def test_missing_batch_file_names_it_and_where(tmp_path: Path, no_download: list[str]) -> None:
    fake_cifar10(tmp_path, skip="data_batch_3")
    with pytest.raises(UserError) as e:
        build_dataset(cifar_cfg(), tmp_path, seed=0)
    message = str(e.value)
    assert "missing: data_batch_3" in message and "cifar-10-python.tar.gz" in message
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert no_download == ["CIFAR10"]  # it did try to download, once


@pytest.mark.parametrize("content", [
    b"not a pickle",
    pickle.dumps({"data": [1, 2]}),
    pickle.dumps({"data": np.zeros((2, 5), np.uint8), "labels": [0, 1]}),
], ids=["garbage", "no-labels", "wrong-shape"])
def test_corrupt_batch_file_is_one_clear_error(tmp_path: Path, content: bytes) -> None:
    fake_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").write_bytes(content)
    with pytest.raises(UserError, match="data_batch_2 is not a CIFAR batch file"):
        build_dataset(cifar_cfg(), tmp_path, seed=0)


def test_bad_classes_and_channels(tmp_path: Path) -> None:
    fake_cifar10(tmp_path)
    with pytest.raises(UserError, match=r"labels in 0\.\.9"):
        build_dataset(cifar_cfg(classes=[10]), tmp_path, seed=0)
    with pytest.raises(UserError, match="3 \\(RGB\\) or 1"):
        build_dataset(cifar_cfg(channels=4), tmp_path, seed=0)


# --- the commands users run on it -----------------------------------------------------------

RUN = [t for t in TINY if not t.startswith("dataset")] + ["dataset=cifar10", "eval.every=0"]


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    fake_cifar10(root / "data", n=16)
    return root


@pytest.mark.parametrize("model", [
    ["model=dcgan", "model.g_features=8", "model.d_features=8"],
    ["model=cgan", "model.g_features=8", "model.d_features=8"],
    ["model=conv_vae"],
])
def test_generators_train_on_cifar10(cifar_dir: Path, model: list[str]) -> None:
    name = model[0].split("=")[1]
    train_in_process([*RUN, *model, f"hydra.run.dir=runs/{name}"], cifar_dir)
    metrics = json.loads((cifar_dir / "runs" / name / "metrics.json").read_text())
    assert metrics["step"] == 4
    assert (cifar_dir / "runs" / name / "samples" / "step_4.png").is_file()


def test_classifier_and_attack_on_cifar10(cifar_dir: Path, capsys) -> None:
    train_in_process([*RUN, "model=lenet", "model.channels=[4]", "model.hidden=[16]",
                      "hydra.run.dir=runs/lenet"], cifar_dir)
    run = cifar_dir / "runs" / "lenet"
    metrics = json.loads((run / "metrics.json").read_text())
    assert "official test split" in metrics["heldout_data"]
    with in_dir(cifar_dir):
        __main__.main(["attack", f"ckpt={run}", "attack=fgsm", "attack.eps=[0,0.03]",
                       "n_examples=16", f"out={cifar_dir / 'attack'}"])
    assert "eps 0.03" in capsys.readouterr().out
    result = json.loads((cifar_dir / "attack" / "robustness.json").read_text())
    assert "official test split" in result["heldout_data"]  # attacked on unseen images


def test_missing_cifar_is_bad_input_before_training(tmp_path: Path, capsys) -> None:
    result = train_refused_in_process(["dataset=cifar10", "device=cpu"], tmp_path, capsys)
    assert_bad_input(result, "cifar10 is not complete", "cifar-10-python.tar.gz")
    assert not list(tmp_path.glob("outputs/*/*/checkpoints/*"))
