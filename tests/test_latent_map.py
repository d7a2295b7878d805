"""Latent maps: held-out codes in 2-D (the latent itself, PCA or t-SNE) coloured by class, and
the decoded manifold of a 2-D VAE."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import in_dir, train_in_process
from PIL import Image

from ganlab import __main__
from ganlab.errors import UserError
from ganlab.latent_map import embed_2d, manifold_grid, pca_2d


def test_pca_puts_the_direction_of_most_variance_first() -> None:
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(500, 5, generator=g) * torch.tensor([0.1, 3.0, 0.2, 1.0, 0.1])
    points = pca_2d(codes)
    assert points.shape == (500, 2)
    assert points[:, 0].var() > points[:, 1].var() > 0.5  # the 3.0 axis, then the 1.0 one
    # the first direction is the second input axis, up to sign
    assert abs(torch.corrcoef(torch.stack([points[:, 0], codes[:, 1]]))[0, 1]) > 0.99


def test_embeddings_have_one_point_per_code() -> None:
    g = torch.Generator().manual_seed(0)
    flat = torch.randn(60, 2, generator=g)
    same, how = embed_2d(flat, "auto")
    assert same is flat and "itself" in how
    clusters = torch.cat([torch.randn(30, 8, generator=g), torch.randn(30, 8, generator=g) + 8])
    points, how = embed_2d(clusters, "auto", seed=1)
    assert points.shape == (60, 2) and "t-SNE" in how
    # the two clusters stay apart: every point is nearer its own cluster's centre
    a, b = points[:30].mean(0), points[30:].mean(0)
    assert ((points[:30] - a).norm(dim=1) < (points[:30] - b).norm(dim=1)).all()
    again, _ = embed_2d(clusters, "tsne", seed=1)
    assert torch.allclose(points, again)  # seeded
    with pytest.raises(UserError, match="method must be one of"):
        embed_2d(clusters, "umap")


class TwoDVae:
    """Decodes z to an 8x8 image whose left half shows z1 and top half z2 (sigmoid)."""

    variational = True
    device = torch.device("cpu")

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        x = torch.zeros(len(z), 1, 8, 8)
        x[:, 0, :, :4] += torch.sigmoid(z[:, :1, None])
        x[:, 0, :4, :] += torch.sigmoid(z[:, 1:, None])
        return x.clamp(0, 1)


def test_the_manifold_grows_z1_rightwards_and_z2_upwards() -> None:
    grid = manifold_grid(TwoDVae(), steps=5).float()
    assert grid.shape == (3, 40, 40)
    left_halves = grid[0, 20, [c * 8 for c in range(5)]]  # row 2's left pixels, by column
    assert (left_halves.diff() > 0).all()  # z1 grows to the right
    top_halves = grid[0, [r * 8 for r in range(5)], 36]  # column 4's top pixels, by row
    assert (top_halves.diff() < 0).all()  # z2 grows upwards


def test_latent_map_command_on_a_2d_vae(tmp_path: Path, capsys) -> None:
    train_in_process(["model=vae", "model.latent_dim=2", "model.hidden=[32]",
                      "dataset=synthetic", "dataset.n_samples=200", "trainer.batch_size=20",
                      "trainer.max_steps=3", "log.progress=false", "device=cpu",
                      "hydra.run.dir=run"], tmp_path)
    with in_dir(tmp_path):
        __main__.main(["latent", "ckpt=run", "map=true", "out=map.png"])
    assert "wrote map.png" in capsys.readouterr().out
    picture = np.asarray(Image.open(tmp_path / "map.png"))
    assert picture.shape[:2] == (640, 640) and picture.std() > 0
    manifold = Image.open(tmp_path / "map_manifold.png")
    assert manifold.size == (20 * 28, 20 * 28)
    with in_dir(tmp_path), pytest.raises(SystemExit) as stop:
        __main__.main(["latent", "ckpt=run"])
    assert stop.value.code == 2
    assert "give attribute=NAME" in capsys.readouterr().err


def test_a_gan_map_embeds_samples_beside_the_real_classes(tmp_path: Path, monkeypatch) -> None:
    """The map of a sampling family: real held-out digits and samples, in the feature space
    of the run's classifier (here a stand-in: the reference classifier is tested elsewhere)."""
    from conftest import build_family
    from omegaconf import OmegaConf
    from torch import nn

    from ganlab.data.base import DataSpec, InMemoryDataset
    from ganlab.families.gan import DcganConfig
    from ganlab.latent_map import draw_samples
    from ganlab.metrics import reference

    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 8), nn.ReLU(), nn.Linear(8, 10))
    stand_in = reference.ReferenceClassifier(model, "a stand-in", 1.0, (1, 28, 28))
    monkeypatch.setattr(reference, "load_reference", lambda *a, **k: stand_in)
    family = build_family(DcganConfig(g_features=8, d_features=8))
    cfg = OmegaConf.merge(family_config(), {"eval": {"classifier": "stand-in.pt"}})
    g = torch.Generator().manual_seed(0)
    heldout = InMemoryDataset(DataSpec("synthetic", "image", (1, 28, 28), num_classes=10),
                              torch.randint(0, 256, (40, 1, 28, 28), generator=g,
                                            dtype=torch.uint8), torch.arange(40) % 10)
    import ganlab.latent_map as latent_map

    drawn = {}
    real_scatter = latent_map.scatter_by_class

    def spy(points, labels, names, title, extra=None, extra_label=""):
        drawn.update(points=points, labels=labels, extra=extra, title=title)
        return real_scatter(points, labels, names, title, extra, extra_label)

    monkeypatch.setattr(latent_map, "scatter_by_class", spy)
    (out,) = draw_samples(family, cfg, heldout, tmp_path, 40, "pca", 0,
                          str(tmp_path / "gan_map.png"))
    assert np.asarray(Image.open(out)).shape[:2] == (640, 640)
    # 40 real points by class and 40 samples, embedded together (one PCA of all 80)
    assert drawn["points"].shape == (40, 2) and drawn["extra"].shape == (40, 2)
    assert drawn["labels"].tolist() == (torch.arange(40) % 10).tolist()
    both = torch.cat([drawn["points"], drawn["extra"]])
    assert abs(float(both.mean(0).abs().max())) < 1e-4  # centred together, not apart
    assert "samples" in drawn["title"]


def family_config():
    from conftest import make_config

    from ganlab.families.gan import DcganConfig

    return make_config(DcganConfig(g_features=8, d_features=8))
