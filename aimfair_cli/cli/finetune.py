"""`aimfair finetune` (not built yet)."""

from __future__ import annotations

from ..errors import NotBuiltError


def finetune() -> None:
    """Not built yet: exits non-zero."""
    raise NotBuiltError("'aimfair finetune' is not built yet")
