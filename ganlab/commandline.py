"""The key=value arguments of the small commands (sample, eval, latent, report), read into
their structured config: a typo or a wrong type is one `error:` line."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from ganlab.errors import UserError


def parse_options(schema: type, args: list[str], command: str) -> Any:
    """args: key=value strings; returns the merged config (missing required keys: an error)."""
    bad = [a for a in args if "=" not in a]
    if bad:
        raise UserError(f"{command} takes key=value arguments, got {bad[0]!r}")
    base = OmegaConf.structured(schema)
    try:
        cfg = OmegaConf.merge(base, OmegaConf.from_dotlist(args))
        OmegaConf.to_container(cfg, throw_on_missing=True)
    except OmegaConfBaseException as e:
        first = str(e).splitlines()[0]
        key = getattr(e, "full_key", None)  # "Value 'maybe' is not a valid bool" names no key
        message = (f"{command}: {key}: {first}" if key and key not in first
                   else f"{command}: {first}")
        raise UserError(message + _known_keys(base, key, e)) from e
    return cfg


def _known_keys(base, key: str | None, error: Exception) -> str:
    """For an unknown key: the keys its section has, e.g. " (keys: ckpt, out, format)"."""
    if not key or not isinstance(error, ConfigKeyError):
        return ""
    section = OmegaConf.select(base, key.rpartition(".")[0]) if "." in key else base
    if not OmegaConf.is_dict(section):
        return ""
    return f" (keys: {', '.join(str(k) for k in section)})"
