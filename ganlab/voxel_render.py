"""Pictures of 3-D occupancy grids (N, 1, X, Y, Z), y up, for sample grids and TensorBoard.

Three styles, each giving one uint8 (3, H, W) grid of pictures, one cell per shape:
- shaded (default, torch only, fast): rays from an oblique camera (azimuth 45 degrees,
  elevation 30) find each pixel's first filled voxel; faces are lit by the depth map's
  normals (Lambert, plus a darkening with distance), so voxels look like small cubes.
- views: three orthographic depth-shaded views per shape (front along z, side along x, top
  along y), side by side.
- mesh: the 0.5 iso-surface by marching cubes (scikit-image), drawn with matplotlib from the
  same camera; slower (about 0.1 s a shape). Without scikit-image: a UserError saying so.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ganlab.errors import UserError
from ganlab.images import make_grid

STYLES = ("shaded", "views", "mesh")
COLOUR = torch.tensor([0.36, 0.55, 0.80])  # the shapes' base colour (RGB in [0, 1])
BACKGROUND = 1.0  # white
AZIMUTH, ELEVATION = 45.0, 30.0  # degrees: the camera of `shaded` and `mesh`
# half the image plane's side, in grid units: the grid [-1, 1]^3 seen from the oblique camera
# reaches 1.41 sideways and 1.57 up and down
EXTENT = 1.6
REACH = math.sqrt(3)  # rays start this far in front of the grid's centre: before any voxel
LIGHT = (-0.45, 0.65, 0.6)  # towards the light, in camera space (x right, y up, z to viewer)
AMBIENT = 0.3
CHUNK = 16  # shapes rendered at once (memory: pixels x depth samples each)
PADDING = 2


def mesh_available() -> bool:
    """Whether scikit-image (marching cubes, for style="mesh") is installed."""
    import importlib.util

    return importlib.util.find_spec("skimage") is not None


def check_style(style: str) -> None:
    if style not in STYLES:
        raise UserError(f"render={style!r}: choose one of {', '.join(STYLES)}")
    if style == "mesh" and not mesh_available():
        raise UserError("render=mesh needs scikit-image (pip install scikit-image); "
                        "render=shaded needs nothing more")


def _camera() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(right, up, towards the viewer) unit vectors of the oblique camera, in grid axes."""
    az, el = math.radians(AZIMUTH), math.radians(ELEVATION)
    back = torch.tensor([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])
    right = torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0]), back)
    right = right / right.norm()
    up = torch.linalg.cross(back, right)
    return right, up, back


def _shade(depth: torch.Tensor, hit: torch.Tensor, pixel: float) -> torch.Tensor:
    """(n, R, R) depths (distance from the camera plane, grid units) and hit masks -> float
    RGB (n, 3, R, R): Lambert shading from the depth map's normals, darker further away."""
    d = torch.where(hit, depth, torch.zeros_like(depth))
    # differences towards the right and downwards; none across silhouettes or depth jumps
    dx = d[:, :, 1:] - d[:, :, :-1]
    dy = d[:, 1:, :] - d[:, :-1, :]
    ok_x = hit[:, :, 1:] & hit[:, :, :-1] & (dx.abs() < 4 * pixel)
    ok_y = hit[:, 1:, :] & hit[:, :-1, :] & (dy.abs() < 4 * pixel)
    gx = torch.zeros_like(d)
    gy = torch.zeros_like(d)
    gx[:, :, :-1] = torch.where(ok_x, dx, 0.0)
    gy[:, :-1, :] = torch.where(ok_y, dy, 0.0)
    gx[:, :, -1] = gx[:, :, -2]
    gy[:, -1, :] = gy[:, -2, :]
    # the surface (x, y, -depth) has the normal (dd/dx, dd/dy, 1), towards the viewer;
    # image rows grow downwards (screen y = -row)
    normal = torch.stack([gx / pixel, -gy / pixel, torch.ones_like(d)], 1)
    normal = normal / normal.norm(dim=1, keepdim=True)
    light = torch.tensor(LIGHT)
    light = (light / light.norm()).view(1, 3, 1, 1)
    lambert = (normal * light).sum(1).clamp(min=0)
    near, far = depth[hit].min() if hit.any() else 0.0, depth[hit].max() if hit.any() else 1.0
    fade = 1 - 0.35 * ((depth - near) / max(float(far - near), 1e-6)).clamp(0, 1)
    intensity = (AMBIENT + (1 - AMBIENT) * lambert) * fade
    rgb = intensity[:, None] * COLOUR.view(1, 3, 1, 1)
    return torch.where(hit[:, None], rgb, torch.full_like(rgb, BACKGROUND))


def _first_hits(volume: torch.Tensor, origins: torch.Tensor, direction: torch.Tensor,
                steps: int, step: float) -> tuple[torch.Tensor, torch.Tensor]:
    """March rays (origins (R, R, 3), one direction) through volumes (n, 1, X, Y, Z):
    (depth of the first filled voxel along each ray (n, R, R), whether there is one)."""
    t = torch.arange(steps, dtype=torch.float32) * step
    points = origins[None] + t[:, None, None, None] * direction  # (T, R, R, 3), grid units
    # grid_sample's last axis is (W, H, D) = (z, y, x) of an (X, Y, Z) volume
    grid = points.flip(-1)[None]  # (1, T, R, R, 3)
    n = volume.shape[0]
    filled = F.grid_sample(volume.float(), grid.expand(n, -1, -1, -1, -1), mode="nearest",
                           padding_mode="zeros", align_corners=False)[:, 0] > 0.5  # (n, T, R, R)
    hit = filled.any(1)
    first = filled.float().argmax(1)  # the first True along T
    return first.float() * step, hit


def render_shaded(voxels: torch.Tensor, pixels: int | None = None) -> torch.Tensor:
    """uint8 (n, 3, R, R) pictures of (n, 1, S, S, S) grids (0/1 or occupancy in [0, 1])
    from the oblique camera; R defaults to 2 S + 32 (64 at 16^3, 96 at 32^3), at most 128."""
    size = voxels.shape[-1]
    pixels = pixels or min(128, 2 * size + 32)
    right, up, back = _camera()
    pixel = 2 * EXTENT / pixels
    coords = (torch.arange(pixels, dtype=torch.float32) + 0.5) * pixel - EXTENT
    rows, cols = torch.meshgrid(-coords, coords, indexing="ij")  # row 0 at the top
    start = REACH * back  # the camera plane, in front of the whole grid
    origins = start + cols[..., None] * right + rows[..., None] * up
    step = 1.0 / size  # half a voxel
    steps = int(2 * REACH / step) + 1
    out = []
    for i in range(0, len(voxels), CHUNK):
        chunk = voxels[i : i + CHUNK].detach().cpu()
        depth, hit = _first_hits(chunk, origins, -back, steps, step)
        out.append(_shade(depth, hit, pixel))
    return (torch.cat(out) * 255).round().clamp(0, 255).to(torch.uint8)


def render_views(voxels: torch.Tensor, scale: int | None = None) -> torch.Tensor:
    """uint8 (n, 3, S', 3 S' + 2) pictures: front (looking along -z), side (along -x) and top
    (along -y) orthographic views of each grid, each depth-shaded, each voxel scale x scale
    pixels (default: S' = 4 S, at least 64)."""
    v = voxels.detach().cpu().float()[:, 0] > 0.5  # (n, X, Y, Z)
    size = v.shape[-1]
    scale = scale or max(1, min(4, 128 // size) if size < 64 else 1)
    scale = max(scale, math.ceil(64 / size))
    views = []
    for axis, flip_rows in ((3, True), (1, True), (2, False)):  # front, side, top
        # first filled voxel seen from the positive end of the axis
        ordered = v.flip(axis)
        hit = ordered.any(axis)
        depth = ordered.float().argmax(axis).float() / size
        if axis == 3:  # front: rows are y (up), columns x
            depth, hit = depth.transpose(1, 2), hit.transpose(1, 2)
        elif axis == 1:  # side: rows y, columns z (seen from +x, z runs right to left)
            depth, hit = depth.transpose(1, 2).flip(2), hit.transpose(1, 2).flip(2)
        else:  # top: rows z (far at the top), columns x
            depth, hit = depth.transpose(1, 2), hit.transpose(1, 2)
        if flip_rows:
            depth, hit = depth.flip(1), hit.flip(1)
        intensity = (1 - 0.65 * depth) * hit
        rgb = intensity[:, None] * COLOUR.view(1, 3, 1, 1)
        rgb = torch.where(hit[:, None], rgb, torch.full_like(rgb, BACKGROUND))
        rgb = rgb.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
        views.append(rgb)
    gap = torch.full((*views[0].shape[:3], 1), 0.85)
    joined = torch.cat([views[0], gap, views[1], gap, views[2]], dim=3)
    return (joined * 255).round().clamp(0, 255).to(torch.uint8)


def render_meshes(voxels: torch.Tensor, nrow: int | None = None,
                  cell_inches: float = 1.4) -> torch.Tensor:
    """One uint8 (3, H, W) figure: each grid's 0.5 iso-surface (marching cubes on the grid
    padded with empty voxels, so closed), drawn with matplotlib from the oblique camera."""
    import numpy as np
    from matplotlib.figure import Figure
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection
    from skimage.measure import marching_cubes

    from ganlab.images import figure_to_uint8

    v = voxels.detach().cpu().float()[:, 0].numpy()
    n, size = len(v), v.shape[-1]
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    fig = Figure(figsize=(cell_inches * nrow, cell_inches * rows), dpi=80)
    light = np.array([-0.4, 0.8, 0.45])
    light = light / np.linalg.norm(light)
    for i in range(n):
        ax = fig.add_subplot(rows, nrow, i + 1, projection="3d")
        ax.set_axis_off()
        padded = np.pad(v[i], 1)
        if padded.max() > 0.5 > padded.min():
            verts, faces, normals, _ = marching_cubes(padded, level=0.5)
            verts = verts - 1  # undo the padding: voxel i's centre at i
            # plot axes (x, z, y): matplotlib's vertical axis is its third one
            tri = verts[faces][:, :, [0, 2, 1]]
            face_normals = normals[faces].mean(1)
            face_normals /= np.linalg.norm(face_normals, axis=1, keepdims=True) + 1e-9
            shade = AMBIENT + (1 - AMBIENT) * np.clip(face_normals @ light, 0, 1)
            colours = shade[:, None] * COLOUR.numpy()[None]
            ax.add_collection3d(Poly3DCollection(tri, facecolors=colours, edgecolors="none"))
        for setter in (ax.set_xlim, ax.set_ylim, ax.set_zlim):
            setter(-0.5, size - 0.5)
        ax.set_box_aspect((1, 1, 1))
        # matplotlib's azimuth is measured from its x axis; ours from z towards x
        ax.view_init(elev=ELEVATION, azim=AZIMUTH - 90 + 180)
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1, wspace=0, hspace=0)
    return figure_to_uint8(fig)


def render_grid(voxels: torch.Tensor, nrow: int | None = None,
                style: str = "shaded") -> torch.Tensor:
    """(n, 1, S, S, S) grids -> one uint8 (3, H, W) picture with `nrow` shapes per row."""
    check_style(style)
    if style == "mesh":
        return render_meshes(voxels, nrow)
    cells = render_shaded(voxels) if style == "shaded" else render_views(voxels)
    return make_grid(cells, nrow=nrow or max(1, math.ceil(math.sqrt(len(cells)))),
                     padding=PADDING)


def write_volumes(voxels: torch.Tensor, out, nrow: int | None = None,
                  style: str = "shaded") -> None:
    """Samples of a voxel model to `out`: .npz key `voxels`, uint8 (N, X, Y, Z) of 0/1 (y
    up, the axes of ganlab.data.voxels.read_binvox), or a .png picture in `style`."""
    from pathlib import Path

    import numpy as np

    from ganlab.images import save_png

    out = Path(out)
    if out.suffix == ".npz":
        np.savez_compressed(out, voxels=voxels[:, 0].cpu().numpy().astype(np.uint8))
        return
    save_png(render_grid(voxels, nrow, style), out)
