"""`aimfair data celeba` and `aimfair data utkface` (not built yet)."""

from __future__ import annotations

from ..errors import NotBuiltError


def celeba() -> None:
    """Not built yet: exits non-zero."""
    raise NotBuiltError("'aimfair data celeba' is not built yet")


def utkface() -> None:
    """Not built yet: exits non-zero."""
    raise NotBuiltError("'aimfair data utkface' is not built yet")
