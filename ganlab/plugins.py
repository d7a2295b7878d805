"""Registries fill themselves: every module in ganlab's own packages, and the modules of
plugins, are imported once, and register their families, networks, datasets, losses,
defences and config schemas on import. No list of modules is kept by hand.

A plugin is a module outside ganlab (your own family, loss or dataset) named by
- the environment variable GANLAB_PLUGINS (comma-separated module names, importable from
  sys.path), or
- an entry point in the group "ganlab.plugins" of an installed package
  (`[project.entry-points."ganlab.plugins"] myfamily = "mypackage.myfamily"`).
If the module has a `CONF_DIR` (a folder with conf/-style group folders: model/, loss/,
dataset/ ...), its YAML files join ganlab's on Hydra's search path.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from importlib.metadata import entry_points
from pathlib import Path

from ganlab.errors import UserError

# ganlab's packages whose modules register something
PACKAGES = ("ganlab.families", "ganlab.models", "ganlab.data", "ganlab.attacks")
MODULES = ("ganlab.losses", "ganlab.trackers")
ENTRY_POINT_GROUP = "ganlab.plugins"
ENV = "GANLAB_PLUGINS"

_done: set[str] = set()


def _import_package(name: str) -> None:
    package = importlib.import_module(name)
    for info in pkgutil.iter_modules(package.__path__, prefix=f"{name}."):
        importlib.import_module(info.name)


def plugin_modules() -> list[str]:
    """The plugin modules named by GANLAB_PLUGINS and by installed entry points."""
    names = [n.strip() for n in os.environ.get(ENV, "").split(",") if n.strip()]
    names += [ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)]
    return list(dict.fromkeys(names))


def discover() -> list[Path]:
    """Import every registering module once; returns the plugins' config folders."""
    if "ganlab" not in _done:
        for name in MODULES:
            importlib.import_module(name)
        for name in PACKAGES:
            _import_package(name)
        _done.add("ganlab")
    folders = []
    for name in plugin_modules():
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            raise UserError(f"plugin {name!r} (from {ENV} or a ganlab.plugins entry point) "
                            f"cannot be imported: {e}") from e
        conf = getattr(module, "CONF_DIR", None)
        if conf is not None:
            folders.append(Path(conf).resolve())
    return folders


def search_path_override() -> list[str]:
    """The hydra.searchpath override that adds the plugins' config folders (none: [])."""
    folders = discover()
    if not folders:
        return []
    return ["hydra.searchpath=[" + ",".join(f"file://{f}" for f in folders) + "]"]
