"""model=gan3d (Wu et al. 2016): network shapes at each grid size, a training step with the
paper's D accuracy threshold, shape metrics, and `sample` writing voxels and pictures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import in_dir, train_in_process
from PIL import Image

from ganlab.config import compose
from ganlab.data import build_dataset
from ganlab.data.base import DataSpec
from ganlab.errors import UserError
from ganlab.families import FAMILIES
from ganlab.metrics.voxels import nearest_iou, shape_metrics
from ganlab.models.gan3d import build_gan3d

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_3D = ["model=gan3d", "dataset=voxels", "dataset.size=8", "dataset.n_samples=32",
           "dataset.n_test=8", "model.g_features=4", "model.d_features=4", "model.latent_dim=8",
           "trainer.batch_size=8", "device=cpu"]


def config(*overrides: str):
    return compose([*TINY_3D, *overrides])


@pytest.mark.parametrize(("size", "layers"), [(16, 3), (32, 4)])
def test_networks_take_and_give_grids_of_each_size(size, layers):
    cfg = config(f"dataset.size={size}", "model.latent_dim=200")
    spec = DataSpec("voxels", "voxels", (1, size, size, size))
    nets = build_gan3d(cfg.model, spec)
    z = torch.rand(3, 200) * 2 - 1
    with torch.no_grad():
        fake = nets.G(z)
        scores = nets.D(fake)
    assert fake.shape == (3, 1, size, size, size)
    assert 0 <= float(fake.min()) and float(fake.max()) <= 1  # sigmoid occupancy
    assert scores.shape == (3,)
    ups = [m for m in nets.G.modules() if isinstance(m, torch.nn.ConvTranspose3d)]
    downs = [m for m in nets.D.modules() if isinstance(m, torch.nn.Conv3d)]
    assert len(ups) == len(downs) == layers  # fewer layers at smaller grids
    assert ups[0].out_channels == 4 * 2 ** (layers - 2)  # g_features=4, doubling towards z
    assert all(m.bias is None for m in ups + downs)


def test_the_paper_settings_are_the_defaults():
    m = compose(["model=gan3d", "dataset=voxels"]).model
    assert (m.latent_dim, m.lr_g, m.lr_d, list(m.betas), m.d_threshold) == \
        (200, 0.0025, 1e-5, [0.5, 0.999], 0.8)
    assert compose(["model=gan3d", "dataset=voxels"]).dataset.size == 32


def family_and_batch(*overrides: str):
    torch.manual_seed(0)
    cfg = config(*overrides)
    data = build_dataset(cfg.dataset, "data", 0)
    family = FAMILIES.get("gan3d")(cfg, data.spec, torch.device("cpu"))
    x, y = next(data.batches(8, 0))
    return family, (x, y)


def snapshot(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def changed(net: torch.nn.Module, before: list[torch.Tensor]) -> bool:
    return any(not torch.equal(p, b) for p, b in zip(net.parameters(), before, strict=True))


def test_one_training_step_and_the_accuracy_threshold():
    family, batch = family_and_batch("model.d_threshold=1")
    g, d = snapshot(family.G), snapshot(family.D)
    out = family.train_step(batch)
    assert all(torch.isfinite(v) for v in out.values())
    assert changed(family.G, g) and changed(family.D, d) and float(out["D/update_share"]) == 1

    # the paper's threshold: D rests on a batch it classifies better than 80%, learns on one
    # it classifies at most that well; G learns either way
    for accuracy, learns in ((0.9, False), (0.8, True)):
        family, batch = family_and_batch("model.d_threshold=0.8")
        decisions = family._d_decisions
        family._d_decisions = lambda r, f, a=accuracy, d=decisions: {
            **d(r, f), "D/accuracy": torch.tensor(a)}
        g, d = snapshot(family.G), snapshot(family.D)
        out = family.train_step(batch)
        assert changed(family.G, g) and changed(family.D, d) == learns
        assert float(out["D/update_share"]) == float(learns) and family.d_chances == 1


def test_nearest_iou_by_hand():
    a = torch.zeros(2, 1, 4, 4, 4, dtype=torch.uint8)
    b = torch.zeros(3, 1, 4, 4, 4, dtype=torch.uint8)
    a[0, 0, :2] = 1  # half the cube (32 voxels)
    a[1, 0, 0, 0, 0] = 1  # one voxel
    b[0, 0, :1] = 1  # a quarter (16), inside a[0]: IoU 16 / 32
    b[1, 0, 0, 0, :2] = 1  # two voxels, one of them a[1]'s: IoU 1 / 2 with a[1], 2/32 with a[0]
    b[2, 0, 3] = 1  # a quarter nobody has
    best_a, best_b = nearest_iou(a, b)
    assert best_a.tolist() == [0.5, 0.5]
    assert best_b.tolist() == [0.5, 0.5, 0.0]
    real = torch.cat([a, b])
    metrics = shape_metrics(real, real)
    assert metrics["iou_fidelity"] == metrics["iou_coverage"] == 1.0
    assert metrics["occupancy"] == metrics["occupancy_real"] == float(real.float().mean())
    assert metrics["connected"] == metrics["covered"] == 1.0
    by_class = shape_metrics(a, b, labels=torch.tensor([0, 1, 1]), class_names=("x", "y", "z"))
    assert by_class["covered"] == pytest.approx(2 / 3)
    assert (by_class["iou_coverage_x"], by_class["iou_coverage_y"]) == (0.5, 0.25)
    assert "iou_coverage_z" not in by_class  # no real shape of that class


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("gan3d")
    train_in_process([*TINY_3D, "trainer.max_steps=2", "log.every=1", "log.sample_every=0",
                      "log.n_samples=4", "eval.n_samples=16", "log.progress=false",
                      f"hydra.run.dir={root / 'run'}"], root)
    return root


def test_a_run_reports_shape_metrics_and_no_image_metrics(tiny_run):
    metrics = json.loads((tiny_run / "run" / "metrics.json").read_text())
    for key in ("iou_fidelity", "iou_coverage", "occupancy", "occupancy_real", "connected"):
        assert 0 <= metrics[key] <= 1, key
    assert metrics["connected_real"] == 1.0  # every procedural shape is in one piece
    assert any(key.startswith("iou_coverage_") for key in metrics)  # per class of shape
    assert metrics["best_iou_coverage"] >= metrics["iou_coverage"]
    assert not {"sharpness", "fid", "classifier_fid"} & set(metrics)
    picture = Image.open(tiny_run / "run" / "samples" / "step_2.png")
    assert picture.mode == "RGB" and picture.size[0] > 64


def sample(run, *args: str) -> None:
    from ganlab import __main__

    with in_dir(run):
        __main__.main(["sample", f"ckpt={run / 'run'}", *args])


def test_sample_writes_voxels_and_pictures(tiny_run):
    sample(tiny_run, "n=5", "out=s.npz")
    with np.load(tiny_run / "s.npz") as f:
        assert list(f.keys()) == ["voxels"]
        voxels = f["voxels"]
    assert voxels.shape == (5, 8, 8, 8) and voxels.dtype == np.uint8
    assert set(np.unique(voxels)) <= {0, 1}
    sample(tiny_run, "n=5", "nrow=5", "out=s.png")
    shaded = Image.open(tiny_run / "s.png")
    assert shaded.mode == "RGB" and shaded.size == (5 * 48 + 12, 48 + 4)
    sample(tiny_run, "n=2", "render=views", "out=v.png")
    assert Image.open(tiny_run / "v.png").size[0] > 2 * Image.open(tiny_run / "v.png").size[1]


@pytest.mark.parametrize(("args", "fragment"), [
    (["render=wireframe", "out=x.png"], "render='wireframe'"),
    (["numbers=true", "out=x.png"], "draws 3-D shapes"),
])
def test_sample_refuses_what_does_not_apply_to_shapes(tiny_run, args, fragment):
    from ganlab import sample as sample_command
    from ganlab.checkpoint import load_checkpoint

    cfg = sample_command.parse([f"ckpt={tiny_run / 'run'}", *args])
    family = load_checkpoint(cfg.ckpt, "cpu")
    with pytest.raises(UserError, match=fragment):
        sample_command.check_family(family, cfg)
