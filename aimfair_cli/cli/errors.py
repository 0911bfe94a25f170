"""The one place where library errors become a one-line message and a non-zero exit.

`AIMFAIR_DEBUG=1` lets the original traceback through. Under torchrun only the first rank to fail prints
(see `aimfair_cli.core.dist`); the others exit 1 without a word. The exit statuses are documented in
docs/exit-codes.md: 0 done, 1 refused or failed (one `Error:` line), 2 the command line itself cannot be parsed
(Click's usage errors), 130 interrupted.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from typing import Callable, TypeVar

import typer

from ..core import dist
from ..core.errors import AimfairError, WriteError
from ..core.redact import redact_text

F = TypeVar("F", bound=Callable)

EXIT_ERROR = 1
EXIT_USAGE = 2  # Click's own: an unknown flag, a missing value, a value that is not of the flag's type
EXIT_INTERRUPTED = 130
MSG_STDOUT = "cannot write the result to standard output: {reason}"


def debug_enabled() -> bool:
    return os.environ.get("AIMFAIR_DEBUG", "") not in ("", "0")


def fail(message: str, code: int = EXIT_ERROR) -> typer.Exit:
    """Print `Error: message` on stderr and return the Exit to raise. Credentials inside any URL the message
    quotes (a model, a server, a proxy) are replaced by `***`, whichever layer wrote the message."""
    message = redact_text(message)
    sys.stderr.write(f"Error: {message}\n")
    sys.stderr.flush()
    from .console import to_log_file

    to_log_file(f"Error: {message}")
    return typer.Exit(code)


class StdoutError(WriteError):
    """The result could not be printed (stdout on a full disk)."""


class _Stdout:
    """sys.stdout during a command: a write that fails becomes StdoutError (one `Error:` line), not a traceback."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as exc:
            raise StdoutError(MSG_STDOUT.format(reason=exc.strerror or exc)) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            raise StdoutError(MSG_STDOUT.format(reason=exc.strerror or exc)) from None

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _silence_stdout(stream) -> None:
    """Point stdout's file descriptor at /dev/null, so what is still buffered goes nowhere and Python's own
    flush at exit does not fail a second time."""
    with contextlib.suppress(Exception):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


def handle_errors(fn: F) -> F:
    """Wrap a command so an `AimfairError` prints one line instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .console import finish_log_file

        failed = True
        real_stdout = sys.stdout
        sys.stdout = _Stdout(real_stdout)
        try:
            result = _run(fn, *args, **kwargs)
            _run(sys.stdout.flush, session=False)  # the result is printed: a full disk must not pass for success
            _run(finish_log_file, False, session=False)  # the log lines held until the inputs were checked
            failed = False
            return result
        except typer.Exit as exc:
            failed = exc.exit_code != 0
            raise
        finally:
            sys.stdout = real_stdout
            if failed:
                finish_log_file(True)

    return wrapper  # type: ignore[return-value]


def _run(fn: Callable, *args, session: bool = True, **kwargs):
    """Run the command; every way it can fail becomes one `Error:` line and an exit status (docs/exit-codes.md).
    `session`: inside the process group under torchrun (the command itself; not the final flushes after it)."""
    try:
        with dist.session() if session else contextlib.nullcontext():  # a no-op in one process
            return fn(*args, **kwargs)
    except dist.PeerFailed:
        raise typer.Exit(EXIT_ERROR) from None  # another rank failed first and prints its error
    except AimfairError as exc:
        if debug_enabled():
            raise
        if isinstance(exc, StdoutError):
            _silence_stdout(sys.stdout._stream if isinstance(sys.stdout, _Stdout) else sys.stdout)
        code = EXIT_USAGE if getattr(exc, "on_command_line", False) else EXIT_ERROR  # a flag's value not of its type
        if not dist.claim_failure():
            raise typer.Exit(code) from None
        raise fail(str(exc), code) from None
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
