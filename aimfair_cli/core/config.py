"""Option resolution: explicit flags > run-folder config file > each component's own defaults.

A run folder may hold `aimfair.yaml` with one section per command, e.g.

    synth: {generator: procedural, n: 2000}
    pretrain: {epochs: 3, image_size: 64}

Keys are option names (dashes or underscores). Unknown sections or keys are errors, so a typo never
silently falls back to a default. Every stage writes the resolved config beside its output.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping, TypeVar

from .errors import AimfairError, ConfigError
from .fsio import MSG_NOT_UTF8, atomic_write_text

T = TypeVar("T")

CONFIG_FILE = "aimfair.yaml"
# One section per command (its options dataclass); tests check this matches the commands of the CLI.
SECTIONS = ("data_celeba", "data_utkface", "data_demo", "data_compose", "prompts", "synth", "pretrain", "mask",
            "finetune", "eval", "demo", "study")
# A real config file uses no YAML aliases; a few are harmless, thousands are a "billion laughs" bomb.
MAX_ALIASES = 20

MSG_BAD_FILE = "{path}: not a YAML mapping of command sections"
MSG_UNKNOWN_SECTION = "{path}: unknown section '{section}' (known: {known})"
MSG_UNKNOWN_KEY = "{path}: unknown key '{key}' in section '{section}' (known: {known})"
MSG_NOT_FOUND = "config file not found: {path}"
MSG_BAD_YAML = "{path}: invalid YAML ({detail})"
MSG_ALIASES = "{path}: more than {limit} YAML aliases (refusing a possible alias bomb)"
MSG_UNREADABLE = "{path}: cannot read ({reason})"


def _norm(key: str) -> str:
    return key.replace("-", "_")


def _limited_loader(limit: int):
    import yaml

    class Loader(yaml.SafeLoader):
        """SafeLoader that counts alias uses and stops past `limit`, before the aliases are expanded by callers."""

        aliases = 0

        def compose_node(self, parent, index):  # type: ignore[override]
            if self.check_event(yaml.AliasEvent):
                self.aliases += 1
                if self.aliases > limit:
                    raise _TooManyAliases()
            return super().compose_node(parent, index)

    return Loader


class _TooManyAliases(Exception):
    pass


def read_yaml(path: str | os.PathLike, *, error: type[AimfairError] = ConfigError, max_aliases: int = MAX_ALIASES) -> Any:
    """Parse a YAML file safely: no Python objects, at most `max_aliases` aliases, and every problem (missing,
    unreadable, not UTF-8, not YAML) as one `error` line naming the file."""
    import yaml

    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise error(MSG_NOT_FOUND.format(path=path)) from None
    except OSError as exc:
        raise error(MSG_UNREADABLE.format(path=path, reason=exc.strerror or exc.__class__.__name__)) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise error(MSG_NOT_UTF8.format(path=path)) from None
    try:
        return yaml.load(text, Loader=_limited_loader(max_aliases))  # noqa: S506 - a SafeLoader subclass
    except _TooManyAliases:
        raise error(MSG_ALIASES.format(path=path, limit=max_aliases)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        detail = f"{getattr(exc, 'problem', None) or exc.__class__.__name__}"
        if mark is not None:
            detail += f" at line {mark.line + 1}, column {mark.column + 1}"
        raise error(MSG_BAD_YAML.format(path=path, detail=detail)) from None
    except RecursionError:
        raise error(MSG_BAD_YAML.format(path=path, detail="nested too deeply")) from None


def load_config_file(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The sections of a config file, keys normalised to underscores; unknown sections are errors."""
    path = Path(path)
    data = read_yaml(path) or {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) or v is None for v in data.values()):
        raise ConfigError(MSG_BAD_FILE.format(path=path))
    out = {}
    for section, values in data.items():
        if section not in SECTIONS:
            raise ConfigError(MSG_UNKNOWN_SECTION.format(path=path, section=section, known=", ".join(SECTIONS)))
        if not all(isinstance(k, str) for k in (values or {})):
            raise ConfigError(MSG_BAD_FILE.format(path=path))
        out[section] = {_norm(k): v for k, v in (values or {}).items()}
    return out


def resolve(
    section: str,
    cls: type[T],
    explicit: Mapping[str, Any],
    *,
    run_dir: str | os.PathLike | None = None,
    config_file: str | os.PathLike | None = None,
) -> T:
    """The options of one command as its dataclass `cls`: explicit flags > the config file's `section` > defaults.

    `explicit` holds the values the user passed (None = not given). The config file is `config_file` if given,
    else `<run_dir or cwd>/aimfair.yaml` if it exists. Every value is converted and checked by `options.build`,
    and its origin (flag or file key) is named in the error when it is refused.
    """
    from .options import build, flag_name

    flags = {f.name: flag_name(f) for f in dataclasses.fields(cls)}
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    path = Path(config_file) if config_file else Path(run_dir or "") / CONFIG_FILE
    if config_file or path.is_file():
        for key, value in load_config_file(path).get(section, {}).items():
            if key not in flags:
                raise ConfigError(MSG_UNKNOWN_KEY.format(path=path, key=key, section=section, known=", ".join(flags)))
            if value is not None:
                merged[key], origin[key] = value, f"{path}: {section}.{key}"
    for key, value in explicit.items():
        if value is not None:
            merged[_norm(key)], origin[_norm(key)] = value, flags.get(_norm(key), key)
    return build(cls, merged, where=lambda name: origin.get(name, flags[name]))


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def config_path_for(output: str | os.PathLike, stage: str) -> Path:
    """Where a stage writes its resolved config: `<file stem>.config.yaml` beside a file output,
    `<dir>/<stage>.config.yaml` inside a directory output."""
    output = Path(output)
    if output.suffix:
        return output.with_name(output.stem + ".config.yaml")
    return output / f"{stage}.config.yaml"


def write_resolved_config(output: str | os.PathLike, stage: str, config: Any) -> Path:
    import yaml

    from .redact import redact_values

    path = config_path_for(output, stage)
    text = yaml.safe_dump({stage: redact_values(_jsonable(config))}, sort_keys=False)
    atomic_write_text(path, text)
    return path


def to_json(config: Any) -> str:
    return json.dumps(_jsonable(config), sort_keys=True)
