"""The `tns` command line, in process: exit codes and what the data and compile commands write."""

from __future__ import annotations

import json
from pathlib import Path

from components.common.constants import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from pipelines.cli import main


def test_data_generate_writes_requested_rows(tmp_path: Path, capsys):
    assert main(["data", "generate", "--out", str(tmp_path / "d"), "--rows", "12", "--seed", "4"]) == EXIT_OK
    rows = [json.loads(line) for line in (tmp_path / "d" / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and "12 rows, seed 4" in capsys.readouterr().out
    assert all((tmp_path / "d" / r["image"]).is_file() for r in rows if r["image"])


def test_usage_errors_and_help(tmp_path: Path):
    assert main(["data", "generate", "--out", str(tmp_path), "--rows", "0"]) == EXIT_USAGE
    assert main(["data", "generate"]) == EXIT_USAGE
    assert main(["--help"]) == EXIT_OK
    assert main(["run", "training", "--reason", "no force"]) == EXIT_USAGE


def test_compile_check_fails_on_stale_folder_and_passes_after_compile(tmp_path: Path):
    assert main(["compile", "--check", "--out", str(tmp_path)]) == EXIT_FAILED
    assert main(["compile", "--out", str(tmp_path)]) == EXIT_OK
    assert main(["compile", "--check", "--out", str(tmp_path)]) == EXIT_OK
