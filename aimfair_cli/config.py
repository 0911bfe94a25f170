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
from typing import Any, Mapping

from .errors import ConfigError
from .fsio import atomic_write_text, read_utf8

CONFIG_FILE = "aimfair.yaml"

MSG_BAD_FILE = "{path}: not a YAML mapping of command sections"
MSG_UNKNOWN_SECTION = "{path}: unknown section '{section}' (known: {known})"
MSG_UNKNOWN_KEY = "{path}: unknown key '{key}' in section '{section}' (known: {known})"


def _norm(key: str) -> str:
    return key.replace("-", "_")


def load_config_file(path: str | os.PathLike, known_sections: set[str] | None = None) -> dict[str, dict[str, Any]]:
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(read_utf8(path, ConfigError)) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc.__class__.__name__})") from exc
    if not isinstance(data, dict) or not all(isinstance(v, dict) or v is None for v in data.values()):
        raise ConfigError(MSG_BAD_FILE.format(path=path))
    out = {}
    for section, values in data.items():
        if known_sections is not None and section not in known_sections:
            raise ConfigError(
                MSG_UNKNOWN_SECTION.format(path=path, section=section, known=", ".join(sorted(known_sections)))
            )
        out[section] = {_norm(k): v for k, v in (values or {}).items()}
    return out


def resolve(
    section: str,
    explicit: Mapping[str, Any],
    defaults: Mapping[str, Any],
    *,
    run_dir: str | os.PathLike | None = None,
    config_file: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Merge options for one command.

    `explicit` holds the values the user passed (None = not given). `defaults` names every key the command
    accepts. The config file is `config_file` if given, else `<run_dir or cwd>/aimfair.yaml` if it exists.
    """
    merged = dict(defaults)
    path = Path(config_file) if config_file else Path(run_dir or Path.cwd()) / CONFIG_FILE
    if path.is_file():
        section_values = load_config_file(path).get(section, {})
        for key, value in section_values.items():
            if key not in defaults:
                raise ConfigError(
                    MSG_UNKNOWN_KEY.format(path=path, key=key, section=section, known=", ".join(sorted(defaults)))
                )
            merged[key] = value
    elif config_file:
        raise ConfigError(f"config file not found: {path}")
    for key, value in explicit.items():
        if value is not None:
            merged[_norm(key)] = value
    return merged


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

    path = config_path_for(output, stage)
    text = yaml.safe_dump({stage: _jsonable(config)}, sort_keys=False)
    atomic_write_text(path, text)
    return path


def to_json(config: Any) -> str:
    return json.dumps(_jsonable(config), sort_keys=True)


def is_done(output: str | os.PathLike, stage: str, config: Any) -> bool:
    """True when `output` exists and was made with exactly `config` (its saved resolved config matches), so a
    rerun can reuse it; any change of options makes the stage run again."""
    import yaml

    output, saved = Path(output), config_path_for(output, stage)
    if not output.exists() or not saved.is_file():
        return False
    try:
        previous = yaml.safe_load(saved.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        return False
    current = yaml.safe_load(yaml.safe_dump({stage: _jsonable(config)}, sort_keys=False))
    return previous == current


def build(cls: type, values: Mapping[str, Any]) -> Any:
    """Make the config dataclass `cls` from resolved values; strings from a YAML file become `Path` where the
    field is a path."""
    fields = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    return cls(**{k: Path(v) if isinstance(v, str) and "Path" in fields.get(k, "") else v for k, v in values.items()})
