"""`aimfair data ...`: import real datasets into manifests, or render the offline benchmark."""

from __future__ import annotations

import typer

from ..errors import NotBuiltError
from .errors import handle_errors

app = typer.Typer(help="Write train/val/test manifests from a real dataset or the offline benchmark.", no_args_is_help=True)


@app.command("celeba")
@handle_errors
def celeba() -> None:
    """Not built yet: exits non-zero."""
    raise NotBuiltError("'aimfair data celeba' is not built yet")
