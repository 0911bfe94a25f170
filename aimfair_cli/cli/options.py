"""Typer parameters generated from each command's options dataclass (see `aimfair_cli/core/options.py`).

`command(section, Config)` turns `fn(cfg, *, json_out)` into a Typer command: one `--flag` per field with the
field's help and `[default: ...]` text, plus `--json`, `--config`, `--verbose` and `--log-file`. Every flag defaults to None so
that "not given" can be told from a value: explicit flags win over the `section` of the run folder's
`aimfair.yaml` (or `--config`), which wins over the dataclass defaults. Validation is `options.build`'s, once.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from ..core import config as config_mod
from ..core.errors import OutputError
from ..core.fsio import refuse_common, refuse_inputs
from ..core.options import Option, base_type, fields_of, flag_name, format_bound, show_default, spec_of
from . import console

_MANIFESTS_IN_FOLDERS = ("metadata.jsonl", "train.csv", "val.csv", "test.csv")  # what a folder option is read for

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as one JSON object on stdout.")]
ConfigOpt = Annotated[
    Optional[Path],
    typer.Option("--config", help="YAML config with one section per command. [default: ./aimfair.yaml if present]",
                 dir_okay=False, metavar="FILE"),
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages on stderr.")]
LogFileOpt = Annotated[
    Optional[Path],
    typer.Option("--log-file", help="Also append the log and progress lines, timestamped, to this file.",
                 dir_okay=False, metavar="FILE"),
]

_COMMON = ("json_out", "config_file", "verbose", "log_file")
_METAVARS = {int: "INTEGER", float: "FLOAT", str: "TEXT", Path: "PATH"}


def help_text(spec: Option, default: str | None) -> str:
    """The field's help, its bounds and its default, as `--help` shows them."""
    text = spec.help
    low = f"{format_bound(spec.min)} <= " if spec.min is not None else (
        f"{format_bound(spec.above)} < " if spec.above is not None else "")
    high = f" <= {format_bound(spec.max)}" if spec.max is not None else ""
    if low or high:
        text += f" ({low}x{high})"
    return text + (f" [default: {default}]" if default is not None else "")


def _metavar(tp: Any, spec: Option) -> str:
    if spec.choices:
        return "[" + "|".join(spec.choices) + "]"
    origin = typing.get_origin(tp)
    if origin is tuple:
        item = typing.get_args(tp)[0]
        return f"{_METAVARS.get(item, 'TEXT')},..."
    if tp is Path:
        return {"file": "FILE", "dir": "DIR"}.get(spec.path or "", "PATH")
    return _METAVARS.get(tp, "TEXT")


def _parameter(field: dataclasses.Field, tp: Any) -> inspect.Parameter:
    spec = spec_of(field)
    inner = base_type(tp)
    origin = typing.get_origin(inner)
    help_ = help_text(spec, show_default(field))
    if spec.argument:
        info = typer.Argument(help=help_, metavar=field.name.upper(), show_default=False)
        return inspect.Parameter(field.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Annotated[inner, info])
    if inner is bool:
        decls = [f"{flag_name(field)}/--no-{flag_name(field)[2:]}", *spec.short]
        cli_type: Any = Optional[bool]
    elif origin is list:
        decls, cli_type = [flag_name(field), *spec.short], Optional[list[typing.get_args(inner)[0]]]
    elif origin is tuple:
        decls, cli_type = [flag_name(field), *spec.short], Optional[str]  # comma-separated, split by options.convert
    else:
        decls, cli_type = [flag_name(field), *spec.short], Optional[inner]
    extra: dict[str, Any] = {}  # a folder given for a file (or the reverse) is options.build's: exit 1, one line
    info = typer.Option(*decls, help=help_, show_default=False, metavar=None if inner is bool else _metavar(inner, spec),
                        hidden=spec.hidden, **extra)
    return inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[cli_type, info], default=None)


def _check_log_file(log_file: Path, cfg: Any, config_file: Path | None) -> None:
    """--log-file is none of the paths the command is given (nor the config file, nor the manifest inside a
    folder it reads): compared by identity, so a symlink, a hard link or another spelling counts."""
    paths: dict[str, Any] = {"--config": config_file or (Path(config_mod.CONFIG_FILE) if Path(config_mod.CONFIG_FILE).is_file() else None)}
    for f, _ in fields_of(type(cfg)):
        value = getattr(cfg, f.name)
        items = value if isinstance(value, list) else [value]
        items = [Path(v) for v in items if isinstance(v, Path) or (isinstance(v, str) and Path(v).exists())]
        items += [v / name for v in items if v.is_dir() for name in _MANIFESTS_IN_FOLDERS]
        paths[flag_name(f)] = items
    try:
        refuse_inputs({"--log-file": log_file}, paths)
    except OutputError as exc:
        refuse_common(exc)
        raise


def command(section: str, cls: type, *, json: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate `fn(cfg, *, json_out)`; the result is a function whose signature Typer reads as the flags."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        params = [_parameter(f, tp) for f, tp in fields_of(cls)]
        params.sort(key=lambda p: p.kind)  # positional arguments first
        common = [
            inspect.Parameter("json_out", inspect.Parameter.KEYWORD_ONLY, annotation=JsonOpt, default=False),
            inspect.Parameter("config_file", inspect.Parameter.KEYWORD_ONLY, annotation=ConfigOpt, default=None),
            inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, annotation=VerboseOpt, default=False),
            inspect.Parameter("log_file", inspect.Parameter.KEYWORD_ONLY, annotation=LogFileOpt, default=None),
        ]
        if not json:
            common = common[1:]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = inspect.Signature(params + common).bind(*args, **kwargs)
            values = dict(bound.arguments)
            config_file, verbose = values.pop("config_file", None), values.pop("verbose", False)
            json_out, log_file = values.pop("json_out", False), values.pop("log_file", None)
            console.setup_logging(verbose, None if log_file is None else str(log_file))
            cfg = config_mod.resolve(section, cls, values, config_file=config_file)
            if log_file is not None:
                _check_log_file(log_file, cfg, config_file)
            return fn(cfg, json_out=json_out) if json else fn(cfg)

        wrapper.__signature__ = inspect.Signature(params + common)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params + common}
        del wrapper.__wrapped__  # type: ignore[attr-defined]  # Typer must read the signature above, not fn's
        wrapper.options_class = cls  # type: ignore[attr-defined]
        wrapper.section = section  # type: ignore[attr-defined]
        return wrapper

    return decorate
