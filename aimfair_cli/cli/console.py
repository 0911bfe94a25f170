"""stderr console, logging and the rich progress bar. Only rank 0 prints."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
import time
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

from ..core import dist, fsio
from ..core.errors import OutputError, WriteError
from ..core.fsio import check_writable
from ..core.progress import NULL

# Under torchrun, ranks other than 0 print nothing at all (their error line, if any, goes through cli/errors.py).
_QUIET = not dist.is_main()
# soft_wrap: a line is never broken at the console width (80 columns when stderr is a file or a pipe)
err = Console(stderr=True, highlight=False, quiet=_QUIET, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True, quiet=_QUIET)

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(message)s"
PLAIN_DATE = "%Y-%m-%d %H:%M:%S"
PROGRESS_LOGGER = "aimfair_cli.progress"  # the plain progress lines (see PlainProgress)
PROGRESS_EVERY_S = 30.0  # within a long task, a plain progress line at most this often
_log_file: "LogFile | None" = None
MSG_LOG_FILE = "--log-file: cannot write {path}: {reason}"


def interactive() -> bool:
    """Live bars and rich log lines only on a terminal; a file, a pipe or a SLURM log gets plain lines."""
    return err.is_terminal


def print_wide(table: Any) -> None:
    """Print a table at its natural width, so numbers are never cut to "100.…" or wrapped on a narrow or piped
    console."""
    from rich.measure import Measurement

    width = Measurement.get(out, out.options.update(max_width=10_000), table).maximum
    if width <= out.width:
        out.print(table)
    else:
        Console(width=width, highlight=False, soft_wrap=True, quiet=_QUIET).print(table)


def _plain(handler: logging.Handler) -> logging.Handler:
    handler.setFormatter(logging.Formatter(PLAIN_FORMAT, PLAIN_DATE))
    return handler


class LogFile(logging.Handler):
    """The --log-file: plain lines appended to a file, held in memory until the command has checked that the
    file is none of its inputs (`fsio.check_outputs` releases it), so a log never appends into a manifest or a
    checkpoint. A write that fails (a full disk, /dev/full) is one WriteError, and the file is not tried again."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.existed = os.path.exists(path)
        self.pending: list[str] = []
        self.stream: Any = None
        self.released = self.broken = False
        self.setFormatter(logging.Formatter(PLAIN_FORMAT, PLAIN_DATE))

    def emit(self, record: logging.LogRecord) -> None:
        if self.broken:
            return
        line = self.format(record) + "\n"
        if not self.released:
            self.pending.append(line)
            return
        self._write(line)

    def _write(self, text: str) -> None:
        try:
            if self.stream is None:
                self.stream = open(self.path, "a", encoding="utf-8")
            self.stream.write(text)
            self.stream.flush()
        except OSError as exc:
            self.broken = True
            raise WriteError(MSG_LOG_FILE.format(path=self.path, reason=exc.strerror or exc)) from None

    def veto(self) -> None:
        """The file was refused as an output (it is an input, or another output): never write to it."""
        self.broken = True
        self.pending = []

    def start(self) -> None:
        """Start writing: the file has been checked against the command's inputs."""
        if self.released or self.broken:
            return
        self.released = True
        text, self.pending = "".join(self.pending), []
        if text:
            self._write(text)

    def finish(self, failed: bool) -> None:
        """At the end of the command: a failure before the check writes only to a file that did not exist
        (it cannot have been an input); a success writes what was held (and a failure to is an error)."""
        try:
            if not self.released and not failed:
                self.start()
            elif not self.released and not self.existed:
                with contextlib.suppress(WriteError):
                    self.start()
        finally:
            self.close()

    def close(self) -> None:
        if self.stream is not None:
            with contextlib.suppress(OSError):
                self.stream.close()
            self.stream = None
        super().close()


def setup_logging(verbose: bool = False, log_file: str | None = None) -> None:
    """Log lines on stderr (rich on a terminal, plain timestamped lines otherwise) and, with `log_file`, the
    same plain lines, progress included, appended to that file."""
    global _log_file
    from rich.logging import RichHandler

    level = logging.DEBUG if verbose else logging.INFO
    if not dist.is_main():
        level = logging.WARNING
    if interactive():
        screen: logging.Handler = RichHandler(console=err, show_path=False, show_time=False, markup=False)
    else:
        screen = _plain(logging.StreamHandler(sys.stderr))
    if _log_file is not None:
        _log_file.close()
    _log_file = None
    fsio.clear_common_outputs()
    if log_file is not None and dist.is_main():
        if os.path.isdir(log_file):
            raise OutputError(MSG_LOG_FILE.format(path=log_file, reason="it is a folder"))
        if not os.path.isdir(os.path.dirname(os.path.abspath(log_file))):
            raise OutputError(MSG_LOG_FILE.format(path=log_file, reason=os.strerror(errno.ENOENT)))
        try:
            check_writable(log_file)
        except OutputError as exc:
            raise OutputError("--log-file: " + str(exc)) from None
        _log_file = LogFile(log_file)
        fsio.add_common_output("--log-file", log_file, _log_file.start, _log_file.veto)
    files = [_log_file] if _log_file is not None else []
    root = logging.getLogger("aimfair_cli")
    root.handlers[:] = [screen, *files]
    root.setLevel(level)
    root.propagate = False
    # progress lines: on stderr only where no bar is drawn; always in the log file
    progress_log = logging.getLogger(PROGRESS_LOGGER)
    progress_log.handlers[:] = [*([] if interactive() else [screen]), *files]
    progress_log.setLevel(logging.INFO if dist.is_main() else logging.WARNING)
    progress_log.propagate = False


def to_log_file(message: str) -> None:
    """Copy a line printed outside logging (the final `Error:` line) to the --log-file."""
    if _log_file is not None:
        with contextlib.suppress(WriteError):
            _log_file.handle(logging.makeLogRecord({"msg": message, "levelname": "ERROR", "levelno": logging.ERROR}))


def finish_log_file(failed: bool) -> None:
    """Called once when the command ends (see cli/errors.py)."""
    global _log_file
    if _log_file is not None:
        _log_file.finish(failed)
        for name in ("aimfair_cli", PROGRESS_LOGGER):  # a later in-process caller must not append to it
            logger = logging.getLogger(name)
            logger.handlers[:] = [h for h in logger.handlers if h is not _log_file]
        _log_file = None
    fsio.clear_common_outputs()


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
    """`aimfair_cli.core.progress.Progress` drawn with rich on stderr (silent on ranks other than 0)."""

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


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class _PlainTask:
    def __init__(self, description: str, total: float | None, every: float) -> None:
        self.description, self.total, self.every = description, total, every
        self.done = 0.0
        self.info = ""
        self.started = self.last = time.monotonic()

    def _status(self, now: float) -> str:
        elapsed = now - self.started
        parts = [f"{self.description}: {self.done:g}" + (f"/{self.total:g}" if self.total is not None else "")]
        parts.append(f"{_duration(elapsed)} elapsed")
        if self.total and 0 < self.done < self.total and elapsed > 0:
            parts.append(f"eta {_duration(elapsed / self.done * (self.total - self.done))}")
        return ", ".join(parts) + (f"  {self.info}" if self.info else "")

    def advance(self, n: float = 1, **info: Any) -> None:
        self.done += n
        if info:
            self.info = "  ".join(f"{k} {v}" for k, v in info.items())
        now = time.monotonic()
        if now - self.last >= self.every and (self.total is None or self.done < self.total):
            self.last = now
            logging.getLogger(PROGRESS_LOGGER).info(self._status(now))

    def finish(self) -> None:
        logging.getLogger(PROGRESS_LOGGER).info(self._status(time.monotonic()).replace(" elapsed", "", 1))


class PlainProgress:
    """Progress as plain timestamped log lines: one when a task ends (each epoch, each pass) and one every
    `every` seconds within a long task (done/total, elapsed, eta and the task's latest figures: loss, img/s)."""

    def __init__(self, every: float = PROGRESS_EVERY_S) -> None:
        self.every = every

    @contextlib.contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[Any]:
        task = _PlainTask(description, total, self.every)
        yield task
        task.finish()


class _Both:
    def __init__(self, tasks: list[Any]) -> None:
        self.tasks = tasks

    def advance(self, n: float = 1, **info: Any) -> None:
        for t in self.tasks:
            t.advance(n, **info)


class TeeProgress:
    """Live bars on the terminal and plain lines in the --log-file."""

    def __init__(self, *progresses: Any) -> None:
        self.progresses = progresses

    @contextlib.contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[Any]:
        with contextlib.ExitStack() as stack:
            yield _Both([stack.enter_context(p.task(description, total)) for p in self.progresses])


def make_progress() -> Any:
    """What a command reports its progress to: live bars on a terminal (and plain lines in the --log-file when
    there is one); plain lines when stderr is a file or a pipe."""
    if not dist.is_main():
        return NULL  # under torchrun only rank 0 reports progress
    if not interactive():
        return PlainProgress()
    if _log_file is not None:
        return TeeProgress(RichProgress(), PlainProgress())
    return RichProgress()
