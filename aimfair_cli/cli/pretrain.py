"""`aimfair pretrain` (not built yet)."""

from __future__ import annotations

from ..errors import NotBuiltError


def pretrain() -> None:
    """Not built yet: exits non-zero."""
    raise NotBuiltError("'aimfair pretrain' is not built yet")
