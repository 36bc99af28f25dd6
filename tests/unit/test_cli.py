"""The `tns` command line, in process: exit codes, what the data and compile commands write, serve/predict errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.common.constants import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from tns.main import main


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


# serve / predict: argument errors and failures that need no server ------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--http-port", "70000"],
        ["serve", "--grpc-port", "-1"],
        ["serve", "--http-port", "eighty"],
        ["serve", "--http-port", "9000", "--grpc-port", "9000"],
        ["serve", "--config", "tpu"],
        ["serve", "--repository", "/no/such/folder"],
        ["predict"],
        ["predict", "--text", "hi", "--protocol", "websocket"],
        ["predict", "--text", "hi", "--timeout", "0"],
        ["predict", "--image", "/no/such/image.png"],
    ],
)
def test_serve_and_predict_usage_errors(argv: list[str], capsys):
    assert main(argv) == EXIT_USAGE
    assert "error" in capsys.readouterr().err


def test_serve_and_predict_help(capsys):
    assert main(["serve", "--help"]) == EXIT_OK
    text = capsys.readouterr().out
    for option in ("--repository", "--http-port", "--grpc-port", "--config"):
        assert option in text
    assert main(["predict", "--help"]) == EXIT_OK
    text = capsys.readouterr().out
    for option in ("--text", "--image", "--url", "--protocol", "--json"):
        assert option in text


def test_serve_refuses_a_folder_that_is_not_a_repository(tmp_path: Path, capsys):
    assert main(["serve", "--repository", str(tmp_path)]) == EXIT_FAILED
    assert "not a Triton model repository" in capsys.readouterr().err


def test_serve_without_champion_says_how_to_get_one(mlflow_isolation, tmp_path: Path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["serve", "--tracking-uri", uri, "--model-name", "nobody"]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "'nobody' has no 'champion' version" in err and "tns run training" in err


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_predict_without_server_fails_clearly(protocol: str, capsys):
    from serving.triton_host import free_port

    url = f"127.0.0.1:{free_port()}"
    assert main(["predict", "--text", "hi", "--url", url, "--protocol", protocol]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert f"no answer from a Triton server at {url} ({protocol})" in err
    assert "Is `tns serve` running there?" in err


def test_cli_module_imports_no_heavy_library():
    code = (
        "import sys, tns.main; "
        "print(sorted(m for m in ('torch', 'mlflow', 'tritonclient', 'numpy', 'kfp') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_every_command_has_a_handler():
    """Each command group registers its parsers; a leaf command without `handler` would fail only when run."""
    import argparse

    from tns.main import build_parser

    def leaves(parser: argparse.ArgumentParser, path: tuple[str, ...]):
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions:
            yield path, parser
            return
        for name, child in actions[0].choices.items():
            yield from leaves(child, (*path, name))

    commands = dict(leaves(build_parser(), ()))
    assert len(commands) >= 12 and ("data", "check") in commands and ("run", "training") in commands
    missing = [
        " ".join(path) for path, parser in commands.items() if not callable(parser.get_default("handler"))
    ]
    assert not missing, f"commands without a handler: {missing}"
