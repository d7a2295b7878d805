"""The sample command: slerp, z arithmetic over grid indices, numbered grids, class labels.

Most tests run sample.main in-process on small stand-in families (load_checkpoint patched);
one test trains a tiny DCGAN and runs the real CLI."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import TINY, run_cli
from PIL import Image

from ganlab import sample
from ganlab.errors import UserError
from ganlab.images import to_uint8

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 12  # stand-in images are 1 x 12 x 12
CELL = SIZE + 2  # make_grid's padding is 2


class LinearFamily:
    """A stand-in generator that is linear in z: image = W z, reshaped to (1, 12, 12)."""

    spec = SimpleNamespace(kind="image", modes=None, mode_std=0.0)
    step = 5
    latent_dim = 6
    value_range = (-10.0, 10.0)

    def __init__(self) -> None:
        self.W = torch.randn(SIZE * SIZE, self.latent_dim, generator=torch.Generator()
                             .manual_seed(1))
        self.calls: list[dict] = []

    def sample_noise(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=generator)

    def image(self, z: torch.Tensor) -> torch.Tensor:
        return (z @ self.W.T).reshape(-1, 1, SIZE, SIZE)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        self.calls.append({"z": z.clone()})
        return self.image(z)

    def to_uint8(self, images: torch.Tensor) -> torch.Tensor:
        return to_uint8(images, self.value_range)


class ConditionalFamily(LinearFamily):
    """A conditional stand-in: W z with the label written into pixel (0, 0) as 3 * label."""

    num_classes = 3

    def generate(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        assert labels.dtype == torch.int64 and labels.shape == (len(z),)
        self.calls.append({"z": z.clone(), "labels": labels.clone()})
        out = self.image(z)
        out[:, 0, 0, 0] = 3.0 * labels
        return out


class PointsFamily(LinearFamily):
    spec = SimpleNamespace(kind="points", modes=None, mode_std=0.0)


def run_main(monkeypatch, family, *args: str) -> None:
    monkeypatch.setattr(sample, "load_checkpoint", lambda ckpt, device: family)
    sample.main(["ckpt=stand-in", *args])


def cell(grid: np.ndarray, row: int, col: int, size: int = SIZE) -> np.ndarray:
    """Cell (row, col) of a make_grid image (H, W) with padding 2."""
    y, x = 2 + row * (size + 2), 2 + col * (size + 2)
    return grid[y : y + size, x : x + size]


def gray(path: Path) -> np.ndarray:
    """A saved grid (make_grid makes 1-channel images RGB) as one (H, W) channel."""
    rgb = np.asarray(Image.open(path))
    assert (rgb == rgb[..., :1]).all()
    return rgb[..., 0]


def grid_z(n: int, seed: int, family=None) -> torch.Tensor:
    family = family or LinearFamily()
    return family.sample_noise(n, torch.Generator().manual_seed(seed))


# --- interpolation --------------------------------------------------------------------------


def test_slerp_exact_endpoints_keeps_norms_and_is_not_linear():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 32, generator=g), torch.randn(6, 32, generator=g)
    b = b * (a.norm(dim=1, keepdim=True) / b.norm(dim=1, keepdim=True))  # equal norms per row
    z = sample.interpolation_noise(a, b, 5, slerp=True).reshape(6, 5, 32)
    torch.testing.assert_close(z[:, 0], a, atol=1e-5, rtol=0)
    torch.testing.assert_close(z[:, -1], b, atol=1e-5, rtol=0)
    torch.testing.assert_close(z.norm(dim=-1), a.norm(dim=1)[:, None].expand(6, 5), atol=1e-4,
                               rtol=0)
    linear = sample.interpolation_noise(a, b, 5, slerp=False).reshape(6, 5, 32)
    torch.testing.assert_close(linear[:, 2], (a + b) / 2)
    # random 32-d vectors are nearly orthogonal: the straight line's midpoint is ~1/sqrt(2) long
    assert (linear[:, 2].norm(dim=-1) < 0.85 * a.norm(dim=1)).all()
    assert (z[:, 2] - linear[:, 2]).norm(dim=-1).min() > 0.1 * a.norm(dim=1).min()


@pytest.mark.parametrize(("args", "mode"), [
    ([], "false"),
    (["interpolate=true"], "linear"),
    (["interpolate=linear"], "linear"),
    (["interpolate=slerp"], "slerp"),
    (["interpolate=true", "slerp=true"], "slerp"),  # the old spelling keeps its meaning
    (["slerp=true"], "false"),  # as before: slerp alone leaves the plain grid
])
def test_interpolate_spellings(args, mode):
    assert sample.parse(["ckpt=x", *args]).interpolate == mode


@pytest.mark.parametrize(("args", "fragment"), [
    (["interpolate=linear", "slerp=true"], "contradict"),
    (["interpolate=sideways"], "false, true, linear or slerp"),
])
def test_interpolate_bad_spellings(args, fragment):
    with pytest.raises(UserError, match=fragment):
        sample.parse(["ckpt=x", *args])


def test_slerp_rows_in_main_follow_great_circles(monkeypatch, tmp_path):
    family = LinearFamily()
    run_main(monkeypatch, family, "n=3", "steps=5", "interpolate=slerp", "seed=4",
             f"out={tmp_path / 'i.npz'}")
    g = torch.Generator().manual_seed(4)
    a, b = family.sample_noise(3, g), family.sample_noise(3, g)
    torch.testing.assert_close(family.calls[0]["z"], sample.interpolation_noise(a, b, 5, True))
    assert np.load(tmp_path / "i.npz")["images"].shape == (15, 1, SIZE, SIZE)


# --- arithmetic -----------------------------------------------------------------------------

GROUPS = "arithmetic=[[3,7,11],[5,9],[0,15]]"


def test_arithmetic_is_mean_a_minus_mean_b_plus_mean_c_of_the_grid_z(monkeypatch, tmp_path):
    family = LinearFamily()
    cfg = sample.parse(["ckpt=x", "n=16", "seed=3", GROUPS, "variations=4"])
    result = sample.latent_arithmetic(family, cfg, torch.Generator().manual_seed(3))
    z = grid_z(16, 3)
    torch.testing.assert_close(result.z, z, atol=0, rtol=0)  # the grid's batch, index for index
    expected = z[[3, 7, 11]].mean(0) - z[[5, 9]].mean(0) + z[[0, 15]].mean(0)
    torch.testing.assert_close(result.result, expected)
    # images: the 7 chosen samples, the 3 means, the result, then the variations
    torch.testing.assert_close(result.images[10], family.image(expected[None])[0])
    torch.testing.assert_close(result.images[7], family.image(z[[3, 7, 11]].mean(0)[None])[0])
    offsets = result.variations - expected
    assert offsets.abs().max() <= 0.25 + 1e-6 and offsets.abs().max() > 0.1
    assert len(result.variations) == 4 and len(result.images) == 7 + 3 + 1 + 4

    # the figure, through main: its cells are exactly the grid's cells of the chosen indices
    run_main(monkeypatch, family, "n=16", "seed=3", f"out={tmp_path / 'grid.npz'}")
    run_main(monkeypatch, family, "n=16", "seed=3", GROUPS, "variations=4",
             f"out={tmp_path / 'arith.png'}")
    grid = np.load(tmp_path / "grid.npz")["images"][:, 0]
    figure = gray(tmp_path / "arith.png")
    columns = 5  # max(3 samples, 4 variations) + 1
    assert figure.shape == (4 * CELL + 2, columns * CELL + 2)
    for row, group in enumerate([[3, 7, 11], [5, 9], [0, 15]]):
        for col, index in enumerate(group):
            assert np.array_equal(cell(figure, row, col), grid[index])
    want = family.to_uint8(family.image(expected[None]))[0, 0].numpy()
    assert np.array_equal(cell(figure, 3, columns - 1), want)  # G(A - B + C): bottom right
    assert (cell(figure, 1, 2) == 255).all()  # B has 2 samples: white gap before its mean
    saved = np.load(tmp_path / "arith.npz")
    assert np.allclose(saved["result"], expected.numpy())
    assert saved["group_b"].tolist() == [5, 9] and saved["z"].shape == (16, 6)


def test_arithmetic_without_jitter_repeats_the_result(monkeypatch):
    cfg = sample.parse(["ckpt=x", "n=16", GROUPS, "variations=3", "jitter=0"])
    result = sample.latent_arithmetic(LinearFamily(), cfg, torch.Generator().manual_seed(0))
    assert torch.equal(result.variations, result.result.expand(3, -1))


@pytest.mark.parametrize(("groups", "n", "columns"), [
    ("[[0],[1],[2]]", 8, 9),  # default 8 variations: 9 columns
    ("[[0,1,2,3,4,5,6,7,8,9],[1],[2]]", 16, 11),  # the longest group sets the width
])
def test_arithmetic_figure_size(monkeypatch, tmp_path, groups, n, columns):
    family = LinearFamily()
    run_main(monkeypatch, family, f"n={n}", f"arithmetic={groups}",
             f"out={tmp_path / 'a.png'}")
    assert Image.open(tmp_path / "a.png").size == (columns * CELL + 2, 4 * CELL + 2)
    # the z beside it: the grid's batch (seed 0), and A - B + C of its group means
    saved, chosen = np.load(tmp_path / "a.npz"), json.loads(groups)
    z = grid_z(n, 0)
    assert np.array_equal(saved["z"], z.numpy())
    means = [z[g].mean(0) for g in chosen]
    assert np.allclose(saved["result"], (means[0] - means[1] + means[2]).numpy(), atol=1e-6)
    # the cells: each group's samples, white up to G(mean) in the last column; the variations,
    # all different, then G(A - B + C)
    figure = gray(tmp_path / "a.png")

    def shown(v: torch.Tensor) -> np.ndarray:
        return family.to_uint8(family.image(v[None]))[0, 0].numpy()

    for row, group in enumerate(chosen):
        for col, index in enumerate(group):
            assert np.array_equal(cell(figure, row, col), shown(z[index])), (row, col)
        assert all((cell(figure, row, col) == 255).all() for col in range(len(group), columns - 1))
        assert np.array_equal(cell(figure, row, columns - 1), shown(means[row]))
    result = cell(figure, 3, columns - 1)
    assert np.array_equal(result, shown(torch.from_numpy(saved["result"])))
    variations = [cell(figure, 3, col) for col in range(8)]  # 8 by default, then white
    assert len({v.tobytes() for v in [*variations, result]}) == 9
    assert all((cell(figure, 3, col) == 255).all() for col in range(8, columns - 1))


@pytest.mark.parametrize(("groups", "fragment"), [
    ("[[1,2],[3]]", "exactly three groups"),
    ("[[1],[2],[3],[4]]", "exactly three groups"),
    ("[1,2,3]", "exactly three groups"),
    ("[[1],[],[2]]", "group B is empty"),
    ("[[1],[2],[64]]", "group C has index 64"),
    ("[[-1],[2],[3]]", "group A has index -1"),
])
def test_arithmetic_bad_groups(groups, fragment):
    with pytest.raises(UserError, match=fragment):
        sample.parse(["ckpt=x", "n=64", f"arithmetic={groups}"])


@pytest.mark.parametrize(("args", "fragment"), [
    (["interpolate=true"], "not both"),
    (["out=a.npz"], "writes a .png"),
    (["variations=-1"], "must not be negative"),
])
def test_arithmetic_bad_options(args, fragment):
    with pytest.raises(UserError, match=fragment):
        sample.parse(["ckpt=x", "arithmetic=[[1],[2],[3]]", *args])


def test_arithmetic_and_numbers_refuse_2d_points(monkeypatch, tmp_path):
    for option in ("arithmetic=[[1],[2],[3]]", "numbers=true"):
        with pytest.raises(UserError, match="2-D points"):
            run_main(monkeypatch, PointsFamily(), option, f"out={tmp_path / 'p.png'}")


# --- numbered grid --------------------------------------------------------------------------


def test_numbers_draw_in_each_cell_corner_and_keep_the_size(monkeypatch, tmp_path):
    family = LinearFamily()
    run_main(monkeypatch, family, "n=16", f"out={tmp_path / 'plain.png'}")
    run_main(monkeypatch, family, "n=16", "numbers=true", f"out={tmp_path / 'numbered.png'}")
    plain, numbered = gray(tmp_path / "plain.png"), gray(tmp_path / "numbered.png")
    assert plain.shape == numbered.shape == (4 * CELL + 2, 4 * CELL + 2)
    for i in range(16):
        a, b = cell(plain, i // 4, i % 4), cell(numbered, i // 4, i % 4)
        assert (a[:3, :3] != b[:3, :3]).any(), i  # the box sits in the top-left corner
        assert b[0, 0] == 0  # black box
    # the digits differ: cells 1 and 7 get different marks over the same box
    marks = [(cell(numbered, i // 4, i % 4) > 128)[:10, :8] for i in (1, 7)]
    assert marks[0].any() and not np.array_equal(*marks)
    with pytest.raises(UserError, match="numbers=true"):
        sample.parse(["ckpt=x", "numbers=true", "out=s.npz"])


def test_arithmetic_numbers_label_the_chosen_samples(monkeypatch, tmp_path):
    family = LinearFamily()
    run_main(monkeypatch, family, "n=16", GROUPS, f"out={tmp_path / 'a.png'}")
    run_main(monkeypatch, family, "n=16", GROUPS, "numbers=true", f"out={tmp_path / 'b.png'}")
    a, b = gray(tmp_path / "a.png"), gray(tmp_path / "b.png")
    assert a.shape == b.shape
    assert (cell(a, 0, 0) != cell(b, 0, 0)).any()  # index 3 drawn
    assert np.array_equal(cell(a, 3, 8), cell(b, 3, 8))  # the result cell is left alone


# --- conditional models ---------------------------------------------------------------------


def test_conditional_grid_has_a_row_per_class_with_shared_column_noise(monkeypatch, tmp_path):
    family = ConditionalFamily()
    run_main(monkeypatch, family, "n=7", "seed=2", f"out={tmp_path / 'c.npz'}")
    saved = np.load(tmp_path / "c.npz")
    assert saved["labels"].tolist() == [0, 0, 1, 1, 2, 2]  # 7 // 3 = 2 columns, 3 rows
    images = torch.from_numpy(saved["images"]).reshape(3, 2, 1, SIZE, SIZE)
    z = grid_z(2, 2)
    torch.testing.assert_close(family.calls[0]["z"], z.repeat(3, 1), atol=0, rtol=0)
    label_pixel = family.to_uint8(torch.tensor([0.0, 3.0, 6.0]))
    for row in range(3):
        assert (images[row, :, 0, 0, 0] == label_pixel[row]).all()
        # the same noise in every row: the images agree away from the label pixel
        assert torch.equal(images[row, :, 0, 1:], images[0, :, 0, 1:])
    assert not torch.equal(images[0, 0], images[0, 1])  # the columns differ
    run_main(monkeypatch, family, "n=7", f"out={tmp_path / 'c.png'}")
    assert Image.open(tmp_path / "c.png").size == (2 * CELL + 2, 3 * CELL + 2)


def test_label_draws_one_class_from_the_grid_noise(monkeypatch, tmp_path):
    family = ConditionalFamily()
    run_main(monkeypatch, family, "n=5", "seed=1", "label=2", f"out={tmp_path / 'l.npz'}")
    assert np.load(tmp_path / "l.npz")["labels"].tolist() == [2] * 5
    torch.testing.assert_close(family.calls[0]["z"], grid_z(5, 1), atol=0, rtol=0)
    run_main(monkeypatch, family, "n=6", "label=1", "arithmetic=[[0],[1],[2,3]]", "variations=2",
             f"out={tmp_path / 'a.png'}")
    assert family.calls[-1]["labels"].tolist() == [1] * (4 + 3 + 1 + 2)
    run_main(monkeypatch, family, "n=4", "interpolate=true", "steps=2", f"out={tmp_path / 'i.npz'}")
    assert family.calls[-1]["labels"].tolist() == [0, 0, 1, 1, 2, 2, 0, 0]  # row r: r % 3


@pytest.mark.parametrize(("family", "args", "fragment"), [
    (ConditionalFamily, ["label=3"], "not a class of this model"),
    (ConditionalFamily, ["arithmetic=[[0],[1],[2]]"], "needs label=K"),
    (LinearFamily, ["label=0"], "needs a conditional model"),
])
def test_label_errors(monkeypatch, tmp_path, family, args, fragment):
    with pytest.raises(UserError, match=fragment):
        run_main(monkeypatch, family(), *args, f"out={tmp_path / 'x.png'}")


# --- truncation ------------------------------------------------------------------------------


class TruncatedFamily(LinearFamily):
    """A stand-in with the truncation trick: under truncated(psi), generate scales z by psi."""

    psi = 1.0

    @contextlib.contextmanager
    def truncated(self, psi: float):
        self.psi = psi
        try:
            yield
        finally:
            self.psi = 1.0

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        return super().generate(self.psi * z)


def test_truncation_applies_while_drawing_and_is_undone(monkeypatch, tmp_path):
    family = TruncatedFamily()
    run_main(monkeypatch, family, "n=4", "seed=3", "truncation=0.5", f"out={tmp_path / 't.npz'}")
    torch.testing.assert_close(family.calls[-1]["z"], 0.5 * grid_z(4, 3), atol=0, rtol=0)
    assert family.psi == 1.0
    run_main(monkeypatch, family, "n=4", "seed=3", f"out={tmp_path / 'p.npz'}")  # psi 1: plain
    torch.testing.assert_close(family.calls[-1]["z"], grid_z(4, 3), atol=0, rtol=0)


@pytest.mark.parametrize(("family", "args", "fragment"), [
    (TruncatedFamily, ["truncation=0"], r"truncation must be in \(0, 1\]"),
    (TruncatedFamily, ["truncation=1.5"], r"truncation must be in \(0, 1\]"),
    (LinearFamily, ["truncation=0.7"], "needs a model with the truncation trick"),
])
def test_truncation_errors(monkeypatch, tmp_path, family, args, fragment):
    with pytest.raises(UserError, match=fragment):
        run_main(monkeypatch, family(), *args, f"out={tmp_path / 'x.png'}")


# --- the real CLI ---------------------------------------------------------------------------


def test_cli_arithmetic_and_slerp_on_a_trained_dcgan(workdir: Path):
    train = run_cli(["train", *TINY, "hydra.run.dir=run"], workdir)
    assert train.returncode == 0, train.stderr[-3000:]
    result = run_cli(["sample", "ckpt=run", "n=8", "seed=3", "arithmetic=[[0,1],[2],[3,4]]",
                      "out=a.png"], workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    # 4 rows; 9 columns: 8 variations (the default) + the G(mean) / G(A - B + C) column
    assert Image.open(workdir / "a.png").size == (9 * 30 + 2, 4 * 30 + 2)
    import ganlab

    family = ganlab.load_checkpoint(workdir / "run")
    saved, groups = np.load(workdir / "a.npz"), [[0, 1], [2], [3, 4]]
    z = family.sample_noise(8, torch.Generator().manual_seed(3)).cpu()  # the grid's (n=8, seed=3)
    assert np.array_equal(saved["z"], z.numpy())
    means = torch.stack([z[g].mean(0) for g in groups])
    assert np.allclose(saved["means"], means.numpy(), atol=1e-6)
    want = means[0] - means[1] + means[2]
    assert np.allclose(saved["result"], want.numpy(), atol=1e-6)
    jitter = saved["variations"] - saved["result"]
    assert saved["variations"].shape == (8, 100) and 0 < np.abs(jitter).max() <= 0.25 + 1e-6
    # the figure shows G of them: samples, G(mean) in the last column, G(A - B + C) below
    figure = gray(workdir / "a.png").astype(int)

    def shown(v: torch.Tensor) -> np.ndarray:
        return family.to_uint8(family.generate(v[None]))[0, 0].numpy().astype(int)

    for row, group in enumerate(groups):
        for col, index in enumerate(group):
            assert np.abs(cell(figure, row, col, 28) - shown(z[index])).max() <= 1  # rounding
        assert (cell(figure, row, len(group), 28) == 255).all()
        assert np.abs(cell(figure, row, 8, 28) - shown(means[row])).max() <= 1
    result_cell = cell(figure, 3, 8, 28)
    assert np.abs(result_cell - shown(want)).max() <= 1
    for col, v in enumerate(torch.from_numpy(saved["variations"])):
        assert np.abs(cell(figure, 3, col, 28) - shown(v)).max() <= 1
    assert np.abs(cell(figure, 0, 0, 28) - cell(figure, 0, 1, 28)).max() > 2  # z 0 vs z 1

    result = run_cli(["sample", "ckpt=run", "n=2", "steps=4", "interpolate=slerp", "out=s.npz"],
                     workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    g = torch.Generator().manual_seed(0)
    a, b = family.sample_noise(2, g), family.sample_noise(2, g)
    want = family.to_uint8(family.generate(sample.interpolation_noise(a, b, 4, True)))
    linear = family.to_uint8(family.generate(sample.interpolation_noise(a, b, 4, False)))
    got = torch.from_numpy(np.load(workdir / "s.npz")["images"])
    assert (got.int() - want.int()).abs().max() <= 1  # float noise may flip a rounding
    assert (got.int() - linear.int()).abs().max() > 1
