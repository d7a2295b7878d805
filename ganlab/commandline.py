"""The key=value arguments of the small commands (sample, eval, latent, report), read into
their structured config: a typo or a wrong type is one `error:` line."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ganlab.errors import UserError


def parse_options(schema: type, args: list[str], command: str) -> Any:
    """args: key=value strings; returns the merged config (missing required keys: an error)."""
    bad = [a for a in args if "=" not in a]
    if bad:
        raise UserError(f"{command} takes key=value arguments, got {bad[0]!r}")
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.from_dotlist(args))
        OmegaConf.to_container(cfg, throw_on_missing=True)
    except OmegaConfBaseException as e:
        first = str(e).splitlines()[0]
        key = getattr(e, "full_key", None)  # "Value 'maybe' is not a valid bool" names no key
        raise UserError(f"{command}: {key}: {first}" if key and key not in first
                        else f"{command}: {first}") from e
    return cfg
