"""dataset=voxels: procedural shapes are what they claim (volumes, symmetry, classes), the
binvox reader reads the format (a hand-built file and a round trip), folders of grids load
(and a folder of mixed sizes is refused), the renderer draws what is there."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import assert_bad_input, train_refused_in_process

from ganlab.data.voxels import (
    SHAPES,
    draw_shapes,
    read_binvox,
    read_folder,
    write_binvox,
)
from ganlab.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")


def shapes(kind: str, n: int = 12, size: int = 32, rotation: str = "none", shift: bool = False,
           seed: int = 0):
    return draw_shapes([kind], n, size, torch.Generator().manual_seed(seed), rotation, shift)


@pytest.mark.parametrize("kind", SHAPES)
@pytest.mark.parametrize("rotation", ["none", "full"])
def test_volumes_match_the_analytic_volume(kind, rotation):
    grids, labels, volumes = shapes(kind, rotation=rotation, shift=True)
    counts = grids.flatten(1).sum(1).float()
    assert (labels == 0).all() and grids.dtype == torch.uint8 and grids.max() == 1
    assert abs(float(counts.sum() / volumes.sum()) - 1) < 0.04  # over all 12 shapes
    assert ((counts / volumes - 1).abs() < 0.2).all()  # each shape, with its thin parts
    # every shape stays inside the grid: nothing on the outermost layer of voxels
    border = grids.clone()
    border[:, :, 1:-1, 1:-1, 1:-1] = 0
    assert kind == "chair" or border.sum() == 0


def test_unrotated_spheres_and_boxes_are_symmetric():
    spheres, _, _ = shapes("sphere")
    boxes, _, _ = shapes("box")
    for grids in (spheres, boxes):
        for axis in (2, 3, 4):
            assert torch.equal(grids, grids.flip(axis))  # a mirror through the centre
    for order in ((0, 1, 3, 2, 4), (0, 1, 4, 3, 2), (0, 1, 2, 4, 3)):
        assert torch.equal(spheres, spheres.permute(order))  # and any swap of axes
    # boxes have three different sides: some box is not symmetric under a swap of axes
    assert not torch.equal(boxes, boxes.permute(0, 1, 3, 2, 4))


def test_classes_are_the_shapes_they_name():
    from scipy import ndimage

    grids, labels, _ = draw_shapes(SHAPES, 40, 32, torch.Generator().manual_seed(3),
                                   rotation="full", shift=False)
    assert set(labels.tolist()) == set(range(len(SHAPES)))
    centre = grids[:, 0, 15:17, 15:17, 15:17].flatten(1).float().mean(1)
    for grid, label, middle in zip(grids, labels.tolist(), centre.tolist(), strict=True):
        kind = SHAPES[label]
        if kind in ("sphere", "box", "cylinder"):
            assert middle == 1, kind  # solid through the centre
        if kind == "torus":
            assert middle == 0  # the hole
        if kind == "chair":  # upright (y up) even under rotation=full: four legs on the floor
            layers = grid[0].any(0).any(1).nonzero().flatten()  # y layers holding voxels
            floor = grid[0][:, int(layers[0]), :].numpy()
            assert ndimage.label(floor)[1] == 4
            # and the seat is above the floor, the back above the seat
            assert int(layers[-1]) - int(layers[0]) > 16


def test_same_seed_same_shapes():
    a = draw_shapes(SHAPES, 10, 16, torch.Generator().manual_seed(5))[0]
    b = draw_shapes(SHAPES, 10, 16, torch.Generator().manual_seed(5))[0]
    c = draw_shapes(SHAPES, 10, 16, torch.Generator().manual_seed(6))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


# --- binvox ----------------------------------------------------------------------------------


def binvox_bytes(dims, runs) -> bytes:
    header = f"#binvox 1\ndim {dims[0]} {dims[1]} {dims[2]}\ntranslate 0 0 0\nscale 1\ndata\n"
    return header.encode() + bytes(b for run in runs for b in run)


def test_binvox_reader_reads_a_hand_built_file(tmp_path):
    # 2 x 2 x 2, stored in x, z, y order (y fastest): voxel (x=1, y=0, z=0) is run index 4,
    # voxel (x=0, y=1, z=1) is index 0*4 + 1*2 + 1 = 3
    path = tmp_path / "two.binvox"
    path.write_bytes(binvox_bytes((2, 2, 2), [(0, 3), (1, 2), (0, 3)]))
    grid = read_binvox(path)
    assert grid.shape == (2, 2, 2) and grid.dtype == np.uint8
    assert grid.sum() == 2 and grid[1, 0, 0] == 1 and grid[0, 1, 1] == 1
    # runs longer than one byte allows are split: 300 filled voxels of a 10^3 grid
    path.write_bytes(binvox_bytes((10, 10, 10), [(1, 255), (1, 45), (0, 255), (0, 255),
                                                 (0, 190)]))
    assert read_binvox(path).sum() == 300 and read_binvox(path)[:3].all()


def test_binvox_round_trip_and_bad_files(tmp_path):
    grids, _, _ = draw_shapes(SHAPES, 5, 16, torch.Generator().manual_seed(0))
    for i, grid in enumerate(grids[:, 0].numpy()):
        write_binvox(grid, tmp_path / f"{i}.binvox")
        assert np.array_equal(read_binvox(tmp_path / f"{i}.binvox"), grid)
    (tmp_path / "bad.binvox").write_bytes(b"not a binvox file")
    with pytest.raises(UserError, match="not a binvox file"):
        read_binvox(tmp_path / "bad.binvox")
    (tmp_path / "short.binvox").write_bytes(binvox_bytes((2, 2, 2), [(1, 7)]))
    with pytest.raises(UserError, match="runs give 7 voxels"):
        read_binvox(tmp_path / "short.binvox")


def test_folder_of_npy_and_binvox_grids(tmp_path):
    grids, _, _ = draw_shapes(SHAPES, 6, 32, torch.Generator().manual_seed(0))
    (tmp_path / "chairs").mkdir()
    (tmp_path / "tables").mkdir()
    for i, grid in enumerate(grids[:, 0].numpy()):
        if i % 2:
            write_binvox(grid, tmp_path / "chairs" / f"{i}.binvox")
        else:  # float occupancy, (1, S, S, S)
            np.save(tmp_path / "tables" / f"{i}.npy", grid[None].astype(np.float32) * 0.9)
    x, y, names = read_folder(tmp_path, None)
    assert x.shape == (6, 1, 32, 32, 32) and names == ("chairs", "tables")
    assert sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]
    assert x.sum() == grids.sum()
    small, _, _ = read_folder(tmp_path, 16)  # max-pooled: a coarse voxel of any fine one
    assert small.shape == (6, 1, 16, 16, 16)
    pooled = torch.nn.functional.max_pool3d(x.float(), 2).to(torch.uint8)
    assert torch.equal(small, pooled)
    with pytest.raises(UserError, match="power-of-two divisor"):
        read_folder(tmp_path, 12)


def test_a_folder_of_mixed_sizes_is_refused_before_training(tmp_path, capsys):
    folder = tmp_path / "shapes"
    folder.mkdir()
    write_binvox(np.ones((16, 16, 16), np.uint8), folder / "a.binvox")
    np.save(folder / "b.npy", np.ones((32, 32, 32), np.uint8))
    result = train_refused_in_process(["model=gan3d", "dataset=voxels", f"dataset.path={folder}",
                                       "dataset.size=null", "device=cpu"], tmp_path, capsys)
    assert_bad_input(result, "mixes grid sizes", "a.binvox is 16^3", "b.npy is 32^3")
    assert not list(tmp_path.glob("outputs/**/checkpoints/*.pt"))


@pytest.mark.parametrize(("args", "fragments"), [
    (["model=gan3d", "dataset=voxels", "dataset.size=12"], ("dataset.size=12", "8, 16, 32, 64")),
    (["model=gan3d", "dataset=mnist"], ("trains on 3-D voxel grids", "dataset=voxels")),
    (["model=dcgan", "dataset=voxels"], ("holds 3-D voxel grids", "model=dcgan")),
    (["model=gan3d", "dataset=voxels", "eval.inception=on"], ("eval.inception=on", "shape")),
    (["model=gan3d", "dataset=voxels", "dataset.classes=[sphere,cone]"], ("classes", "cone")),
])
def test_bad_voxel_settings_are_refused_in_one_line(args, fragments, tmp_path, capsys):
    result = train_refused_in_process([*args, "device=cpu"], tmp_path, capsys)
    assert_bad_input(result, *fragments)


def test_renderings_show_what_is_there():
    from ganlab.voxel_render import render_grid, render_shaded, render_views

    empty = torch.zeros(1, 1, 16, 16, 16, dtype=torch.uint8)
    ball, _, _ = shapes("sphere", n=1, size=16)
    pictures = render_shaded(torch.cat([empty, ball]))
    assert pictures.shape == (2, 3, 64, 64)
    assert (pictures[0] == 255).all()  # nothing there: white
    shape_pixels = (pictures[1] < 250).any(0)
    assert 0.1 < shape_pixels.float().mean() < 0.6
    assert shape_pixels[32, 32]  # the ball is in the middle
    # lit from the upper left: its upper-left side is brighter than its lower-right one
    lum = pictures[1].float().mean(0)
    assert lum[22:30, 22:30][shape_pixels[22:30, 22:30]].mean() > \
        lum[36:44, 36:44][shape_pixels[36:44, 36:44]].mean()
    views = render_views(ball)
    assert views.shape == (1, 3, 64, 3 * 64 + 2)
    for view in views[0].split([64, 1, 64, 1, 64], dim=2)[::2]:  # a disc in every view
        covered = (view < 250).any(0).float().mean()
        assert abs(float(covered) - math.pi * (ball.sum() / (4 / 3 * math.pi)) ** (2 / 3)
                   / 256) < 0.05
    grid = render_grid(torch.cat([ball, ball, ball]), nrow=3)
    assert grid.shape == (3, 64 + 4, 3 * 64 + 8)
