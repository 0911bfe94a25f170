"""`aimfair data demo` (not built yet)."""

from __future__ import annotations

from ..errors import NotBuiltError


def demo() -> None:
    """Not built yet: exits non-zero."""
    raise NotBuiltError("'aimfair data demo' is not built yet")
