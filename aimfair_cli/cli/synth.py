"""`aimfair synth` (not built yet)."""

from __future__ import annotations

from ..errors import NotBuiltError


def synth() -> None:
    """Not built yet: exits non-zero."""
    raise NotBuiltError("'aimfair synth' is not built yet")
