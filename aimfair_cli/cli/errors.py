"""The one place where library errors become a one-line message and a non-zero exit.

`AIMFAIR_DEBUG=1` lets the original traceback through.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable, TypeVar

import typer

from ..errors import AimfairError

F = TypeVar("F", bound=Callable)

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def debug_enabled() -> bool:
    return os.environ.get("AIMFAIR_DEBUG", "") not in ("", "0")


def fail(message: str, code: int = EXIT_ERROR) -> typer.Exit:
    """Print `Error: message` on stderr and return the Exit to raise."""
    sys.stderr.write(f"Error: {message}\n")
    sys.stderr.flush()
    return typer.Exit(code)


def handle_errors(fn: F) -> F:
    """Wrap a command so an `AimfairError` prints one line instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AimfairError as exc:
            if debug_enabled():
                raise
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            if debug_enabled():
                raise
            raise fail("interrupted", EXIT_INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]
