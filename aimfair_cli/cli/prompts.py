"""`aimfair prompts` (not built yet)."""

from __future__ import annotations

from ..errors import NotBuiltError


def prompts() -> None:
    """Not built yet: exits non-zero."""
    raise NotBuiltError("'aimfair prompts' is not built yet")
