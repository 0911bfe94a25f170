"""`aimfair eval` (not built yet)."""

from __future__ import annotations

from ..errors import NotBuiltError


def evaluate() -> None:
    """Not built yet: exits non-zero."""
    raise NotBuiltError("'aimfair eval' is not built yet")
