"""Compiling every pipeline to `pipelines/compiled/*.yaml`, and checking committed files are current."""

from __future__ import annotations

import difflib
import tempfile
from collections.abc import Callable
from pathlib import Path

from core.common.env import COMPILED_PIPELINES_DIR, compiled_pipeline


def pipelines() -> dict[str, Callable]:
    """Pipeline functions by output file stem."""
    from pipelines.monitoring import monitoring_pipeline
    from pipelines.training import training_pipeline

    return {"training": training_pipeline, "monitoring": monitoring_pipeline}


def compile_pipeline(function: Callable, path: Path) -> None:
    from kfp import compiler

    compiler.Compiler().compile(function, str(path))


def compile_all(out_dir: Path = COMPILED_PIPELINES_DIR) -> list[Path]:
    """Writes every pipeline's YAML; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, function in pipelines().items():
        path = compiled_pipeline(stem, out_dir)
        compile_pipeline(function, path)
        written.append(path)
    return written


def check_all(out_dir: Path = COMPILED_PIPELINES_DIR) -> list[str]:
    """Compiles into a temporary folder and returns a diff summary per out-of-date file (empty: current)."""
    problems = []
    with tempfile.TemporaryDirectory() as folder:
        for fresh in compile_all(Path(folder)):
            committed = out_dir / fresh.name
            if not committed.is_file():
                problems.append(f"{committed} is missing: run `tns compile`")
                continue
            old, new = committed.read_text(encoding="utf-8"), fresh.read_text(encoding="utf-8")
            if old != new:
                diff = difflib.unified_diff(
                    old.splitlines(), new.splitlines(), str(committed), "fresh", lineterm="", n=1
                )
                problems.append(
                    f"{committed} is out of date: run `tns compile`\n" + "\n".join(list(diff)[:40])
                )
    return problems
