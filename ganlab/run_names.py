"""Run directories named after what they hold, so TensorBoard's run list says which is which.

A run: `outputs/<date>/<time>_<model>_<loss or defence>[_<other overrides>]`, e.g.
`outputs/2026-11-30/15-28-02_dcgan_wgan_gp_max_steps-300` for `model=dcgan loss=wgan_gp
trainer.max_steps=300`. A sweep job: `outputs/multirun/<date>/<time>/<job number>_<the swept
values>`, e.g. `3_loss-hinge`. Names hold only letters, digits and `._+-`, so `resume=<run
dir>` needs no quotes (Hydra reads `=`, `,` and brackets in a value as syntax).
Both come from OmegaConf resolvers in conf/config.yaml's hydra.run.dir and hydra.sweep.subdir;
which keys a sweep varies is worked out from the command line before Hydra starts (`swept`).
"""

from __future__ import annotations

import re

from omegaconf import OmegaConf

MAX_LENGTH = 96  # characters of the name part: a path stays readable in TensorBoard's list
# overrides that say where or how a run is watched, not what it trains: left out of names
UNNAMED = ("hydra.", "hydra/", "device", "data_dir", "resume", "log.progress", "logger")
GROUPS_IN_NAME = ("model", "loss", "defense")  # named first, by their values
# what a name may hold: characters that need no quoting in a shell or in a Hydra override
# (`resume=<run dir>` must work as typed: `=`, `,` and brackets would not)
_UNSAFE = re.compile(r"[^A-Za-z0-9._+\-]+")


def _value(value: str) -> str:
    """A value as a name: a list's items joined by `+`, anything else unsafe -> `-`."""
    value = value.strip("[]()").replace(",", "+")
    text = _UNSAFE.sub("-", value)
    return text.rstrip("-") if value.startswith("-") else text.strip("-")  # -1 stays -1


def _short(override: str) -> str:
    """`trainer.max_steps=300` -> `max_steps-300`; a group choice `dataset=cifar10` ->
    `cifar10`; `model.g_hidden=[16,32]` -> `g_hidden-16+32`; a path's slashes -> `-`."""
    key, _, value = override.lstrip("+~").partition("=")
    if "." not in key and "/" not in key:
        return _value(value)
    return f"{key.rsplit('.', 1)[-1]}-{_value(value)}"


def _key(override: str) -> str:
    return override.lstrip("+~").partition("=")[0]


def _join(parts: list[str]) -> str:
    name = "_".join(p for p in parts if p)
    return name if len(name) <= MAX_LENGTH else name[: MAX_LENGTH - 1].rstrip("_,.") + "+"


def run_name(*, _root_) -> str:
    """The model, its loss or defence, then the other overrides given on the command line."""
    parts = [str(OmegaConf.select(_root_, f"{group}.name", default="") or "")
             for group in GROUPS_IN_NAME]
    overrides = OmegaConf.select(_root_, "hydra.overrides.task", default=[]) or []
    parts += [_short(o) for o in overrides
              if not _key(o).startswith(UNNAMED) and _key(o) not in GROUPS_IN_NAME]
    return _join(parts)


def job_name(*, _root_) -> str:
    """A sweep job's number and swept values (the overrides every job shares left out)."""
    fixed = set(OmegaConf.select(_root_, "hydra.job.config.override_dirname.exclude_keys",
                                 default=[]) or [])
    overrides = OmegaConf.select(_root_, "hydra.overrides.task", default=[]) or []
    number = str(OmegaConf.select(_root_, "hydra.job.num", default=0))
    return _join([number, *(f"{_key(o)}-{_value(o.partition('=')[2])}" for o in overrides
                            if _key(o) not in fixed and not _key(o).startswith(UNNAMED))])


def fixed_keys(overrides: list[str]) -> list[str]:
    """The keys of a sweep's command line that are not swept (one value for every job)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # Hydra reports a malformed override itself, with its own message
        return []
    return [o.get_key_element().lstrip("+~") for o in parsed if not o.is_sweep_override()]


def register() -> None:
    for name, resolver in (("ganlab_run_name", run_name), ("ganlab_job_name", job_name)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
