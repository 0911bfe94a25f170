"""`aimfair data ...`: import real datasets into manifests, or render the offline benchmark.

The subcommands live in `data_real.py` (celeba, utkface) and `data_demo.py` (demo).
"""

from __future__ import annotations

import typer

from . import data_demo, data_real
from .errors import handle_errors

app = typer.Typer(
    help="Write train/val/test manifests from a real dataset or render the offline benchmark.",
    no_args_is_help=True,
)
app.command("celeba")(handle_errors(data_real.celeba))
app.command("utkface")(handle_errors(data_real.utkface))
app.command("demo")(handle_errors(data_demo.demo))
