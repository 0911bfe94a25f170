"""stderr console, logging and the rich progress bar. Only rank 0 prints."""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from .. import dist
from ..progress import NULL

# Under torchrun, ranks other than 0 print nothing at all (their error line, if any, goes through cli/errors.py).
_QUIET = not dist.is_main()
err = Console(stderr=True, highlight=False, quiet=_QUIET)
out = Console(highlight=False, soft_wrap=True, quiet=_QUIET)


def print_wide(table: Any) -> None:
    """Print a table at its natural width, so numbers are never cut to "100.…" or wrapped on a narrow or piped
    console."""
    from rich.measure import Measurement

    width = Measurement.get(out, out.options.update(max_width=10_000), table).maximum
    if width <= out.width:
        out.print(table)
    else:
        Console(width=width, highlight=False, soft_wrap=True, quiet=_QUIET).print(table)


def setup_logging(verbose: bool = False) -> None:
    from rich.logging import RichHandler

    level = logging.DEBUG if verbose else logging.INFO
    if not dist.is_main():
        level = logging.WARNING
    handler = RichHandler(console=err, show_path=False, show_time=False, markup=False)
    root = logging.getLogger("aimfair_cli")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


class _RichTask:
    def __init__(self, progress: Progress, task_id: Any) -> None:
        self._progress, self._id = progress, task_id

    def advance(self, n: float = 1, **info: Any) -> None:
        text = "  ".join(f"{k} {v}" for k, v in info.items())
        if text:
            self._progress.update(self._id, advance=n, info=text)
        else:
            self._progress.update(self._id, advance=n)


class RichProgress:
    """`aimfair_cli.progress.Progress` drawn with rich on stderr (silent on ranks other than 0)."""

    def __init__(self) -> None:
        self._bar = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=err,
            transient=False,
            disable=not dist.is_main(),
        )

    @contextlib.contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[Any]:
        if not dist.is_main():
            # a disabled rich bar never starts, so nested tasks would remove each other's rows (KeyError)
            with NULL.task(description, total) as task:
                yield task
            return
        started = not self._bar.live.is_started
        if started:
            self._bar.start()
        task_id = self._bar.add_task(description, total=total, info="")
        try:
            yield _RichTask(self._bar, task_id)
        finally:
            if started:
                self._bar.stop()
                # the bar is restarted for the next top-level task; drop finished rows so they are not redrawn
                for tid in list(self._bar.task_ids):
                    self._bar.remove_task(tid)
