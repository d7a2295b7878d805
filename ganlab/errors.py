"""User-facing errors: bad input ends a command with one `error: ...` line and exit code 2."""

from __future__ import annotations

import sys
from typing import NoReturn

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """Bad input (config, data, checkpoint): reported as one line, exit code 2, no traceback."""


def fail(message: str) -> NoReturn:
    """Print the one-line error and exit with the bad-input code."""
    one_line = " ".join(str(message).split())
    print(f"error: {one_line}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_BAD_INPUT)
