"""The layering contract (`[tool.importlinter]` in pyproject.toml): tns > pipelines > components > monitoring >
serving > core, imports inside functions included. It holds for the tree, and it fails when a lower layer imports a
higher one (checked on a copy of the tree with one such import added)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "serving", "monitoring", "components", "pipelines", "tns")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """The Python files of every layered package and the configuration, copied."""
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "compiled")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def test_the_tree_keeps_the_layers(tree: Path):
    done = _lint(tree)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 kept, 0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "imported", "message"),
    [
        ("core/common/env.py", "serving.client", "core is not allowed to import serving"),
        ("serving/client.py", "monitoring.log_writer", "serving is not allowed to import monitoring"),
        ("monitoring/trigger.py", "pipelines.local", "monitoring is not allowed to import pipelines"),
        ("pipelines/local.py", "tns.common", "pipelines is not allowed to import tns"),
    ],
)
def test_an_upward_import_inside_a_function_breaks_the_contract(
    tree: Path, module: str, imported: str, message: str
):
    with (tree / module).open("a", encoding="utf-8") as handle:
        handle.write(f"\n\ndef _upward():\n    import {imported}  # noqa: F401\n")
    done = _lint(tree)
    assert done.returncode == 1 and message in done.stdout, done.stdout + done.stderr
