"""`aimfair`: the Typer application. Registers one module per command; nothing heavy is imported here."""

from __future__ import annotations

import typer

from .. import __version__
from . import data, demo, evaluate, finetune, mask, pretrain, prompts, study, synth
from .errors import handle_errors

app = typer.Typer(
    name="aimfair",
    help=(
        "Repair an unfair image classifier with balanced synthetic data and selective fine-tuning (AIM-Fair).\n\n"
        "Stages talk through files: data -> prompts -> synth -> pretrain -> mask -> finetune -> eval. "
        "`aimfair demo` runs them all on the built-in offline benchmark; `aimfair study` runs the paper's "
        "experiments on a run folder."
    ),
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion [bash|zsh|fish|powershell]
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"aimfair {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
) -> None:
    pass


app.add_typer(data.app, name="data")
for _name, _fn in (
    ("prompts", prompts.prompts),
    ("synth", synth.synth),
    ("pretrain", pretrain.pretrain),
    ("mask", mask.mask),
    ("finetune", finetune.finetune),
    ("eval", evaluate.evaluate),
    ("demo", demo.demo),
    ("study", study.study),
):
    app.command(_name)(handle_errors(_fn))


def main() -> None:
    import sys

    # `torchrun ... -m aimfair_cli -- synth --n 90`: the `--` keeps torchrun's parser off aimfair's options;
    # some Python versions pass it on to the script, where it would end aimfair's own option parsing
    if sys.argv[1:2] == ["--"]:
        del sys.argv[1]
    app(prog_name="aimfair")
