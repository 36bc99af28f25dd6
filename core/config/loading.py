"""Loading a run configuration the way every caller does: a YAML file (or the defaults), a policy list, then
`--set KEY=VALUE` overrides; and the configuration a pipeline step is handed as JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.config.fields import ConfigError
from core.config.run import RunConfig


def parse_value(text: str) -> Any:
    """A `--set` value as YAML, except that `1e-12` is a number (YAML 1.1 would read a string)."""
    import re

    import yaml

    value = yaml.safe_load(text)
    if isinstance(value, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", value.strip()):
        return float(value)
    return value


def split_override(item: str, expected: str = "KEY=VALUE") -> tuple[str, str]:
    """One `--set KEY=VALUE` item as (key, value text); `parse_value` reads the text.

    Raises:
        ConfigError: `--set expects <expected>, got <item>` when the item has no `=`.
    """
    key, sep, value = item.partition("=")
    if not sep:
        raise ConfigError(f"--set expects {expected}, got {item!r}")
    return key.strip(), value


def load_run_config(
    config_file: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), policies: str = ""
) -> RunConfig:
    """The run configuration every caller builds the same way: the YAML file (or the defaults), then the
    comma-separated `policies`, then `--set KEY=VALUE` overrides.

    Raises:
        ConfigError: A missing file, an override that is not KEY=VALUE, an unknown key or a bad value.
    """
    if config_file is not None and not Path(config_file).is_file():
        raise ConfigError(f"configuration file {config_file} does not exist")
    config = RunConfig.from_yaml(config_file) if config_file else RunConfig()
    changes: dict[str, Any] = {}
    for item in overrides:
        key, text = split_override(item)
        changes[key] = parse_value(text)
    if policies.strip():
        changes["policies"] = [p.strip() for p in policies.split(",") if p.strip()]
    return config.with_overrides(**changes) if changes else config


def resolve_config(config_json: str, policies: list[str] | None = None) -> RunConfig:
    """The run configuration a pipeline step gets (the pipeline's `config_json`), with a `policies` override
    applied when it is non-empty."""
    config = RunConfig.from_json(config_json)
    return config.with_overrides(policies=list(policies)) if policies else config
