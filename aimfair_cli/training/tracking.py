"""Per-epoch scalars for TensorBoard (`--tensorboard DIR`), an optional extra: `pip install 'aimfair[track]'`.

The same figures as `<out>.history.csv` (loss, train acc, val acc, val WST/EO where the val set has group labels,
lr, img/s, seconds), one scalar series each under `<run>/...`, step = epoch. Only rank 0 writes.
"""

from __future__ import annotations

import importlib.util
import math
import os
from typing import Any

from ..core import dist
from ..core.errors import UsageError

MSG_NO_TENSORBOARD = ("--tensorboard needs the tensorboard package, which is not installed: "
                      "pip install 'aimfair[track]' (or pip install tensorboard)")


class TensorboardLog:
    """Call with each epoch's history row; close() at the end."""

    def __init__(self, logdir: str | os.PathLike, run: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.run = run
        self.writer = SummaryWriter(log_dir=os.fspath(logdir)) if dist.is_main() else None

    def __call__(self, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"{self.run}/{key}", value, global_step=int(row["epoch"]))
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def check_tensorboard(logdir: str | os.PathLike | None) -> None:
    """Before any work: --tensorboard given without the package is a one-line error."""
    if logdir is not None and importlib.util.find_spec("tensorboard") is None:
        raise UsageError(MSG_NO_TENSORBOARD)


def open_tensorboard(logdir: str | os.PathLike | None, run: str) -> TensorboardLog | None:
    if logdir is None:
        return None
    check_tensorboard(logdir)
    return TensorboardLog(logdir, run)
