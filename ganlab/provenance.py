"""What produced a run: the command line that reproduces it, ganlab's version and, for a
source checkout, its git commit (train.log's first lines and TensorBoard's Text tab)."""

from __future__ import annotations

import shlex
import subprocess
from functools import cache
from pathlib import Path

import ganlab


def command_line(overrides: list[str]) -> str:
    """`python -m ganlab train` with a run's overrides (a sweep job's own values; Hydra's own
    hydra.* settings aside), quoted for a POSIX shell."""
    return " ".join(["python -m ganlab train", *(shlex.quote(o) for o in overrides)])


@cache
def source_version() -> str:
    """"ganlab 0.1.0 (git 1a2b3c4d5e6f)", "-dirty" when the checkout has changes; the version
    alone outside a git checkout or without git."""
    version = f"ganlab {ganlab.__version__}"
    source = Path(ganlab.__file__).resolve().parent.parent
    if not (source / ".git").exists():
        return version
    try:
        commit = subprocess.run(["git", "-C", str(source), "describe", "--always", "--dirty",
                                 "--abbrev=12"], capture_output=True, text=True, timeout=10,
                                check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version} (git {commit})" if commit else version
