"""The lectures' pictures of GAN training: on a line (dataset=gauss1d) the data density, the
generator's density and D(x) in one figure per sample grid; on the 2-D toys D's surface under
the scatter plot; every run's grids as samples/progress.gif."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import assert_bad_input, run_cli, train_in_process
from PIL import Image

from ganlab.metrics.toy import density_image, mode_metrics, scatter_image

pytestmark = pytest.mark.usefixtures("one_thread")


def colour_share(image: torch.Tensor, rgb: tuple[int, int, int], tol: int = 40) -> float:
    """The share of pixels within tol of a colour."""
    diff = (image.permute(1, 2, 0).int() - torch.tensor(rgb)).abs().max(dim=2).values
    return float((diff <= tol).double().mean())


GREEN, BLUE = (44, 160, 44), (31, 119, 180)  # matplotlib's tab:green, tab:blue


def test_the_density_picture_draws_g_and_d_where_they_are():
    centres, std = torch.tensor([[2.0]]), 0.5
    on_mode = 2.0 + 0.5 * torch.randn(5000, 1, generator=torch.Generator().manual_seed(0))
    far = on_mode - 6.0  # the same spread, far left of the data
    half = {"on": density_image(on_mode, centres, std), "far": density_image(far, centres, std)}
    width = half["on"].shape[2]
    for name, image in half.items():
        left = colour_share(image[:, :, : width // 2], (149, 207, 149))  # green at alpha 0.5
        right = colour_share(image[:, :, width // 2 :], (149, 207, 149))
        # G's histogram sits over the data (right half) or far from it (left half)
        assert (right > left) == (name == "on"), (name, left, right)
    flat = density_image(on_mode, centres, std, lambda x: torch.full((len(x),), 0.5))
    assert colour_share(flat, BLUE, 60) > colour_share(half["on"], BLUE, 60)  # D's curve
    with pytest.raises(ValueError):
        density_image(torch.zeros(4, 2), centres, std)


def test_the_scatter_picture_shows_ds_surface():
    points = torch.randn(500, 2)
    plain = scatter_image(points)
    real_on_right = scatter_image(points, surface=lambda p: (p[:, 0] > 0).float())
    assert not torch.equal(plain, real_on_right)
    # coolwarm: red where D says real (right), blue where it says fake (left)
    w = real_on_right.shape[2]
    left, right = real_on_right[:, :, : w // 4].float(), real_on_right[:, :, -w // 4 :].float()
    assert right[0].mean() > right[2].mean() and left[2].mean() > left[0].mean()


def test_mode_metrics_on_a_line():
    centres = torch.tensor([[-2.0], [2.0]])
    samples = torch.cat([torch.full((50, 1), -2.0), torch.full((50, 1), 10.0)])
    out = mode_metrics(samples, centres, 0.1)
    assert out["modes_covered"] == 1 and out["high_quality_fraction"] == 0.5


def test_gauss1d_run_draws_the_lectures_picture_and_an_animation(tmp_path):
    train_in_process(["model=mlp_gan", "dataset=gauss1d", "dataset.means=[-2,2]",
                      "dataset.n_samples=512", "model.g_hidden=[16]", "model.d_hidden=[16]",
                      "model.latent_dim=4", "trainer.max_steps=6", "trainer.batch_size=32",
                      "log.sample_every=2", "log.progress=false", "device=cpu",
                      "hydra.run.dir=run"], tmp_path)
    run = tmp_path / "run"
    frames = sorted((run / "samples").glob("step_*.png"),
                    key=lambda f: int(f.stem.removeprefix("step_")))
    assert len(frames) >= 3, frames  # steps 2, 4, 6
    gif = Image.open(run / "samples" / "progress.gif")
    assert gif.n_frames == len(frames)
    picture = np.asarray(Image.open(frames[-1]).convert("RGB"))
    assert picture.shape[1] > picture.shape[0]  # a wide line plot, not a square scatter
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["modes_total"] == 2


def test_gauss1d_without_centres_is_bad_input(workdir):
    result = run_cli(["train", "model=mlp_gan", "dataset=gauss1d", "dataset.means=[]",
                      "trainer.max_steps=2", "device=cpu"], workdir)
    assert_bad_input(result, "dataset.means needs at least one centre")
