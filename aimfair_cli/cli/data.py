"""`aimfair data ...`: import real datasets into manifests, or render the offline benchmark.

The subcommands live in `data_real.py` (celeba, utkface) and `data_demo.py` (demo), `data_compose.py`
(compose: the training sets of the from-scratch strategies).
"""

from __future__ import annotations

import typer

from . import data_compose, data_demo, data_real
from .errors import handle_errors

app = typer.Typer(
    help="Write train/val/test manifests from a real dataset, render the offline benchmark, or compose the "
    "training sets of the from-scratch strategies.",
    no_args_is_help=True,
)
app.command("celeba")(handle_errors(data_real.celeba))
app.command("utkface")(handle_errors(data_real.utkface))
app.command("demo")(handle_errors(data_demo.demo))
app.command("compose")(handle_errors(data_compose.compose))
