"""Full-state checkpoints: written atomically, read with torch's safe (weights-only) loader."""

from __future__ import annotations

import copy
import errno
import os
import random
import re
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganlab.errors import UserError

FORMAT = "ganlab-checkpoint"
VERSION = 1
LAST = "last.pt"  # always the latest state: what resume and every command read
BEST = "best.pt"  # the state at the best evaluation of the primary metric
STEP = "step_{}.pt"  # the trainer.keep_last most recent saves, as hard links (or copies)
TMP_SUFFIX = ".tmp"  # <name>.tmp: a file being written; never read; the next save removes it
_STEP_NAME = re.compile(r"step_(\d+)\.pt")


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
    """Write to <path>.tmp, fsync, rename over path, fsync the folder: a crash or kill -9 at any
    moment leaves either the previous file or the new one, never a half-written one (and the
    rename itself survives a power cut). A file that cannot be written (full disk, read-only
    folder) is a UserError naming it; the previous file is kept and no temp file is left."""
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with _write_errors(path, tmp):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save({"format": FORMAT, "version": VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    _remove_stale_temps(path.parent)


def keep_recent(last: Path, step: int, keep: int) -> None:
    """After a save of last.pt at `step`: step_<step>.pt beside it, and only the step files of
    the `keep` most recent saves kept (keep=0: none). A step file is a hard link to the file
    just written (a copy where the filesystem has no hard links): every save writes a new file
    and renames it over last.pt, so a linked file is never modified afterwards.

    "Most recent" is by time written, the step breaking ties: a run resumed from an earlier
    step_<N>.pt keeps its new saves, and the abandoned later ones go first."""
    last = Path(last)
    folder = last.parent
    target = folder / STEP.format(step)
    if keep > 0:
        if not (target.exists() and os.path.samefile(last, target)):
            tmp = target.with_name(target.name + TMP_SUFFIX)
            with _write_errors(target, tmp):
                _remove_quietly(tmp)
                try:
                    os.link(last, tmp)
                except OSError:  # no hard links here (some network or FAT filesystems)
                    with open(last, "rb") as src, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                        dst.flush()
                        os.fsync(dst.fileno())
                os.replace(tmp, target)
                _fsync_dir(folder)
    others = [(_mtime(p), n, p) for n, p in step_checkpoints(folder) if p != target]
    others.sort(reverse=True)  # newest first
    for _, _, old in others[keep - 1 if keep > 0 else 0 :]:
        try:
            old.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise UserError(f"could not remove old checkpoint {old}: {_reason(e)}") from e


def step_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """The step_<N>.pt files in a checkpoints folder, oldest step first."""
    found = []
    for p in Path(folder).glob("step_*.pt"):
        m = _STEP_NAME.fullmatch(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


@contextmanager
def _write_errors(path: Path, tmp: Path) -> Iterator[None]:
    """OSError while writing `path` (through `tmp`) -> UserError naming path; tmp removed."""
    try:
        yield
    except BaseException as error:
        _remove_quietly(tmp)  # also on KeyboardInterrupt: never leave a partial file
        cause = _os_error_in(error)
        if cause is None:
            raise  # a bug, not the environment: let it surface
        raise UserError(f"could not write checkpoint {path}: {_reason(cause)}") from error


def _os_error_in(error: BaseException) -> OSError | None:
    """The OSError behind an error: torch.save reports a failed write (ENOSPC, say) as a
    RuntimeError ("unexpected pos ...") raised while the OSError is being handled."""
    if not isinstance(error, Exception):  # KeyboardInterrupt, SystemExit
        return None
    seen = 0
    while error is not None and seen < 5:
        if isinstance(error, OSError):
            return error
        error = error.__cause__ or error.__context__
        seen += 1
    return None


def _reason(error: OSError) -> str:
    return error.strerror or str(error) or type(error).__name__


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _remove_stale_temps(folder: Path) -> None:
    """Temp files a killed writer left behind: ignored by every reader, removed here."""
    for stale in folder.glob("*.pt" + TMP_SUFFIX):
        _remove_quietly(stale)


def _fsync_dir(folder: Path) -> None:
    """Make a rename in folder durable. Where a folder cannot be opened or synced (Windows,
    some network filesystems) there is nothing more to do."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES, errno.EPERM):
            raise
    finally:
        os.close(fd)


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint's state, read with torch's safe (weights-only) loader. A file that cannot
    be read (truncated, empty, random bytes, another program's pickle) is one UserError."""
    p = resolve_path(path)
    # torch warns about some foreign files before refusing them: the error says enough
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            state = torch.load(p, map_location=map_location, weights_only=True)
        except Exception as e:  # any bytes at all may come in: no error type is a bug here
            raise UserError(_unreadable(p, e)) from e
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{p} is not a ganlab checkpoint")
    if state.get("version") != VERSION:
        raise UserError(f"checkpoint {p} has format version {state.get('version')}, "
                        f"this ganlab reads version {VERSION}")
    return migrate(state)


# --- older stored configs -------------------------------------------------------------------

# ganlab 0.1 kept every family's settings in top-level sections of every run's config; they
# now live under model.* and only the chosen family's exist. section -> the families it served
OLD_SECTIONS = {"gan": ("gan", "progan"), "classifier": ("classifier",), "vae": ("ae", "vae"),
                "cyclegan": ("cyclegan",)}
# old loss files set Gulrajani's / Arjovsky's optimiser too: that is experiment=... now
OLD_LOSS_PRESETS = ("wgan", "wgan_gp")


def is_old_layout(config: dict) -> bool:
    return "classifier" in config and "vae" in config and "gan" in config


def migrate_config(config: dict) -> dict:
    """A stored config in today's layout: the chosen family's old section merged into model,
    the other families' sections (and loss / defense where the family reads none) dropped."""
    if not is_old_layout(config):
        return config
    config = copy.deepcopy(config)
    family = config["model"]["family"]
    for section, families in OLD_SECTIONS.items():
        settings = config.pop(section)
        if family in families:
            if family == "ae":  # a plain autoencoder read only the learning rate
                settings = {"lr": settings["lr"]}
            config["model"].update(settings)
    if family not in OLD_SECTIONS["gan"]:
        config.pop("loss", None)
    if family != "classifier":
        config.pop("defense", None)
    return config


def migrate_overrides(overrides: list[str], family: str) -> list[str]:
    """A run's stored command line in today's keys: gan.lr_g=... -> model.lr_g=...;
    loss=wgan_gp of a GAN -> experiment=wgan_gp (the old loss file's optimiser settings)."""
    result = []
    for given in overrides:
        key, _, value = given.partition("=")
        prefix, bare = key[: len(key) - len(key.lstrip("+~"))], key.lstrip("+~")
        section, _, rest = bare.partition(".")
        if section in OLD_SECTIONS and rest:
            result.append(f"{prefix}model.{rest}={value}")
        elif bare == "loss" and family == "gan" and value in OLD_LOSS_PRESETS:
            result.append(f"experiment={value}")
        else:
            result.append(given)
    return result


# keys ganlab no longer reads, dropped from stored configs and command lines: eval.reference_steps
# (the reference classifier is built once per dataset now: `python -m ganlab reference steps=N`)
RETIRED_KEYS = ("eval.reference_steps",)


def drop_retired(config: dict) -> dict:
    """A stored config without RETIRED_KEYS (a copy when there were any)."""
    present = [key for key in RETIRED_KEYS
               if key.split(".")[-1] in (config.get(key.split(".")[0]) or {})]
    if not present:
        return config
    config = copy.deepcopy(config)
    for key in present:
        section, name = key.split(".")
        del config[section][name]
    return config


def is_retired(override: str) -> bool:
    return override.split("=", 1)[0].lstrip("+~") in RETIRED_KEYS


# options added with a default that trains differently: a stored config without the key
# resumes with the behaviour it trained with. (model name, key) -> the old behaviour
ADDED_OPTIONS = {("cgan", "mismatch"): False}


def keep_old_behaviour(config: dict) -> dict:
    """A stored config with ADDED_OPTIONS it lacks set to their old behaviour (a copy when
    any were missing)."""
    model = config.get("model") or {}
    missing = {key: value for (name, key), value in ADDED_OPTIONS.items()
               if model.get("name") == name and key not in model}
    if not missing:
        return config
    config = copy.deepcopy(config)
    config["model"].update(missing)
    return config


def migrate(state: dict[str, Any]) -> dict[str, Any]:
    """A loaded checkpoint's config and overrides in today's layout (a no-op for new ones)."""
    config = state.get("config")
    if isinstance(config, dict) and is_old_layout(config):
        state["overrides"] = migrate_overrides(list(state.get("overrides", [])),
                                               config["model"]["family"])
        state["config"] = config = migrate_config(config)
    if isinstance(config, dict):
        state["config"] = keep_old_behaviour(drop_retired(config))
    if any(isinstance(o, str) and is_retired(o) for o in state.get("overrides", [])):
        state["overrides"] = [o for o in state["overrides"] if not is_retired(o)]
    return state


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive; so does every ganlab save


def _unreadable(p: Path, e: Exception) -> str:
    if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM, errno.EIO):
        return f"could not read checkpoint {p}: {_reason(e)}"
    try:
        with open(p, "rb") as f:
            head = f.read(len(_ZIP_MAGIC))
    except OSError as read_error:
        return f"could not read checkpoint {p}: {_reason(read_error)}"
    if not head:
        return f"checkpoint {p} is corrupt or incomplete (an empty file){_earlier(p)}"
    if head != _ZIP_MAGIC:
        return f"{p} is not a ganlab checkpoint (not a file written by torch.save)"
    refused = re.search(r"GLOBAL ([\w.]+)", str(e))
    if "Weights only load failed" in str(e) and refused:
        return (f"{p} is not a ganlab checkpoint (it holds {refused.group(1)} objects, which "
                "the safe weights-only loader does not read)")
    return f"checkpoint {p} is corrupt or incomplete ({type(e).__name__}){_earlier(p)}"


def _earlier(p: Path) -> str:
    """Where to turn when a checkpoint is damaged: the step files beside it, if any."""
    others = [q.name for _, q in step_checkpoints(p.parent) if q.name != p.name]
    return f"; other checkpoints beside it: {', '.join(others)}" if others else ""


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


def with_current_defaults(stored: dict):
    """A checkpoint's config (today's layout) over today's defaults for its model, loss and
    defence: keys added since the run was trained (model.ema, trainer.precision, ...) get
    their defaults instead of failing, and enum values are typed again."""
    from hydra.errors import HydraException
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    from ganlab.config import compose
    from ganlab.preflight import choices

    chosen = [f"model={stored['model']['name']}"]
    chosen += [f"{group}={stored[group]['name']}" for group in ("loss", "defense")
               if group in stored]
    # the dataset's file: its name, or its loader when the name is a folder (unpaired)
    dataset_file = stored["dataset"].get("loader") or stored["dataset"]["name"]
    typed_dataset = dataset_file in choices("dataset")
    if typed_dataset:
        chosen.append(f"dataset={dataset_file}")
    stored = dict(stored)
    dataset = stored.pop("dataset")
    try:
        cfg = OmegaConf.merge(compose(chosen), stored)
        with open_dict(cfg):
            cfg.dataset = OmegaConf.merge(cfg.dataset, dataset) if typed_dataset else dataset
    except (HydraException, OmegaConfBaseException, UserError):
        # a model, key or choice ganlab no longer has: read it as it was
        return OmegaConf.create({**stored, "dataset": dataset})
    return cfg


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu",
                    config_overrides: dict | None = None):
    """The trained family of a checkpoint, networks in eval mode (`.G`/`.D` for GANs).

    For notebooks and scripts: `ganlab.load_checkpoint("outputs/<run>")`. config_overrides
    (e.g. {"eval": {"n_samples": 1000}}) change the stored config before the family is built.
    It leaves the process's float semantics as they are; ganlab's own commands flush
    denormals to zero for CPU speed, and a caller may too: ganlab.runtime.flush_denormals().
    """
    from omegaconf import OmegaConf

    from ganlab.data.base import DataSpec
    from ganlab.families import FAMILIES
    state = load(path, map_location=device)
    cfg = with_current_defaults(state["config"])
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
