"""Helpers for end-to-end runs of `tns run training` as a real subprocess (KFP local runner, GX, MLflow)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class CliResult:
    returncode: int
    output: str


@pytest.fixture
def tns_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    (home / "tmp").mkdir(parents=True)
    return home


@pytest.fixture
def run_tns(tns_home: Path):
    """Runs `tns ARGS...` in a subprocess with its own state folder; returns exit code and combined output."""

    def run(*args: str, timeout: int = 900, extra_env: dict[str, str] | None = None) -> CliResult:
        env = {**os.environ, "TNS_HOME": str(tns_home), "TMPDIR": str(tns_home / "tmp"), **(extra_env or {})}
        env.pop("MLFLOW_TRACKING_URI", None)
        done = subprocess.run(
            [sys.executable, "-m", "tns", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return CliResult(done.returncode, done.stdout + done.stderr)

    return run
