"""Progress reporting without printing: the library calls a `Progress`, the CLI supplies a rich one.

    with progress.task("pretrain epoch 1", total=len(loader)) as task:
        for batch in loader:
            ...
            task.advance(1, loss=f"{loss:.3f}")
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Protocol


class Task(Protocol):
    def advance(self, n: float = 1, **info: Any) -> None: ...


class Progress(Protocol):
    def task(self, description: str, total: float | None = None) -> contextlib.AbstractContextManager[Task]: ...


class _NullTask:
    def advance(self, n: float = 1, **info: Any) -> None:
        pass


class NullProgress:
    """The default: reports nothing."""

    @contextlib.contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[Task]:
        yield _NullTask()


NULL = NullProgress()
