"""Full-state checkpoints: written atomically, read with torch's safe (weights-only) loader."""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganlab.errors import UserError

FORMAT = "ganlab-checkpoint"
VERSION = 1
LAST = "last.pt"
BEST = "best.pt"  # the state at the best evaluation of the primary metric


def resolve_path(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run dir holding checkpoints/last.pt."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "checkpoints" / LAST
    if not p.is_file():
        raise UserError(f"checkpoint {p} does not exist")
    return p


def run_dir_of(checkpoint: Path) -> Path | None:
    """The run dir a checkpoint belongs to (<run>/checkpoints/last.pt), if it sits in one."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else None


def save(state: dict[str, Any], path: Path) -> None:
    """Write to a temporary file, fsync, then rename: a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save({"format": FORMAT, "version": VERSION, **state}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    p = resolve_path(path)
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError) as e:
        raise UserError(f"checkpoint {p} is corrupt or incomplete ({type(e).__name__})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{p} is not a ganlab checkpoint")
    if state.get("version") != VERSION:
        raise UserError(f"checkpoint {p} has format version {state.get('version')}, "
                        f"this ganlab reads version {VERSION}")
    return state


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states, in types the weights-only loader accepts."""
    np_state = np.random.get_state()
    state = {
        "python": [*list(random.getstate()[1]), random.getstate()[2]],
        "python_version": random.getstate()[0],
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_gauss": [int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((state["python_version"], tuple(py[:-1]), py[-1]))
    has_gauss, cached = state["numpy_gauss"]
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32),
                         state["numpy_pos"], has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu",
                    config_overrides: dict | None = None):
    """The trained family of a checkpoint, networks in eval mode (`.G`/`.D` for GANs).

    For notebooks and scripts: `ganlab.load_checkpoint("outputs/<run>")`. config_overrides
    (e.g. {"eval": {"n_samples": 1000}}) change the stored config before the family is built.
    """
    from omegaconf import OmegaConf

    from ganlab.data.base import DataSpec
    from ganlab.families import FAMILIES
    from ganlab.runtime import flush_denormals

    flush_denormals()  # as in training: denormals slow CPU inference by up to 100x
    state = load(path, map_location=device)
    cfg = OmegaConf.create(state["config"])
    if config_overrides:
        cfg = OmegaConf.merge(cfg, config_overrides)
    family = FAMILIES.get(cfg.model.family)(cfg, DataSpec.from_dict(state["spec"]),
                                            torch.device(device))
    try:
        family.load_state_dict(state["family"])
    except (RuntimeError, KeyError, ValueError) as e:
        raise UserError(f"checkpoint {path} does not match its own config: "
                        f"{str(e).strip().splitlines()[0]}") from e
    family.eval()
    family.step = int(state["step"])
    family.config = cfg
    return family
