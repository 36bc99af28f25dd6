"""End to end: `tns serve` as a subprocess, queried with `tns predict`, stopped with Ctrl-C (SIGINT) or SIGTERM.

One run serves the exported fixture repository with `--repository`; the other finds it as the champion in MLflow
(logged as the run artifact `triton_repository`, as the export step does), downloads it and serves it.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from core.common.constants import (
    DEFAULT_MODEL_NAME,
    EXIT_FAILED,
    EXIT_OK,
    METRIC_ITEMS_SCORED,
    REPOSITORY_MANIFEST_FILE,
    TAG_REPOSITORY_MANIFEST,
    TRITON_REPOSITORY_ARTIFACT,
)
from core.export.golden import GoldenSet
from serving.metrics import scrape, series
from serving.triton_host import free_port
from tests.serving.helpers import TOLERANCE

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120
MLFLOW_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
ENDPOINT_LINES = {
    "http": re.compile(r"^\s+HTTP\s+http://127\.0\.0\.1:(\d+)\s*$"),
    "grpc": re.compile(r"^\s+gRPC\s+127\.0\.0\.1:(\d+)\s*$"),
}


@dataclass
class ServeProcess:
    process: subprocess.Popen
    lines: list[str]
    http_port: int
    grpc_port: int


def _tns(*args: str) -> list[str]:
    return [sys.executable, "-m", "tns", *args]


def _environment(home: Path, tracking_uri: str = "") -> dict[str, str]:
    environment = {**os.environ, "TNS_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    for name in MLFLOW_URI_VARIABLES:  # MLflow exports both when a URI is set in process; none may leak in
        environment.pop(name, None)
        if tracking_uri:
            environment[name] = tracking_uri
    return environment


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _start_serve(args: list[str], environment: dict[str, str]) -> ServeProcess:
    """Starts `tns serve ARGS` and waits for both endpoint lines (the output is read by a thread)."""
    process = subprocess.Popen(
        _tns("serve", *args),
        cwd=REPO_ROOT,
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        # As in a terminal: a test run started in the background (`make test &`) inherits an ignored SIGINT, and
        # Python then installs no Ctrl-C handler; the Ctrl-C test needs the terminal's default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        text=True,
    )
    lines: list[str] = []
    arrived: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in process.stdout:
            lines.append(line)
            arrived.put(line)
        arrived.put(None)

    threading.Thread(target=read, daemon=True).start()
    ports: dict[str, int] = {}
    deadline = time.monotonic() + START_TIMEOUT_S
    while len(ports) < 2:
        try:
            line = arrived.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            process.kill()
            pytest.fail(f"`tns serve` printed no endpoints in {START_TIMEOUT_S} s:\n{''.join(lines)}")
        if line is None:
            pytest.fail(f"`tns serve` exited with {process.wait()} before serving:\n{''.join(lines)}")
        for protocol, pattern in ENDPOINT_LINES.items():
            if match := pattern.match(line):
                ports[protocol] = int(match.group(1))
    return ServeProcess(process, lines, ports["http"], ports["grpc"])


def _stop(serve: ServeProcess, signum: int) -> tuple[int, str]:
    servers = _children(serve.process.pid)
    assert servers, "no tritonserver child process"
    serve.process.send_signal(signum)
    code = serve.process.wait(timeout=60)
    time.sleep(0.1)  # the reader thread drains the last lines
    for pid in servers:
        assert not Path(f"/proc/{pid}").exists(), f"tritonserver {pid} outlived `tns serve`"
    return code, "".join(serve.lines)


@pytest.fixture
def stop_on_failure() -> Iterator[list[ServeProcess]]:
    """Kills `tns serve` processes a failing test left running (the server follows on SIGTERM)."""
    started: list[ServeProcess] = []
    yield started
    for serve in started:
        if serve.process.poll() is None:
            serve.process.terminate()
            try:
                serve.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                serve.process.kill()


def _reference(exported_repository, text: str | None, image: bytes | None) -> np.ndarray:
    from core.export.onnx_export import reference_probabilities

    modality = "text+image" if text and image else ("text-only" if text else "image-only")
    golden = GoldenSet(["x"], [modality], [text], [image], exported_repository.policies)
    return reference_probabilities(exported_repository.model_dir, golden)[0]


def test_serve_repository_predict_and_ctrl_c(exported_repository, tmp_path: Path, stop_on_failure):
    environment = _environment(tmp_path / "home")
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    while len({http_port, grpc_port, metrics_port}) < 3:
        grpc_port, metrics_port = free_port(), free_port()
    serve = _start_serve(
        [
            "--repository",
            str(exported_repository.path),
            "--http-port",
            str(http_port),
            "--grpc-port",
            str(grpc_port),
            "--metrics-port",
            str(metrics_port),
        ],
        environment,
    )
    stop_on_failure.append(serve)
    assert (serve.http_port, serve.grpc_port) == (http_port, grpc_port)
    banner = "".join(serve.lines)
    assert "version 3" in banner and "cpu config" in banner
    assert f"tns predict --url 127.0.0.1:{http_port} --text" in banner

    # JSON over HTTP, text only: PyTorch's scores.
    text = "buy followers now, cheap!!!"
    result = subprocess.run(
        _tns("predict", "--url", f"127.0.0.1:{http_port}", "--text", text, "--json"),
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == EXIT_OK, result.stderr
    answer = json.loads(result.stdout)
    assert answer["model_version"] == "3" and list(answer["scores"]) == exported_repository.policies
    scores = np.asarray(list(answer["scores"].values()), dtype=np.float32)
    np.testing.assert_allclose(scores, _reference(exported_repository, text, None), rtol=0, atol=TOLERANCE)
    # the one item is counted on the metrics endpoint the banner names
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    assert metrics_url in banner
    scored = series(scrape(metrics_url), METRIC_ITEMS_SCORED, "policy")
    assert scored == {policy: 1.0 for policy in exported_repository.policies}

    # Table over gRPC, text and image from a file.
    golden = exported_repository.golden
    row = golden.indices("text+image")[0]
    image_file = tmp_path / "item.png"
    image_file.write_bytes(golden.images[row])
    result = subprocess.run(
        _tns(
            "predict",
            "--protocol",
            "grpc",
            "--url",
            f"127.0.0.1:{grpc_port}",
            "--text",
            golden.texts[row],
            "--image",
            str(image_file),
        ),
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == EXIT_OK, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("decision: ") and "version 3" in lines[0]
    assert lines[1].split() == ["policy", "score", "threshold", "flagged"]
    printed = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert list(printed) == golden.policies
    for j, policy in enumerate(golden.policies):
        score, threshold, flagged = printed[policy]
        assert abs(float(score) - golden.probabilities[row, j]) < 1e-4 + 5e-5  # printed with 4 decimals
        assert float(threshold) == pytest.approx(exported_repository.thresholds[policy], abs=5e-5)
        assert flagged in ("yes", "no")

    # A bad request: exit 1 with the server's reason.
    result = subprocess.run(
        _tns("predict", "--url", f"127.0.0.1:{http_port}", "--text", ""),
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == EXIT_FAILED
    assert "bad request" in result.stderr and "neither text nor image" in result.stderr

    code, output = _stop(serve, signal.SIGINT)
    assert code == EXIT_OK, output
    assert "tritonserver stopped" in output and "Traceback" not in output
    assert not _listening(http_port) and not _listening(grpc_port)


def _register_champion(exported_repository, tmp_path: Path) -> tuple[Path, str]:
    """Logs the fixture repository, its manifest and the manifest's tag as the export step does, and makes
    version 3 the champion; returns (TNS_HOME, tracking URI)."""
    import mlflow

    from core.common.integrity import manifest_sha256, repository_manifest
    from core.registry.mlflow_registry import configure, promote_version, set_version_tags

    home = tmp_path / "home"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    manifest = tmp_path / REPOSITORY_MANIFEST_FILE
    manifest.write_bytes(repository_manifest(exported_repository.path))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TNS_HOME", str(home))
        for name in MLFLOW_URI_VARIABLES:  # set here so that leaving the context removes them again
            patch.setenv(name, uri)
        try:
            configure(uri)
            client = mlflow.MlflowClient()
            client.create_registered_model(DEFAULT_MODEL_NAME)
            with mlflow.start_run() as run:
                mlflow.log_artifacts(str(exported_repository.path), TRITON_REPOSITORY_ARTIFACT)
                mlflow.log_artifact(str(manifest))
            for _ in range(exported_repository.version):  # the fixture repository serves version 3
                version = client.create_model_version(
                    DEFAULT_MODEL_NAME, source=run.info.artifact_uri, run_id=run.info.run_id
                ).version
            set_version_tags(
                DEFAULT_MODEL_NAME,
                str(version),
                {TAG_REPOSITORY_MANIFEST: manifest_sha256(manifest.read_bytes())},
            )
            promote_version(DEFAULT_MODEL_NAME, str(version))
        finally:
            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)
    assert str(version) == "3"
    return home, uri


def test_serve_champion_from_mlflow_and_sigterm(exported_repository, tmp_path: Path, stop_on_failure):
    """The champion's logged `triton_repository` is downloaded into TNS_HOME/serving and served."""
    home, uri = _register_champion(exported_repository, tmp_path)

    serve = _start_serve(
        ["--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"], _environment(home, uri)
    )
    stop_on_failure.append(serve)
    cached = home / "serving" / DEFAULT_MODEL_NAME / "3"
    assert str(cached) in "".join(serve.lines)
    assert (cached / "content_safety" / "3").is_dir()

    from serving.client import ContentSafetyClient

    golden = exported_repository.golden
    with ContentSafetyClient(f"127.0.0.1:{serve.http_port}") as client:
        scores = client.scores(golden.texts, golden.images)
    np.testing.assert_allclose(scores, golden.probabilities, rtol=0, atol=TOLERANCE)

    code, output = _stop(serve, signal.SIGTERM)
    assert code == EXIT_OK, output
    assert not _listening(serve.http_port) and not _listening(serve.grpc_port)


@pytest.mark.parametrize("file", ["postprocess/3/model.py", "classifier/3/model.onnx"])
def test_a_tampered_champion_repository_is_refused(exported_repository, tmp_path: Path, file: str):
    """Finding: `tns serve` ran the champion's python-backend code and weights as downloaded, unchecked."""
    import mlflow

    from serving.store import RepositoryIntegrityError, champion_repository

    home, uri = _register_champion(exported_repository, tmp_path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TNS_HOME", str(home))
        for name in MLFLOW_URI_VARIABLES:
            patch.setenv(name, uri)
        try:
            cached = champion_repository(DEFAULT_MODEL_NAME, uri)  # untouched: fetched and checked
            original = (cached / file).read_bytes()
            with (cached / file).open("ab") as handle:  # the cache is edited: fetched again, and checked
                handle.write(b"\nimport os  # injected\n")
            assert champion_repository(DEFAULT_MODEL_NAME, uri) == cached
            assert (cached / file).read_bytes() == original
            run_id = mlflow.MlflowClient().get_model_version(DEFAULT_MODEL_NAME, "3").run_id
            stored = Path(mlflow.get_run(run_id).info.artifact_uri.removeprefix("file://"))
            with (stored / TRITON_REPOSITORY_ARTIFACT / file).open("ab") as handle:  # the artifact store
                handle.write(b"\n")
            with pytest.raises(RepositoryIntegrityError, match=f"{file} does not match") as caught:
                champion_repository(DEFAULT_MODEL_NAME, uri, dest=tmp_path / "fresh")
            assert caught.value.file == file
        finally:
            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)
