"""Checks a `train` command line before Hydra creates a run dir: every config group choice
exists and every sweep combination composes against the schema. Bad input fails here with one
`error: ...` line and exit code 2, with nothing written to disk.

It also turns `resume=PATH` into a continuation of that run: the run's own overrides come first
(new ones on the command line win) and Hydra's run dir is pinned to the original run dir.
"""

from __future__ import annotations

import datetime
import itertools
import os
import re
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ganlab import checkpoint, distributed, run_names
from ganlab.config import CONF_DIR, SCHEMA_PREFIX, check_ranges
from ganlab.errors import UserError
from ganlab.plugins import search_path_override
from ganlab.sweep import optimising

GROUPS = ("dataset", "model", "loss", "defense", "experiment", "logger")
DEFAULT_MODEL = "dcgan"  # conf/config.yaml's choice
# the sections of model settings before they moved under model.* (ganlab 0.1)
OLD_SECTIONS = ("gan", "vae", "classifier", "cyclegan")
# Hydra flags that take a value in the next argument
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name",
                     "-cn", "--config-dir", "-cd", "--info", "--experimental-rerun"}


def config_dirs() -> list[Path]:
    """ganlab's config folder, then the plugins' (ganlab.plugins)."""
    from ganlab.plugins import discover

    return [CONF_DIR, *discover()]


def choices(group: str) -> list[str]:
    return sorted({p.stem for folder in config_dirs() for p in (folder / group).glob("*.yaml")
                   if not p.stem.startswith(SCHEMA_PREFIX)})


def models_with(group: str) -> list[str]:
    """The models whose config file brings the group (loss: the GANs; defense: classifiers)."""
    return sorted({p.stem for folder in config_dirs() for p in (folder / "model").glob("*.yaml")
                   if f"/{group}@" in p.read_text()})


def _friendly(e: BaseException, job: list[str]) -> str:
    """Hydra's message for the commonest mistakes, said in ganlab's terms."""
    text = _one_line(e)
    for o in job:
        key = o.split("=", 1)[0].lstrip("+~")
        if key.split(".")[0] in OLD_SECTIONS and f"'{key}'" in text:
            return (f"{key} is now model.{key.split('.', 1)[1]}: a model's settings live "
                    f"under model.* (python -m ganlab train model=... --cfg job lists them)")
    model = next((o.split("=", 1)[1] for o in reversed(job) if o.startswith("model=")),
                 DEFAULT_MODEL)
    refused = re.match(r"Could not override '([\w.]+)'", text)
    if refused:
        key = refused.group(1)
        section = key.split(".")[0]
        if section in ("loss", "defense") and model in models_with(section):
            if key != section and "not in" in text:
                chosen = next((o for o in reversed(job) if o.startswith(f"{section}=")),
                              f"model={model}'s default {section} (choose one: {section}=...)")
                return f"{key} is not a setting of {chosen}"
        elif section in ("loss", "defense"):
            return (f"{key}{'=' if key == section else ''} applies to "
                    f"model={','.join(models_with(section))}, not to model={model}")
        if "is not in struct" in text and key == section:  # a top-level typo: modle=dcgan
            return (f"unknown config group or key {key!r}; choose a group of: "
                    f"{', '.join(GROUPS)} (python -m ganlab train --help lists them)")
        if section == "model" and "not in" in text:
            return (f"{key} is not a setting of model={model} (python -m ganlab train "
                    f"model={model} --cfg job lists them)")
    return text


def split_args(args: list[str]) -> tuple[list[str], list[str]]:
    """Hydra's flags vs key=value overrides."""
    flags, overrides = [], []
    it = iter(args)
    for arg in it:
        if arg.startswith("-"):
            flags.append(arg)
            if arg in _FLAGS_WITH_VALUE:
                flags.append(next(it, ""))
        else:
            overrides.append(arg)
    return flags, overrides


def _one_line(e: BaseException) -> str:
    """Hydra's message and the OmegaConf cause, without its full_key/object_type lines."""
    parts = [str(e).strip().splitlines()[0]] if str(e).strip() else []
    cause = e.__cause__ or e.__context__
    if cause is not None and str(cause).strip():
        parts.append(str(cause).strip().splitlines()[0])
    return ": ".join(p.rstrip(".") for p in parts if "To append to your config" not in p)


def _sweep_values(override) -> list[str]:
    if override.is_interval_sweep():  # a search space (hydra/sweeper=optuna): both its ends
        interval = override.value()
        return [str(interval.start), str(interval.end)]
    if override.is_sweep_override():
        return [str(v) for v in override.sweep_string_iterator()]
    return [override.get_value_element_as_str()]


def compose_all(overrides: list[str], config_name: str = "config",
                groups: tuple[str, ...] = GROUPS) -> list:
    """Every combination a command line asks for, composed against the schema; an unknown
    group choice, a typo or a wrong type is a UserError."""
    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
    except HydraException as e:
        raise UserError(_one_line(e)) from e
    grid: list[list[str]] = []
    for o in parsed:
        key = o.key_or_group
        if key in groups and not o.is_delete():
            known = choices(key)
            for value in _sweep_values(o):
                if value not in known:
                    raise UserError(f"unknown {key} {value!r}; "
                                    f"choose one of: {', '.join(known)}")
        if o.is_sweep_override():
            grid.append([f"{o.get_key_element()}={v}" for v in _sweep_values(o)])
        else:
            grid.append([o.input_line])
    composed = []
    search = search_path_override()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        for combination in itertools.product(*grid):
            job = [o for o in combination if not o.startswith("hydra.") and
                   not o.startswith("hydra/")]
            try:
                composed.append(compose(config_name, overrides=[*job, *search]))
            except (HydraException, OmegaConfBaseException, ValueError) as e:
                raise UserError(_friendly(e, job)) from e
        _check_hydra_overrides(config_name, [o for o in parsed if _is_hydra(o)],
                               [o.input_line for o in parsed if o.is_interval_sweep()])
    return composed


def _is_hydra(override) -> bool:
    key = override.key_or_group
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


# what an unknown hydra/<group> choice adds: where the other choices come from
PLUGIN_HINTS = {
    "hydra/launcher": ' (the joblib and submitit launchers come with pip install -e ".[sweep]")',
    "hydra/sweeper": ' (the optuna sweeper comes with pip install -e ".[sweep]")',
}


def _check_hydra_overrides(config_name: str, parsed: list, searched: list[str]) -> None:
    """hydra/launcher=jobilb or hydra.launcher.n_jobz=2: one line here instead of Hydra's
    multi-line error after it started. `searched`: the interval overrides, which only a
    sweeper that optimises takes."""
    from hydra.core.global_hydra import GlobalHydra

    loader = GlobalHydra.instance().config_loader()
    for o in parsed:
        if o.key_or_group.startswith("hydra/") and not o.is_delete():
            known = loader.get_group_options(o.key_or_group)
            for value in _sweep_values(o):
                if value not in known:
                    hint = PLUGIN_HINTS.get(o.key_or_group, "")
                    raise UserError(f"unknown {o.key_or_group} {value!r}; choose one of: "
                                    f"{', '.join(known)}{hint}")
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    if not fixed and not searched:
        return
    try:
        cfg = compose(config_name, overrides=fixed, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        raise UserError(_one_line(e)) from e
    if searched and not optimising(cfg.hydra.sweeper):
        raise UserError(f"{searched[0]}: an interval is a search space for a sweeper that "
                        "optimises (hydra/sweeper=optuna, from pip install -e \".[sweep]\"); "
                        "the basic sweeper takes a list (a,b,c) or range(start,stop,step)")


def check_overrides(overrides: list[str]) -> None:
    for cfg in compose_all(overrides):
        _check_names(cfg)
        check_ranges(cfg)


# what a required key (??? in a config file) is, for the message when it is not given
REQUIRED_HINTS = {"dataset.name": "the folder under data_dir holding trainA/ and trainB/, "
                                  "or for dataset=paired train/ with A|B pairs"}


def _check_required(cfg) -> None:
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        key = missing[0]
        hint = f" ({REQUIRED_HINTS[key]})" if key in REQUIRED_HINTS else ""
        raise UserError(f"{key} must be given{hint}, e.g. {key}=...")


def _check_names(cfg) -> None:
    """Names inside groups (model.name, loss.name, ...) must have a builder."""
    _check_required(cfg)
    from ganlab.attacks.defenses import DEFENSES
    from ganlab.data import DATASETS, dataset_builder
    from ganlab.families import FAMILIES, check_family_data
    from ganlab.losses import LOSSES
    from ganlab.models import MODELS

    DATASETS.get(dataset_builder(cfg.dataset))
    MODELS.get(cfg.model.name)
    FAMILIES.get(cfg.model.family)
    if "loss" in cfg:
        LOSSES.get(cfg.loss.name)
    if "defense" in cfg:
        DEFENSES.get(cfg.defense.name)
    check_family_data(cfg)
    distributed.check_sync_batchnorm(cfg)


RESUME_AUTO = "auto"  # resume=auto: continue the run dir's own checkpoint when there is one


def with_resume(overrides: list[str]) -> list[str]:
    """resume=PATH: the checkpoint's own overrides first, then the new ones, in its run dir."""
    resume = [o for o in overrides if o.startswith("resume=")]
    if not resume or resume[-1] == f"resume={RESUME_AUTO}":
        return overrides  # auto: decided in the run dir itself (see train.resume_path)
    path = checkpoint.resolve_path(resume[-1].split("=", 1)[1])
    state = checkpoint.load(path)
    keep = [o for o in overrides if not o.startswith("resume=")]
    new_keys = {o.split("=", 1)[0].lstrip("+~") for o in keep}
    old = [o for o in state.get("overrides", []) if o.split("=", 1)[0].lstrip("+~") not in new_keys]
    result = old + keep + [f"resume={path}"]
    run_dir = checkpoint.run_dir_of(path)
    if run_dir is not None and not any(o.startswith("hydra.run.dir=") for o in result):
        result.append(f"hydra.run.dir={run_dir}")
    return result


def _check_writable(overrides: list[str]) -> None:
    """The run dir's nearest existing folder must be writable: otherwise Hydra fails with a
    traceback while creating it, before any of ganlab's code runs."""
    given = [o.split("=", 1)[1] for o in overrides if o.startswith("hydra.run.dir=")]
    target = Path(given[-1]) if given else Path("outputs")
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot create the run dir {target}: {existing} is not writable; "
                        "run from a writable folder or choose another hydra.run.dir")


def _refuse_to_overwrite(overrides: list[str]) -> None:
    """A fresh run pointed at a run dir that holds a checkpoint would overwrite it."""
    if any(o.startswith("resume=") for o in overrides):
        return
    for o in overrides:
        if o.startswith("hydra.run.dir="):
            run_dir = Path(o.split("=", 1)[1])
            if (run_dir / "checkpoints" / checkpoint.LAST).is_file():
                raise UserError(f"run dir {run_dir} already holds a checkpoint; continue it with "
                                f"resume={run_dir}, or choose another hydra.run.dir")


def train_help(overrides: list[str]) -> str:
    """Hydra's app help, with the config groups read from conf/ (schemas left out)."""
    from omegaconf import OmegaConf

    groups = "\n".join(f"  {g}: {', '.join(choices(g))}" for g in GROUPS)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        try:
            cfg = compose("config", overrides=[*overrides, *search_path_override()])
        except (HydraException, OmegaConfBaseException) as e:
            raise UserError(_one_line(e)) from e
    return (
        "ganlab train: train a model from the config groups below.\n\n"
        "usage: python -m ganlab train [key=value ...] [-m key=a,b ...] [hydra flags]\n"
        "  -m/--multirun sweeps; --cfg job prints the config; --hydra-help lists Hydra's flags.\n\n"
        f"== Config groups ==\n{groups}\n\n"
        "== Config (with the overrides given) ==\n"
        f"{OmegaConf.to_yaml(cfg)}\n"
    )


def prepare_train_args(args: list[str]) -> list[str]:
    """Validate a `train` command line; returns the arguments to hand to Hydra."""
    if not (CONF_DIR / "config.yaml").is_file():
        raise UserError(f"the config folder {CONF_DIR} is missing; reinstall ganlab "
                        "(pip install . or pip install -e . from its source tree)")
    flags, overrides = split_args(args)
    if any(f in ("--help", "-h") for f in flags):
        print(train_help(overrides), end="")
        raise SystemExit(0)
    if any(f in ("--hydra-help", "--version", "--info", "-i", "--shell-completion",
                 "-sc") for f in flags):
        return args  # Hydra answers these itself
    modes = [f for f in flags if f in ("-m", "--multirun", "--cfg", "-c", "--info", "-i")]
    if len(modes) > 1:  # Hydra would say so with a traceback
        raise UserError(f"{' and '.join(modes)} cannot be combined: give one of them")
    overrides = [*with_resume(overrides), *search_path_override()]
    check_overrides(overrides)
    _refuse_to_overwrite(overrides)
    _check_writable(overrides)
    if distributed.launched():
        overrides = _one_run_dir(flags, overrides)
    if any(f in ("-m", "--multirun") for f in flags):
        overrides = _name_jobs_by_swept_values(overrides)
    return flags + overrides


EXCLUDE_KEYS = "hydra.job.config.override_dirname.exclude_keys"


def _name_jobs_by_swept_values(overrides: list[str]) -> list[str]:
    """A sweep job's folder names what that job varies: the keys every job shares are the
    override_dirname's excluded keys, which the job-name resolver leaves out."""
    if any(o.startswith(EXCLUDE_KEYS + "=") for o in overrides):
        return overrides  # the user's own choice
    keys = ",".join(repr(k) for k in run_names.fixed_keys(overrides))
    return [*overrides, f"{EXCLUDE_KEYS}=[{keys}]"]


def _one_run_dir(flags: list[str], overrides: list[str]) -> list[str]:
    """Under torchrun: every process writes into the run dir rank 0 names (each would
    otherwise take its own clock's timestamp); only rank 0 writes Hydra's files and train.log."""
    if any(f in ("-m", "--multirun") for f in flags):
        raise UserError("a sweep (-m) cannot run under torchrun: start one torchrun per "
                        "configuration, or sweep with a launcher (hydra/launcher=submitit_slurm)")
    distributed.init()
    if not any(o.startswith("hydra.run.dir=") for o in overrides):
        now = datetime.datetime.now()
        chosen = distributed.from_rank0(f"outputs/{now:%Y-%m-%d}/{now:%H-%M-%S}_"
                                        "${ganlab_run_name:}")
        overrides = [*overrides, f"hydra.run.dir={chosen}"]
    if int(os.environ.get("RANK", "0")) > 0:
        overrides = [*overrides, "hydra.output_subdir=null", "hydra/job_logging=stdout",
                     "hydra.job_logging.root.level=WARNING"]
    return overrides
