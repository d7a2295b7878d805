"""`dataset=voxels`: 3-D occupancy grids, for 3D-GAN (model=gan3d).

Two sources, one config:
- procedural (dataset.path unset): spheres, boxes, cylinders, tori and chairs (seat, back and
  four legs) of random sizes, orientations and positions, one class each; the same seed gives
  the same shapes, at any grid size. The held-out shapes come from a generator of their own.
- a folder (dataset.path=DIR): every `.npy` grid and `.binvox` file under DIR (ShapeNet and
  ModelNet users' format; `read_binvox` below). All grids must have one size; a grid larger
  than dataset.size by a power of two is max-pooled down to it (a coarse voxel is filled when
  any of its fine voxels is, so thin legs survive). Sub-folders name classes.

Grids are uint8 (N, 1, X, Y, Z) of 0/1 with y up (the axes binvox_rw and ShapeNet use), the
dataset kind "voxels"; the loop batches them by indexing, as it does images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ganlab.config import one_of, ranged
from ganlab.data.base import DATASETS, DataSpec, InMemoryDataset
from ganlab.errors import UserError

SHAPES = ("sphere", "box", "cylinder", "torus", "chair")
TEST_SEED_OFFSET = 10_007  # the held-out shapes are drawn from a generator of their own
ROOM = 0.95  # every shape fits in the ball of this radius (the grid spans [-1, 1]^3)
CHAIR_HEIGHT = 0.85  # chairs stand on y = -0.85 and reach at most y = 0.85
SUFFIXES = (".npy", ".binvox")
VOXEL_BUILDERS = {"voxels"}  # the DATASETS entries that give voxel grids (is_voxels)


@dataclass
class VoxelsDatasetConfig:
    name: str = "voxels"
    # grid side: 16 (a CPU), 32 (3D-GAN at small scale), 64 (the paper); a folder: null keeps
    # its grids' size, a smaller power-of-two divisor of it max-pools them down
    size: int | None = ranged(32, "[2, inf)")
    path: str | None = None  # a folder of .npy / .binvox grids instead of procedural shapes
    n_samples: int = ranged(2000, "[1, inf)")  # procedural: training shapes
    n_test: int = ranged(200, "[1, inf)")  # procedural: held-out shapes
    classes: list[str] = field(default_factory=lambda: list(SHAPES))  # procedural: which
    # procedural orientations: full (any rotation; chairs turn about the vertical axis only,
    # they stand upright), yaw (about the vertical axis), none (axis-aligned)
    rotation: str = one_of("full", "full", "yaw", "none")
    shift: bool = True  # procedural: random offsets inside the grid (false: centred)


# --- procedural shapes -----------------------------------------------------------------------


def rotation_matrices(gauss: torch.Tensor, angle: torch.Tensor, mode: str) -> torch.Tensor:
    """(n, 3, 3) rotations from random numbers drawn beforehand (gauss (n, 3, 3) normal,
    angle (n,) in [0, 2 pi)): uniform over SO(3) (full), about the y axis (yaw), or the
    identity (none)."""
    n = len(angle)
    if mode == "none":
        return torch.eye(3).expand(n, 3, 3).clone()
    if mode == "yaw":
        c, s = torch.cos(angle), torch.sin(angle)
        zero, one = torch.zeros_like(c), torch.ones_like(c)
        rows = [torch.stack([c, zero, s], -1), torch.stack([zero, one, zero], -1),
                torch.stack([-s, zero, c], -1)]
        return torch.stack(rows, 1).float()
    q, r = torch.linalg.qr(gauss.double())  # Haar-uniform once R's diagonal is made positive
    q = q * torch.sign(torch.diagonal(r, dim1=1, dim2=2))[:, None, :]
    q[:, :, 0] *= torch.linalg.det(q)[:, None]  # a reflection becomes a rotation
    return q.float()


def _fit(lengths: torch.Tensor, radius: torch.Tensor, limit: float) -> torch.Tensor:
    """Scale each row of `lengths` so that its bounding radius is at most `limit`."""
    return lengths * (limit / radius).clamp(max=1.0)[:, None]


def shape_parameters(kind: str, u: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """From uniform numbers u (n, 8): each shape's parameters (n, k) and its analytic volume
    (n,) in the grid's units (the grid spans [-1, 1]^3, volume 8)."""
    if kind == "sphere":
        r = 0.35 + 0.5 * u[:, :1]
        return r, 4 / 3 * math.pi * r[:, 0] ** 3
    if kind == "box":  # half extents
        h = 0.2 + 0.45 * u[:, :3]
        h = _fit(h, h.norm(dim=1), ROOM)
        return h, 8 * h.prod(dim=1)
    if kind == "cylinder":  # radius, half height (axis y)
        p = torch.stack([0.2 + 0.4 * u[:, 0], 0.25 + 0.55 * u[:, 1]], 1)
        p = _fit(p, p.norm(dim=1), ROOM)
        return p, 2 * math.pi * p[:, 0] ** 2 * p[:, 1]
    if kind == "torus":  # major radius, tube radius (ring in the xz plane)
        p = torch.stack([0.4 + 0.3 * u[:, 0], 0.12 + 0.13 * u[:, 1]], 1)
        p = _fit(p, p.sum(dim=1), ROOM)
        return p, 2 * math.pi**2 * p[:, 0] * p[:, 1] ** 2
    if kind == "chair":
        return chair_parameters(u, size)
    raise UserError(f"dataset.classes: unknown shape {kind!r}; choose from {', '.join(SHAPES)}")


def chair_parameters(u: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seat half width/depth, seat half thickness, leg half width, leg length, back height;
    parts touch but never overlap, so the volume is their sum. Thin parts are at least about
    one voxel thick at this grid size."""
    voxel = 2.0 / size
    half_w, half_d = 0.35 + 0.25 * u[:, 0], 0.35 + 0.25 * u[:, 1]
    footprint = _fit(torch.stack([half_w, half_d], 1), torch.hypot(half_w, half_d), 0.9)
    half_w, half_d = footprint[:, 0], footprint[:, 1]
    thick = torch.clamp(0.06 + 0.06 * u[:, 2], min=0.55 * voxel)
    leg = torch.clamp(0.06 + 0.05 * u[:, 3], min=0.55 * voxel)
    legs = 0.5 + 0.4 * u[:, 4]
    seat_top = -CHAIR_HEIGHT + legs + 2 * thick
    back = torch.minimum(0.5 + 0.4 * u[:, 5], CHAIR_HEIGHT - seat_top)
    p = torch.stack([half_w, half_d, thick, leg, legs, back], 1)
    volume = (4 * (2 * leg) ** 2 * legs + 2 * half_w * 2 * thick * 2 * half_d
              + 2 * half_w * 2 * thick * back)
    return p, volume


def _inside_box(q: torch.Tensor, centre: list, half: list) -> torch.Tensor:
    """q (n, P, 3) inside axis-aligned boxes: centre and half extents, each 3 (n, 1) tensors."""
    inside = torch.ones(q.shape[:2], dtype=torch.bool, device=q.device)
    for axis in range(3):
        inside &= (q[..., axis] - centre[axis]).abs() <= half[axis]
    return inside


def occupied(kind: str, q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Whether each local point q (n, P, 3) lies inside shape `kind` with parameters p."""
    x, y, z = q.unbind(-1)
    col = [p[:, i : i + 1] for i in range(p.shape[1])]
    if kind == "sphere":
        return q.norm(dim=-1) <= col[0]
    if kind == "box":
        return (x.abs() <= col[0]) & (y.abs() <= col[1]) & (z.abs() <= col[2])
    if kind == "cylinder":
        return (torch.hypot(x, z) <= col[0]) & (y.abs() <= col[1])
    if kind == "torus":
        return (torch.hypot(x, z) - col[0]) ** 2 + y**2 <= col[1] ** 2
    half_w, half_d, thick, leg, legs, back = col  # a chair
    floor = -CHAIR_HEIGHT
    seat_bottom = floor + legs
    zero = torch.zeros_like(half_w)
    inside = _inside_box(q, [zero, seat_bottom + thick, zero], [half_w, thick, half_d])
    inside |= _inside_box(q, [zero, seat_bottom + 2 * thick + back / 2, -half_d + thick],
                          [half_w, back / 2, thick])
    for sx in (-1, 1):
        for sz in (-1, 1):
            inside |= _inside_box(q, [sx * (half_w - leg), floor + legs / 2, sz * (half_d - leg)],
                                  [leg, legs / 2, leg])
    return inside


def bounding_radius(kind: str, p: torch.Tensor) -> torch.Tensor:
    if kind == "sphere":
        return p[:, 0]
    if kind in ("box", "cylinder"):
        return p.norm(dim=1)
    if kind == "torus":
        return p.sum(dim=1)
    return torch.full((len(p),), 0.9)  # chairs: their horizontal reach (they only turn on y)


def grid_points(size: int) -> torch.Tensor:
    """(size^3, 3) voxel centres in [-1, 1]^3, x slowest, z fastest (the (X, Y, Z) layout)."""
    c = (torch.arange(size, dtype=torch.float32) + 0.5) * (2.0 / size) - 1.0
    return torch.stack(torch.meshgrid(c, c, c, indexing="ij"), -1).reshape(-1, 3)


def draw_shapes(classes: list[str] | tuple[str, ...], n: int, size: int,
                generator: torch.Generator, rotation: str = "full", shift: bool = True,
                chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n random shapes: uint8 (n, 1, size, size, size) 0/1 grids, int64 class indices into
    `classes`, and each shape's analytic volume in voxels. The same generator state gives the
    same shapes; the random numbers drawn do not depend on the classes drawn."""
    labels = torch.randint(len(classes), (n,), generator=generator)
    u = torch.rand(n, 8, generator=generator)
    gauss, angle = torch.randn(n, 3, 3, generator=generator), 2 * math.pi * torch.rand(
        n, generator=generator)
    offsets = torch.rand(n, 3, generator=generator) * 2 - 1
    points = grid_points(size)
    grids = torch.zeros(n, size**3, dtype=torch.uint8)
    volumes = torch.zeros(n)
    for k, kind in enumerate(classes):
        index = (labels == k).nonzero().flatten()
        if not len(index):
            continue
        p, volume = shape_parameters(kind, u[index], size)
        volumes[index] = volume * size**3 / 8
        # chairs stand upright: under rotation=full they turn about the vertical axis only
        mode = "yaw" if kind == "chair" and rotation == "full" else rotation
        rot = rotation_matrices(gauss[index], angle[index], mode)
        slack = (ROOM - bounding_radius(kind, p)).clamp(min=0) if kind != "chair" else \
            torch.full((len(index),), 0.1)
        centre = offsets[index] * (slack / math.sqrt(3))[:, None] if shift else \
            torch.zeros(len(index), 3)
        for start in range(0, len(index), chunk):
            part = slice(start, start + chunk)
            # local coordinates: rotate the grid into each shape's frame, q = R^T (x - c)
            q = (points[None] - centre[part, None]) @ rot[part]
            grids[index[part]] = occupied(kind, q, p[part]).to(torch.uint8)
    return grids.reshape(n, 1, size, size, size), labels, volumes


# --- binvox ----------------------------------------------------------------------------------


def read_binvox(path: str | Path) -> np.ndarray:
    """A .binvox file as a uint8 (X, Y, Z) array of 0/1 (y up, as binvox_rw's
    read_as_3d_array gives it). The format: a text header (`#binvox 1`, `dim D H W`,
    `translate ...`, `scale ...`, `data`), then (value, count) byte pairs run-length encoding
    the voxels in x, z, y order (y fastest). A UserError names the file when it is not one."""
    data = Path(path).read_bytes()
    where = f"{path} is not a binvox file"
    if not data.startswith(b"#binvox"):
        raise UserError(f"{where} (it does not start with '#binvox')")
    dims = None
    pos = 0
    while True:
        end = data.find(b"\n", pos)
        if end < 0:
            raise UserError(f"{where} (its header has no 'data' line)")
        line = data[pos:end].strip()
        pos = end + 1
        if line.startswith(b"dim"):
            try:
                dims = tuple(int(v) for v in line.split()[1:4])
            except ValueError as e:
                raise UserError(f"{where} (bad dim line {line!r})") from e
        elif line == b"data":
            break
    if dims is None or len(dims) != 3 or min(dims) < 1:
        raise UserError(f"{where} (its header has no 'dim D H W' line)")
    runs = np.frombuffer(data, dtype=np.uint8, offset=pos)
    if len(runs) % 2:
        raise UserError(f"{where} (its run-length data has an odd number of bytes)")
    values, counts = runs[0::2], runs[1::2]
    if counts.astype(np.int64).sum() != int(np.prod(dims)):
        raise UserError(f"{path}: its runs give {int(counts.astype(np.int64).sum())} voxels, "
                        f"not the {int(np.prod(dims))} of dim {dims[0]} {dims[1]} {dims[2]}")
    flat = np.repeat((values > 0).astype(np.uint8), counts)
    return np.ascontiguousarray(flat.reshape(dims).transpose(0, 2, 1))  # x z y -> x y z


def write_binvox(grid: np.ndarray, path: str | Path, translate=(0.0, 0.0, 0.0),
                 scale: float = 1.0) -> None:
    """A (X, Y, Z) 0/1 array (y up) as a .binvox file, read back by read_binvox."""
    grid = np.asarray(grid)
    dims = grid.shape
    flat = (grid.transpose(0, 2, 1) > 0).astype(np.uint8).reshape(-1)  # x y z -> x z y
    pairs = bytearray()
    start = 0
    while start < len(flat):
        value, end = flat[start], start
        while end < len(flat) and flat[end] == value and end - start < 255:
            end += 1
        pairs += bytes([int(value), end - start])
        start = end
    header = (f"#binvox 1\ndim {dims[0]} {dims[1]} {dims[2]}\n"
              f"translate {translate[0]} {translate[1]} {translate[2]}\nscale {scale}\ndata\n")
    Path(path).write_bytes(header.encode() + bytes(pairs))


# --- a folder of grids -----------------------------------------------------------------------


def read_grid(path: Path) -> np.ndarray:
    """One file as a uint8 (X, Y, Z) 0/1 array: a .binvox file, or a .npy array of shape
    (S, S, S) or (1, S, S, S): bool, integers (non-zero is filled) or floats (>= 0.5 is
    filled, occupancy probabilities)."""
    if path.suffix == ".binvox":
        return read_binvox(path)
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise UserError(f"{path} is not a .npy array: {e}") from e
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise UserError(f"{path} holds an array of shape {tuple(array.shape)}; a voxel grid is "
                        "(S, S, S) or (1, S, S, S)")
    if array.dtype.kind == "f":
        return (array >= 0.5).astype(np.uint8)
    return (array != 0).astype(np.uint8)


def grid_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix in SUFFIXES and p.is_file())


def read_folder(root: Path, size: int | None) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """Every grid under `root`, all of one size (else a UserError naming two files of
    different sizes), max-pooled to `size` when given: (uint8 (N, 1, S, S, S), labels, class
    names: the sub-folders holding files, or none when all files sit in root)."""
    if not root.is_dir():
        raise UserError(f"dataset.path={root} is not a folder")
    files = grid_files(root)
    if not files:
        raise UserError(f"dataset.path={root} holds no .npy or .binvox files")
    grids, first = [], None
    for path in files:
        grid = read_grid(path)
        if len(set(grid.shape)) != 1:
            raise UserError(f"{path} is a {'x'.join(map(str, grid.shape))} grid; the networks "
                            "take cubes (S x S x S)")
        if first is None:
            first = (path, grid.shape)
        elif grid.shape != first[1]:
            raise UserError(f"dataset.path={root} mixes grid sizes: {first[0].name} is "
                            f"{first[1][0]}^3, {path.name} is {grid.shape[0]}^3; put grids of "
                            "one size in the folder")
        grids.append(grid)
    x = torch.from_numpy(np.stack(grids))[:, None]
    native = x.shape[-1]
    if size is not None and size != native:
        factor = native // size
        if size > native or native % size or factor & (factor - 1):
            raise UserError(f"dataset.size={size} does not suit the folder's {native}^3 grids: "
                            f"it can be {native} or a power-of-two divisor of it (null keeps "
                            f"{native})")
        x = F.max_pool3d(x.float(), factor).to(torch.uint8)
    folders = sorted({p.parent.relative_to(root).as_posix() for p in files})
    if folders == ["."]:
        return x, torch.zeros(len(files), dtype=torch.int64), ()
    index = {name: k for k, name in enumerate(folders)}
    labels = torch.tensor([index[p.parent.relative_to(root).as_posix()] for p in files])
    return x, labels, tuple(folders)


# --- the dataset -----------------------------------------------------------------------------


def check_classes(classes) -> tuple[str, ...]:
    names = tuple(str(c) for c in classes)
    unknown = [c for c in names if c not in SHAPES]
    if unknown or not names:
        raise UserError(f"dataset.classes={list(names)}: choose one or more of "
                        f"{', '.join(SHAPES)}")
    if len(set(names)) != len(names):
        raise UserError(f"dataset.classes={list(names)} names a shape twice")
    return names


@DATASETS.register("voxels", VoxelsDatasetConfig)
def build_voxels(cfg, data_dir: Path, seed: int) -> InMemoryDataset:
    if cfg.path:
        root = Path(str(cfg.path)).expanduser()
        x, y, names = read_folder(root, cfg.size)
        size = x.shape[-1]
        spec = DataSpec("voxels", kind="voxels", shape=(1, size, size, size),
                        num_classes=len(names), class_names=names or None)
        source = (f"voxels: {len(x):,} grids from {root} at {size}^3"
                  f"{f' in {len(names)} classes' if names else ''}")
        return InMemoryDataset(spec, x, y if names else None, source=source)
    if cfg.size is None:
        raise UserError("dataset.size=null keeps a folder's grid size; procedural shapes need "
                        "a size, e.g. dataset.size=32")
    size, names = int(cfg.size), check_classes(cfg.classes)
    train = torch.Generator().manual_seed(seed)
    test = torch.Generator().manual_seed(seed + TEST_SEED_OFFSET)
    x, y, _ = draw_shapes(names, cfg.n_samples, size, train, cfg.rotation, cfg.shift)
    test_x, test_y, _ = draw_shapes(names, cfg.n_test, size, test, cfg.rotation, cfg.shift)
    spec = DataSpec("voxels", kind="voxels", shape=(1, size, size, size),
                    num_classes=len(names), class_names=names)
    heldout = InMemoryDataset(spec, test_x, test_y,
                              source=f"voxels: {cfg.n_test:,} held-out procedural shapes at "
                                     f"{size}^3 (seed {seed} + {TEST_SEED_OFFSET})")
    source = (f"voxels: {cfg.n_samples:,} procedural shapes ({', '.join(names)}) at {size}^3, "
              f"rotation {cfg.rotation}{', shifted' if cfg.shift else ''} (seed {seed})")
    return InMemoryDataset(spec, x, y, source=source, heldout=heldout)
