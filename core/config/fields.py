"""Typed configuration fields: the error every configuration raises, and how a YAML or `--set` value is checked
against a dataclass field and a nested mapping is built into nested dataclasses.

Used by every configuration of `core.config` (run, drift, retrain rules), so all report a bad value the same way.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type or out of range."""


def known_fields(
    cls: type, data: dict[str, Any], what: str, prefix: str = "", list_known: bool = True
) -> dict:
    """The fields of the dataclass `cls` by name, after checking that `data` names no other key.

    Raises:
        ConfigError: `unknown <what> key(s) [...]` (each with `prefix`), and the known keys with `list_known`.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted((key for key in data if key not in fields), key=str)  # YAML keys need not be strings
    if unknown:
        names = [f"{prefix}{key}" for key in unknown] if prefix else unknown
        known = f"; known: {sorted(fields)}" if list_known else ""
        raise ConfigError(f"unknown {what} key(s) {names}{known}")
    return fields


def build_dataclass(cls: type, data: dict[str, Any], prefix: str) -> Any:
    """An instance of the dataclass `cls` from a (possibly partial) mapping; nested dataclass fields are built
    from nested mappings, and `prefix` names the section in errors.

    Raises:
        ConfigError: An unknown key, a section that is not a mapping or a value of the wrong type.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {type(data).__name__}")
    fields = known_fields(cls, data, "configuration", prefix, list_known=False)
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        default = (
            fields[name].default_factory()
            if fields[name].default_factory is not dataclasses.MISSING
            else None
        )
        if dataclasses.is_dataclass(default):
            kwargs[name] = build_dataclass(type(default), value, f"{prefix}{name}.")
        elif isinstance(default, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{name} must be a mapping with a 'default' key, got {value!r}")
            kwargs[name] = {str(k): v for k, v in value.items()}
        else:
            kwargs[name] = coerce_field(f"{prefix}{name}", fields[name], value)
    return cls(**kwargs)


def coerce_field(name: str, spec: dataclasses.Field, value: Any) -> Any:
    """`value` checked (and converted where safe) against the type of a dataclass field's default.

    Raises:
        ConfigError: Naming the key `name` and the expected type.
    """
    default = spec.default
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return value
    if spec.default_factory is not dataclasses.MISSING and isinstance(spec.default_factory(), list):
        default_list = spec.default_factory()
        if default_list and all(isinstance(v, int) for v in default_list):  # an empty default: strings
            if isinstance(value, str):
                value = [_parse_int(v, name) for v in value.split(",") if v.strip()]
            if not isinstance(value, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in value
            ):
                raise ConfigError(f"{name} must be a list of integers, got {value!r}")
            return list(value)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name} must be a list of strings, got {value!r}")
        return list(value)
    return value


def _parse_int(text: str, name: str) -> int:
    """Parses one integer of a comma-separated list given on the command line."""
    try:
        return int(text.strip())
    except ValueError:
        raise ConfigError(f"{name} must be a list of integers, got {text!r}") from None


def read_yaml_file(path: str | Path, what: str) -> Any:
    """The parsed content of a YAML rules file (None for an empty file).

    Raises:
        ConfigError: `<what> file PATH does not exist`, or is not valid YAML.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file {path} does not exist")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"{what} file {path} is not valid YAML: {error}") from None
