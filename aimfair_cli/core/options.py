"""Every command's options, declared once.

Each command has one dataclass (`PretrainConfig`, `SynthConfig`, ...) whose fields are made with `option(...)`:
type (the annotation), default, help, bounds and choices. Everything else derives from it:

- the command-line flags and their `--help` text (`aimfair_cli/cli/options.py` generates the Typer parameters),
- the command's section of `aimfair.yaml` (`aimfair_cli/core/config.py`),
- validation, done once by `build` before any work, for flags and config-file values alike,
- the resolved `<out>.config.yaml` each stage writes (the dataclass itself).

Only the standard library is used: the stages already take dataclasses, and what is checked here (numbers, finite
floats, bounds, choices, comma lists) is a few dozen lines, not worth a required dependency such as pydantic.
Click's own parsing still turns `--epochs abc` into a usage error (exit 2) before any of this runs.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, TypeVar, Union

from .errors import UsageError

T = TypeVar("T")

MSG_NOT_INT = "{where}: expected a whole number, got {value!r}"
MSG_NOT_NUMBER = "{where}: expected a number, got {value!r}"
MSG_NOT_FINITE = "{where}: must be a finite number, got {value!r}"
MSG_NOT_TEXT = "{where}: expected text, got {value!r}"
MSG_NOT_BOOL = "{where}: expected true or false, got {value!r}"
MSG_NOT_PATH = "{where}: expected a path, got {value!r}"
MSG_TOO_SMALL = "{where}: must be at least {bound}, got {value!r}"
MSG_TOO_LARGE = "{where}: must be at most {bound}, got {value!r}"
MSG_NOT_ABOVE = "{where}: must be greater than {bound}, got {value!r}"
MSG_CHOICE = "{where}: must be one of {choices}, got {value!r}"
MSG_EMPTY = "{where}: must not be empty"
MSG_EMPTY_ITEM = "{where}: an empty item in the comma-separated list {value!r}"
MSG_REQUIRED = "{where} is required: {help}"
MSG_IS_DIR = "{where}: {value} is a folder; a file is expected"
MSG_IS_FILE = "{where}: {value} is a file; a folder is expected"


class NotOfType(UsageError):
    """A value that is not of its option's type (text for a number). On the command line this is a usage error
    (exit 2, as Click's own); in a config file it is a refused value (exit 1). See docs/exit-codes.md."""

    on_command_line = False

_INT_RE = re.compile(r"[+-]?\d+")

# Bounds shared by several commands: generous for real work, small enough that a typo (an extra few zeros) is
# refused before memory is allocated.
MAX_EPOCHS = 10_000
MAX_LR = 10.0
MAX_BATCH = 65_536
MIN_IMAGE, MAX_IMAGE = 16, 4096
MAX_WORKERS = 256
MAX_SEED = 2**32 - 1  # numpy's seed range
MAX_IMAGES = 10_000_000  # images in one set or one synth run per group

DEVICE_HELP = "auto, cpu, cuda or cuda:N. auto picks CUDA when available."
ALLOW_DUPLICATES_HELP = ("Keep manifest rows that list an image already listed (a warning, and each row counts) "
                         "instead of refusing the manifest.")
SPEED_MODES = ("auto", "on", "off")
AMP_HELP = ("Mixed precision: auto (on for CUDA: fp16 autocast with loss scaling), on (bf16 on CPU) or off.")
CHANNELS_LAST_HELP = "channels_last memory format: auto (on for CUDA), on or off."
CACHE_HELP = ("Decode the training images once into memory (the device's, on a GPU) and crop, flip and normalise "
              "them there in batches; --no-cache decodes the files with PIL every epoch. Falls back to the files "
              "when the images would take more than half the free memory.")
RESUME_HELP = ("Continue an interrupted run from <out stem>.resume.safetensors, which is written after every "
               "epoch; refused if any option but --epochs differs.")
KEEP_STATE_HELP = "Keep <out stem>.resume.safetensors when the run ends (it is removed by default)."
CROP_HELP = ("Smallest share of the image a random training crop keeps (torchvision's default 0.08; raise it for "
             "small images where a crop can cut the face out).")


@dataclass(frozen=True)
class Option:
    """What a field of an options dataclass means to users."""

    help: str
    short: tuple[str, ...] = ()  # extra flag names, e.g. ("-o",)
    min: float | None = None
    above: float | None = None  # exclusive lower bound (a learning rate must be > 0)
    max: float | None = None
    choices: tuple[str, ...] | None = None
    default_text: str | None = None  # shown as the default when the value is computed later (None = "from the data")
    required: bool = False  # None is not accepted once flags and the config file are merged
    argument: bool = False  # a positional argument rather than a --flag
    path: str | None = None  # "file" or "dir": what a Path must be (checked by the CLI where it must exist)
    exists: bool = False  # the path must exist before the command starts
    flag: str | None = None  # the flag name when it is not --<field-name-with-dashes>
    hidden: bool = False  # config file only (no flag): recipe constants users rarely change


def mode_flag(mode: str) -> bool | None:
    """An auto/on/off option as fit() takes it: None (decide from the device), True or False."""
    return {"auto": None, "on": True, "off": False}[mode]


def option(default: Any = dataclasses.MISSING, *, help: str, **spec: Any) -> Any:
    """A dataclass field carrying its `Option`. Mutable defaults (tuples are fine) need no factory here."""
    return dataclasses.field(default=default, metadata={"option": Option(help=help, **spec)})


def spec_of(field: dataclasses.Field) -> Option:
    return field.metadata.get("option") or Option(help="")


def flag_name(field: dataclasses.Field) -> str:
    return spec_of(field).flag or "--" + field.name.replace("_", "-")


def fields_of(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    """(field, resolved type) for each field of an options dataclass, in order."""
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def default_of(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    return None


def show_default(field: dataclasses.Field) -> str | None:
    """The text `--help` prints as the default (None: the field has no default to state)."""
    spec = spec_of(field)
    if spec.default_text is not None:
        return spec.default_text
    value = default_of(field)
    if value is None:
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value) if value else "none"
    return str(value)


def to_argv(cfg: Any, *, base: Path | None = None) -> list[str]:
    """The flags that give the options dataclass `cfg` on the command line: every path (relative to `base` when
    inside it) and every other option that differs from its default, in field order. `build` of these flags gives
    `cfg` back; the study pipeline runs a step's `cfg` and writes these flags to commands.sh from the same value."""
    argv: list[str] = []
    for f, _ in fields_of(type(cfg)):
        value = getattr(cfg, f.name)
        if value is None or (value == default_of(f) and not isinstance(value, Path)):
            continue
        flag = flag_name(f)
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, tuple):
            argv += [flag, ",".join(map(str, value))]
        elif isinstance(value, list):
            for item in value:
                argv += [flag, _relative(item, base)]
        else:
            argv += [flag, _relative(value, base) if isinstance(value, Path) else str(value)]
    return argv


def _relative(value: Any, base: Path | None) -> str:
    if base is not None and Path(value).is_absolute():
        try:
            return str(Path(value).relative_to(base))
        except ValueError:
            pass
    return str(value)


def is_optional(tp: Any) -> bool:
    return _union_args(tp) is not None and type(None) in typing.get_args(tp)


def base_type(tp: Any) -> Any:
    """`int | None` -> int; other types unchanged."""
    args = _union_args(tp)
    if args is None:
        return tp
    rest = [a for a in args if a is not type(None)]
    if len(rest) != 1:
        raise TypeError(f"unsupported option type {tp!r}")
    return rest[0]


def _union_args(tp: Any) -> tuple | None:
    origin = typing.get_origin(tp)
    if origin is Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        return typing.get_args(tp)
    return None


def _convert_scalar(value: Any, tp: Any, where: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise NotOfType(MSG_NOT_BOOL.format(where=where, value=value))
    if tp is int:
        if isinstance(value, bool):
            raise NotOfType(MSG_NOT_INT.format(where=where, value=value))
        if isinstance(value, int):
            return value
        if isinstance(value, str) and _INT_RE.fullmatch(value.strip()):
            return int(value)
        raise NotOfType(MSG_NOT_INT.format(where=where, value=value))
    if tp is float:
        if isinstance(value, bool):
            raise NotOfType(MSG_NOT_NUMBER.format(where=where, value=value))
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str):  # YAML reads 1e-3 (no dot) as text
            try:
                number = float(value)
            except ValueError:
                raise NotOfType(MSG_NOT_NUMBER.format(where=where, value=value)) from None
        else:
            raise NotOfType(MSG_NOT_NUMBER.format(where=where, value=value))
        if not math.isfinite(number):
            raise UsageError(MSG_NOT_FINITE.format(where=where, value=value))
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):  # topk: 55, bias: 0.1 in YAML
            return str(value)
        raise NotOfType(MSG_NOT_TEXT.format(where=where, value=value))
    if tp is Path:
        if isinstance(value, (str, os.PathLike)) and str(value):
            return Path(value)
        raise NotOfType(MSG_NOT_PATH.format(where=where, value=value))
    raise TypeError(f"unsupported option type {tp!r}")


def _check_bounds(value: Any, spec: Option, where: str) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if spec.min is not None and value < spec.min:
            raise UsageError(MSG_TOO_SMALL.format(where=where, bound=format_bound(spec.min), value=value))
        if spec.above is not None and value <= spec.above:
            raise UsageError(MSG_NOT_ABOVE.format(where=where, bound=format_bound(spec.above), value=value))
        if spec.max is not None and value > spec.max:
            raise UsageError(MSG_TOO_LARGE.format(where=where, bound=format_bound(spec.max), value=value))
    if spec.choices is not None and isinstance(value, str) and value not in spec.choices:
        raise UsageError(MSG_CHOICE.format(where=where, choices=", ".join(spec.choices), value=value))


def format_bound(x: float) -> str:
    """10000000 -> 10_000_000 (as Python reads it back), 0.5 -> 0.5."""
    if float(x).is_integer():
        return f"{int(x):_}" if abs(x) >= 10_000 else str(int(x))
    return f"{x:g}"


def convert(value: Any, tp: Any, spec: Option, where: str) -> Any:
    """`value` as type `tp`, checked against `spec`; a `UsageError` naming `where` otherwise."""
    if value is None:
        if is_optional(tp):
            return None
        raise UsageError(MSG_REQUIRED.format(where=where, help=spec.help))
    tp = base_type(tp)
    origin = typing.get_origin(tp)
    if origin in (tuple, list):
        item_type = typing.get_args(tp)[0]
        if isinstance(value, str) and origin is tuple:  # "10,20" on the command line or in YAML
            items: list[Any] = [v.strip() for v in value.split(",")] if value.strip() else []
            if any(v == "" for v in items):
                raise UsageError(MSG_EMPTY_ITEM.format(where=where, value=value))
        elif isinstance(value, str):
            items = [value]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            items = [value]
        converted = [convert(v, item_type, spec, where) for v in items]
        return tuple(converted) if origin is tuple else converted
    if tp is str and isinstance(value, bool) and spec.choices and {"on", "off"} <= set(spec.choices):
        value = "on" if value else "off"  # YAML 1.1 reads `amp: on` as true
    try:
        converted = _convert_scalar(value, tp, where)
    except NotOfType as exc:
        exc.on_command_line = where.startswith("-")
        raise
    _check_bounds(converted, spec, where)
    if tp is Path and spec.path == "file" and converted.is_dir():
        raise UsageError(MSG_IS_DIR.format(where=where, value=converted))
    if tp is Path and spec.path == "dir" and converted.is_file():
        raise UsageError(MSG_IS_FILE.format(where=where, value=converted))
    return converted


def build(cls: type[T], values: Mapping[str, Any], where: Callable[[str], str] | None = None) -> T:
    """Make the options dataclass `cls` from `values` (missing keys take their defaults), converting and checking
    every value. `where(name)` names a value's origin in messages (a flag, or a key of a config file)."""
    where = where or (lambda name: "--" + name.replace("_", "-"))
    kwargs = {}
    for f, tp in fields_of(cls):
        spec = spec_of(f)
        if f.name in values:
            value = values[f.name]
        elif f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            value = default_of(f)
        else:
            value = None
        label = where(f.name) if f.name in values else flag_name(f)
        if value is None and spec.required:
            raise UsageError(MSG_REQUIRED.format(where=flag_name(f), help=spec.help))
        kwargs[f.name] = convert(value, tp, spec, label)
    return cls(**kwargs)


def check(cfg: T) -> T:
    """Validate an options dataclass made in code (a library caller, the demo) the same way as one from flags."""
    return build(type(cfg), {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)})  # type: ignore[arg-type]


def pass_through(cls: type, *, only: str) -> list[tuple[str, Any, dataclasses.Field]]:
    """`cls`'s fields as fields of a command that hands them on to a component (a generator's options to
    `synth`): typed Optional with default None, so a value is passed on only when given and the component
    applies its own default, which `--help` still shows; `only` ends each help text ("--generator diffusers
    only."). For `dataclasses.make_dataclass`."""
    out = []
    for f, tp in fields_of(cls):
        spec = spec_of(f)
        shown = spec.default_text or show_default(f)
        new = dataclasses.replace(spec, help=f"{spec.help} {only}".strip(), default_text=shown)
        out.append((f.name, Optional[tp], dataclasses.field(default=None, metadata={"option": new})))
    return out


def pass_through_merged(components: "Sequence[tuple[str, type]]", *, only: str) -> list[tuple[str, Any, dataclasses.Field]]:
    """pass_through for several components (the LLM prompt writers) whose options may share names: one field
    per name, its help and default listed per component where they differ ("openai: the model name;
    transformers: ..."), bounds from the first component that declares it."""
    merged: dict[str, tuple[Any, Option, dict[str, list[str]], dict[str, list[str]]]] = {}
    for label, cls in components:
        for f, tp in fields_of(cls):
            spec = spec_of(f)
            shown = spec.default_text or show_default(f)
            _, _, helps, defaults = merged.setdefault(f.name, (tp, spec, {}, {}))
            helps.setdefault(spec.help.rstrip("."), []).append(label)
            if shown is not None:
                defaults.setdefault(shown, []).append(label)
    out = []
    for name, (tp, spec, helps, defaults) in merged.items():
        text = "; ".join(f"{', '.join(labels)}: {h}" for h, labels in helps.items())
        shown = next(iter(defaults)) if len(defaults) == 1 else ", ".join(
            f"{', '.join(labels)} {d}" for d, labels in defaults.items())
        new = dataclasses.replace(spec, help=f"{text}. {only}".strip(), default_text=shown or None)
        out.append((name, Optional[tp], dataclasses.field(default=None, metadata={"option": new})))
    return out
