"""`aimfair mask` (not built yet)."""

from __future__ import annotations

from ..errors import NotBuiltError


def mask() -> None:
    """Not built yet: exits non-zero."""
    raise NotBuiltError("'aimfair mask' is not built yet")
