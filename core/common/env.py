"""Process environment: offline and telemetry switches, the local state folder, and where the checkout is (its
root and the compiled pipelines in it)."""

from __future__ import annotations

import os
from pathlib import Path

from core.common.constants import DEFAULT_HOME, ENV_HOME, OFFLINE_ENVIRONMENT

REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout (or the image's /app): configs/, pipelines/
COMPILED_PIPELINES_DIR = REPO_ROOT / "pipelines" / "compiled"


def apply_offline_environment() -> None:
    """Turns off telemetry and hub downloads for this process and the processes it starts.

    Values already set by the caller win, so that an operator can still opt in explicitly.
    """
    for name, value in OFFLINE_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def tns_home() -> Path:
    """Returns the folder that holds all local state (`$TNS_HOME`, default `.tns`), as an absolute path."""
    return Path(os.environ.get(ENV_HOME, DEFAULT_HOME)).expanduser().resolve()


def compiled_pipeline(name: str, folder: Path = COMPILED_PIPELINES_DIR) -> Path:
    """The compiled YAML of pipeline `name` (`training`, `monitoring`) in `folder`."""
    return folder / f"{name}.yaml"
