"""The one place where library errors become a one-line message and a non-zero exit.

`AIMFAIR_DEBUG=1` lets the original traceback through. Under torchrun only the first rank to fail prints
(see `aimfair_cli.dist`); the others exit 1 without a word.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable, TypeVar

import typer

from .. import dist
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
    from .console import to_log_file

    to_log_file(f"Error: {message}")
    return typer.Exit(code)


def handle_errors(fn: F) -> F:
    """Wrap a command so an `AimfairError` prints one line instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with dist.session():  # the process group under torchrun; a no-op in one process
                return fn(*args, **kwargs)
        except dist.PeerFailed:
            raise typer.Exit(EXIT_ERROR) from None  # another rank failed first and prints its error
        except AimfairError as exc:
            if debug_enabled():
                raise
            if not dist.claim_failure():
                raise typer.Exit(EXIT_ERROR) from None
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            if debug_enabled():
                raise
            if not dist.claim_failure():
                raise typer.Exit(EXIT_INTERRUPTED) from None
            raise fail("interrupted", EXIT_INTERRUPTED) from None
        except Exception:
            # a bug keeps its traceback, but only on the rank that failed first: on the others the same error,
            # or a collective broken by the dead peer ("Connection closed by peer"), is only its echo
            if not debug_enabled() and not dist.claim_failure():
                raise typer.Exit(EXIT_ERROR) from None
            raise

    return wrapper  # type: ignore[return-value]
