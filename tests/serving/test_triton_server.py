"""A real tritonserver (from the serving env) on CPU, serving ONNX models through the onnxruntime stand-in.

The tests build a tiny ONNX model (Linear + sigmoid, dynamic batch axis) in a temporary repository laid out for
Triton's real onnxruntime backend: a GPU `config.pbtxt` and a CPU `configs/cpu.pbtxt` with dynamic batching.
They need the serving env that `make setup` builds (`.venv-serving`, or `$TNS_SERVING_ENV`), and fail with that
instruction when it is missing. The stand-in's batching logic is also tested in process, with a fake
`triton_python_backend_utils`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import types
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from core.common.constants import (
    ENV_SERVING_ENV,
    ENV_TRITON_BACKENDS,
    ENV_TRITONSERVER,
    ONNX_MODEL_FILE,
)
from serving import triton_host as triton
from serving.triton_host import port_is_free
from serving.triton_install import (
    TritonInstallation,
    TritonNotAvailable,
    prepare_backend_dir,
    server_environment,
    serving_env,
)
from serving.triton_server import TritonServer, TritonStartError

MODEL = "tiny_classifier"
FEATURES = 4
CLASSES = 3
TOLERANCE = 1e-6
INPUT = "features"
OUTPUTS = ("probabilities", "logits")
MODEL_IO = f"""max_batch_size: 64
input [{{ name: "{INPUT}" data_type: TYPE_FP32 dims: [{FEATURES}] }}]
output [
  {{ name: "probabilities" data_type: TYPE_FP32 dims: [{CLASSES}] }},
  {{ name: "logits" data_type: TYPE_FP32 dims: [{CLASSES}] }}
]
"""


def write_model_folder(repository: Path, name: str, onnx_file: Path, io: str = MODEL_IO) -> Path:
    """Writes `<repository>/<name>/` as for the real onnxruntime backend: GPU config, CPU config, 1/model.onnx."""
    folder = repository / name
    (folder / "1").mkdir(parents=True)
    (folder / "configs").mkdir()
    shutil.copyfile(onnx_file, folder / "1" / ONNX_MODEL_FILE)
    header = f'name: "{name}"\nplatform: "onnxruntime_onnx"\n{io}'
    (folder / "config.pbtxt").write_text(header + "instance_group [{ kind: KIND_GPU }]\n")
    (folder / "configs" / "cpu.pbtxt").write_text(
        header + "instance_group [{ kind: KIND_CPU count: 1 }]\ndynamic_batching { }\n"
    )
    return folder


def export_onnx(module, example, path: Path, inputs: list[str], outputs: list[str], dynamic: dict) -> Path:
    import torch

    torch.onnx.export(
        module.eval(),
        (example,),
        str(path),
        input_names=inputs,
        output_names=outputs,
        dynamic_axes=dynamic,
        opset_version=17,
        dynamo=False,
    )
    return path


@pytest.fixture(scope="session")
def serving_env_path() -> Path:
    """The serving env; a missing one fails the test with the command that builds it."""
    try:
        return serving_env()
    except TritonNotAvailable as error:
        problem = str(error)
    pytest.fail(f"{problem}\nThese tests run a real tritonserver from the serving env.", pytrace=False)


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Linear(4, 3) classifier exported to ONNX: `features` [batch, 4] -> `probabilities`, `logits`."""
    import torch

    class TinyClassifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(FEATURES, CLASSES)

        def forward(self, features):
            logits = self.linear(features)
            return torch.sigmoid(logits), logits

    torch.manual_seed(0)
    batch = {0: "batch"}
    path = tmp_path_factory.mktemp("onnx") / ONNX_MODEL_FILE
    return export_onnx(
        TinyClassifier(),
        torch.randn(2, FEATURES),
        path,
        [INPUT],
        list(OUTPUTS),
        dict.fromkeys([INPUT, *OUTPUTS], batch),
    )


@pytest.fixture(scope="session")
def repository(tmp_path_factory: pytest.TempPathFactory, tiny_onnx: Path) -> Path:
    root = tmp_path_factory.mktemp("model_repository")
    write_model_folder(root, MODEL, tiny_onnx)
    return root


@pytest.fixture(scope="session")
def reference(tiny_onnx: Path):
    """In-process onnxruntime on the same file: features -> {output name: array}."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])

    def run(features: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(OUTPUTS, session.run(list(OUTPUTS), {INPUT: features}), strict=True))

    return run


@pytest.fixture(scope="module")
def server_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A TNS_HOME of its own (backend directory, server logs) for the module's servers."""
    home = tmp_path_factory.mktemp("tns_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TNS_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def server(serving_env_path: Path, server_home: Path, repository: Path) -> Iterator[TritonServer]:
    with TritonServer(repository) as running:
        yield running


def features(batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, FEATURES)).astype(np.float32)


def test_missing_serving_env_says_how_to_build_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv(ENV_SERVING_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(TritonNotAvailable, match="make setup"):
        serving_env()


def test_prepare_backend_dir_wires_python_backend_and_stand_in(
    serving_env_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from serving import triton_install as triton

    installation = TritonInstallation.from_serving_env(serving_env_path)
    backends = prepare_backend_dir(tmp_path / "backends", installation)

    python_dir = backends / "python"
    assert sorted(path.name for path in python_dir.iterdir()) == [
        "libtriton_python.so",
        "triton_python_backend_stub",
        "triton_python_backend_utils.py",
    ]
    assert os.access(python_dir / "triton_python_backend_stub", os.X_OK)
    assert (python_dir / "triton_python_backend_stub").read_bytes() == installation.python_stub.read_bytes()
    stand_in = backends / "onnxruntime" / "model.py"
    assert stand_in.read_text() == triton.ONNXRUNTIME_STAND_IN.read_text()

    # Idempotent: nothing is copied again while the sources are unchanged.
    inodes = {path: path.stat().st_ino for path in backends.rglob("*") if path.is_file()}
    assert prepare_backend_dir(tmp_path / "backends", installation) == backends
    assert {path: path.stat().st_ino for path in backends.rglob("*") if path.is_file()} == inodes

    # A changed stand-in source is copied again.
    source = tmp_path / "onnxruntime_model.py"
    source.write_text("# changed stand-in\n")
    monkeypatch.setattr(triton, "ONNXRUNTIME_STAND_IN", source)
    prepare_backend_dir(tmp_path / "backends", installation)
    assert stand_in.read_text() == "# changed stand-in\n"


def test_backend_dir_from_environment_is_used_as_is(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv(ENV_TRITON_BACKENDS, str(tmp_path))
    assert prepare_backend_dir() == tmp_path.resolve()
    assert list(tmp_path.iterdir()) == []


def test_server_environment_puts_serving_env_first(serving_env_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    installation = TritonInstallation.from_serving_env(serving_env_path)
    environment = server_environment(installation)

    assert environment["PATH"].split(os.pathsep)[0] == str(serving_env_path / "bin")
    library_dirs = environment["LD_LIBRARY_PATH"].split(os.pathsep)
    assert library_dirs[0].endswith("site-packages/nvidia_pytriton.libs")
    # The lib folder of the Python the env was made from, whose libpython the stub must load.
    home = next(
        line.split("=", 1)[1].strip()
        for line in (serving_env_path / "pyvenv.cfg").read_text().splitlines()
        if line.split("=", 1)[0].strip() == "home"
    )
    base_lib = (Path(home).parent / "lib").resolve()
    assert library_dirs[1] == str(base_lib)
    assert list(base_lib.glob("libpython3*.so*"))
    assert "PYTHONPATH" not in environment


@pytest.fixture
def full_install(serving_env_path: Path, tmp_path: Path) -> Path:
    """A Triton install laid out as in a Triton image (`bin/`, `backends/python/`, `lib/`), linked to the wheel's."""
    wheel = TritonInstallation.from_serving_env(serving_env_path)
    root = tmp_path / "tritonserver"
    (root / "bin").mkdir(parents=True)
    (root / "backends" / "python").mkdir(parents=True)
    (root / "bin" / "tritonserver").symlink_to(wheel.tritonserver)
    for source in (
        wheel.python_backend / "libtriton_python.so",
        wheel.python_backend / "triton_python_backend_utils.py",
        wheel.python_stub,
    ):
        (root / "backends" / "python" / source.name).symlink_to(source)
    (root / "lib").symlink_to(wheel.library_dirs[0])
    return root


def test_full_install_without_onnxruntime_backend_serves_through_the_stand_in(
    full_install: Path, server_home: Path, repository: Path, reference, monkeypatch: pytest.MonkeyPatch
):
    import tritonclient.http as httpclient

    monkeypatch.setenv(ENV_TRITONSERVER, str(full_install / "bin" / "tritonserver"))
    installation = TritonInstallation.find()
    assert installation.tritonserver == full_install / "bin" / "tritonserver"
    assert installation.backends == full_install / "backends" and not installation.has_onnxruntime_backend
    assert installation.library_dirs[0] == full_install / "lib"

    with TritonServer(repository) as server:
        client = httpclient.InferenceServerClient(server.http_url)
        batch = features(2, seed=3)
        request = httpclient.InferInput(INPUT, list(batch.shape), "FP32")
        request.set_data_from_numpy(batch)
        answer = client.infer(MODEL, [request]).as_numpy("probabilities")
        client.close()
    np.testing.assert_allclose(answer, reference(batch)["probabilities"], rtol=0, atol=TOLERANCE)


def test_full_install_with_onnxruntime_backend_keeps_its_own_backends(
    full_install: Path, monkeypatch: pytest.MonkeyPatch
):
    (full_install / "backends" / "onnxruntime").mkdir()
    (full_install / "backends" / "onnxruntime" / "libtriton_onnxruntime.so").write_bytes(b"")
    monkeypatch.setenv(ENV_TRITONSERVER, str(full_install / "bin" / "tritonserver"))
    assert TritonInstallation.find().has_onnxruntime_backend
    assert prepare_backend_dir() == full_install / "backends"


def test_http_answers_match_onnxruntime(server: TritonServer, reference):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.http_url)
    try:
        assert client.is_model_ready(MODEL)
        batch = features(5, seed=1)
        request = httpclient.InferInput(INPUT, list(batch.shape), "FP32")
        request.set_data_from_numpy(batch)
        result = client.infer(MODEL, [request])
        expected = reference(batch)
        for name in OUTPUTS:
            assert result.as_numpy(name).dtype == np.float32
            np.testing.assert_allclose(result.as_numpy(name), expected[name], rtol=0, atol=TOLERANCE)

        only_probabilities = client.infer(
            MODEL, [request], outputs=[httpclient.InferRequestedOutput("probabilities")]
        )
        assert only_probabilities.as_numpy("logits") is None
        np.testing.assert_allclose(
            only_probabilities.as_numpy("probabilities"), expected["probabilities"], atol=TOLERANCE
        )
    finally:
        client.close()


def test_grpc_answers_match_onnxruntime(server: TritonServer, reference):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        config = client.get_model_config(MODEL, as_json=True)["config"]
        assert config["instance_group"][0]["kind"] == "KIND_CPU"  # configs/cpu.pbtxt, not config.pbtxt
        batch = features(3, seed=2)
        request = grpcclient.InferInput(INPUT, list(batch.shape), "FP32")
        request.set_data_from_numpy(batch)
        result = client.infer(MODEL, [request])
        expected = reference(batch)
        for name in OUTPUTS:
            np.testing.assert_allclose(result.as_numpy(name), expected[name], rtol=0, atol=TOLERANCE)
    finally:
        client.close()


def test_concurrent_requests_of_different_batch_sizes_are_batched_and_split_back(
    server: TritonServer, reference
):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)

    def statistics() -> tuple[int, int]:
        stats = client.get_inference_statistics(MODEL, as_json=True)["model_stats"][0]
        return int(stats["inference_stats"]["success"]["count"]), int(stats.get("execution_count", 0))

    def ask(seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        batch = features(1 + seed % 7, seed=100 + seed)
        request = grpcclient.InferInput(INPUT, list(batch.shape), "FP32")
        request.set_data_from_numpy(batch)
        result = client.infer(MODEL, [request])
        return batch, {name: result.as_numpy(name) for name in OUTPUTS}

    try:
        requests_before, executions_before = statistics()
        with ThreadPoolExecutor(max_workers=12) as pool:
            answers = list(pool.map(ask, range(240)))
        requests_after, executions_after = statistics()
    finally:
        client.close()

    for batch, outputs in answers:
        expected = reference(batch)
        for name in OUTPUTS:
            assert outputs[name].shape == (len(batch), CLASSES)
            np.testing.assert_allclose(outputs[name], expected[name], rtol=0, atol=TOLERANCE)
    assert requests_after - requests_before == len(answers)
    # The dynamic batcher handed the stand-in several requests at once: fewer executions than requests.
    assert executions_after - executions_before < len(answers)


def test_stop_frees_ports_ends_process_and_leaves_no_shared_memory(
    serving_env_path: Path, server_home: Path, repository: Path
):
    http_port, grpc_port = triton.free_port(), triton.free_port()
    server = TritonServer(repository, http_port=http_port, grpc_port=grpc_port)
    server.start()
    pid = server.pid
    assert (server.http_url, server.grpc_url) == (f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}")
    assert 0 < server.load_seconds < 60
    assert not port_is_free(http_port) and not port_is_free(grpc_port)
    regions = triton._regions_of_tree(pid)
    assert regions  # the stand-in's stub maps a shared-memory region while it runs

    assert server.stop() == 0
    assert not server.running and server.pid is None
    assert not Path(f"/proc/{pid}").exists()
    assert port_is_free(http_port) and port_is_free(grpc_port)
    assert not regions & set(triton._shm_regions())
    assert server.stop() == 0  # stopping twice is harmless


def test_stop_after_a_crash_removes_the_crashed_servers_shared_memory(
    serving_env_path: Path, server_home: Path, repository: Path
):
    import signal
    import time

    server = TritonServer(repository).start()
    created = triton._regions_of_tree(server.pid)
    assert created
    os.killpg(server.pid, signal.SIGKILL)  # the server and its stubs die without cleaning up
    deadline = time.monotonic() + 10
    while server.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert created <= set(triton._shm_regions())  # left behind, as after a real crash

    assert server.stop() == -signal.SIGKILL
    assert not created & set(triton._shm_regions())  # recorded as the server's when it became ready


def test_wait_returns_the_exit_code_when_the_server_ends(
    serving_env_path: Path, server_home: Path, repository: Path
):
    import signal
    import threading

    server = TritonServer(repository).start()
    threading.Timer(0.3, os.kill, (server.pid, signal.SIGINT)).start()
    assert server.wait() == 0
    assert not server.running


def test_corrupt_model_fails_start_with_the_model_named(
    serving_env_path: Path, server_home: Path, tmp_path: Path, tiny_onnx: Path
):
    folder = write_model_folder(tmp_path / "repository", "corrupt_model", tiny_onnx)
    (folder / "1" / ONNX_MODEL_FILE).write_bytes(b"this is not an ONNX protobuf")
    server = TritonServer(tmp_path / "repository")
    with pytest.raises(TritonStartError) as raised:
        server.start(timeout_s=60)
    message = str(raised.value)
    assert "exited with code 1" in message
    assert "failed to load 'corrupt_model'" in message
    assert not server.running


def test_config_that_does_not_fit_the_model_fails_start_with_the_tensor_named(
    serving_env_path: Path, server_home: Path, tmp_path: Path, tiny_onnx: Path
):
    wrong_type = MODEL_IO.replace('"logits" data_type: TYPE_FP32', '"logits" data_type: TYPE_FP64')
    write_model_folder(tmp_path / "repository", "mismatched_model", tiny_onnx, io=wrong_type)
    with pytest.raises(TritonStartError, match=r"(?s)mismatched_model.*output 'logits'.*TYPE_FP64"):
        TritonServer(tmp_path / "repository").start(timeout_s=60)


# The stand-in in process, with a fake `triton_python_backend_utils`: grouping by shape and per-request errors.


@pytest.fixture
def fake_backend_utils(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    class Tensor:
        def __init__(self, name: str, array: np.ndarray) -> None:
            self._name, self._array = name, array

        def name(self) -> str:
            return self._name

        def as_numpy(self) -> np.ndarray:
            return self._array

    class TritonError:
        def __init__(self, message: str) -> None:
            self._message = message

        def message(self) -> str:
            return self._message

    class InferenceResponse:
        def __init__(self, output_tensors=(), error=None) -> None:
            self.output_tensors, self.error = list(output_tensors), error

    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor, module.TritonError, module.InferenceResponse = Tensor, TritonError, InferenceResponse
    module.get_input_tensor_by_name = lambda request, name: (
        Tensor(name, request[name]) if name in request else None
    )
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", module)
    return module


@pytest.fixture(scope="session")
def pooling_model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model with a variable non-batch dimension: `tokens` [batch, length, 2] -> `pooled` [batch, 2]."""
    import torch

    class MeanPool(torch.nn.Module):
        def forward(self, tokens):
            return tokens.mean(dim=1) * 2.0

    root = tmp_path_factory.mktemp("pooling")
    onnx_file = export_onnx(
        MeanPool(),
        torch.randn(2, 3, 2),
        root / ONNX_MODEL_FILE,
        ["tokens"],
        ["pooled"],
        {"tokens": {0: "batch", 1: "length"}, "pooled": {0: "batch"}},
    )
    io = """max_batch_size: 16
input [{ name: "tokens" data_type: TYPE_FP32 dims: [-1, 2] }]
output [{ name: "pooled" data_type: TYPE_FP32 dims: [2] }]
"""
    return write_model_folder(root / "repository", "pooling", onnx_file, io=io)


def stand_in_config(folder: Path) -> dict:
    """The JSON model config that Triton would pass for `folder`'s CPU config (only what the stand-in reads)."""
    return {
        "name": folder.name,
        "max_batch_size": 16,
        "input": [{"name": "tokens", "data_type": "TYPE_FP32", "dims": ["-1", "2"]}],
        "output": [{"name": "pooled", "data_type": "TYPE_FP32", "dims": ["2"]}],
        "parameters": {"intra_op_thread_count": {"string_value": "1"}},
        "default_model_filename": "",
    }


def test_stand_in_batches_equal_shapes_and_answers_bad_requests_alone(
    fake_backend_utils: types.ModuleType, pooling_model_folder: Path
):
    from serving.backends.onnxruntime_model import TritonPythonModel

    model = TritonPythonModel()
    model.initialize(
        {
            "model_config": json.dumps(stand_in_config(pooling_model_folder)),
            "model_repository": str(pooling_model_folder),
            "model_version": "1",
            "model_name": "pooling",
        }
    )
    runs = []
    session_run = model.session.run
    model.session.run = lambda names, feeds: runs.append(feeds["tokens"].shape) or session_run(names, feeds)

    rng = np.random.default_rng(0)
    shapes = [(2, 3, 2), (1, 5, 2), (3, 3, 2), (1, 5, 2)]
    requests = [{"tokens": rng.normal(size=shape).astype(np.float32)} for shape in shapes]
    requests.insert(2, {"tokens": np.ones((1, 3, 2), dtype=np.int64)})  # wrong dtype: fails alone
    responses = model.execute(requests)

    assert sorted(runs) == [(2, 5, 2), (5, 3, 2)]  # one run per group of equal non-batch shapes
    assert responses[2].error is not None and "tokens" in responses[2].error.message()
    for request, response in zip(requests, responses, strict=True):
        if request["tokens"].dtype != np.float32:
            continue
        assert response.error is None
        (pooled,) = response.output_tensors
        assert pooled.name() == "pooled" and pooled.as_numpy().dtype == np.float32
        np.testing.assert_allclose(pooled.as_numpy(), request["tokens"].mean(axis=1) * 2.0, atol=TOLERANCE)


def test_stand_in_refuses_a_config_that_does_not_fit(
    fake_backend_utils: types.ModuleType, pooling_model_folder: Path
):
    from serving.backends.onnxruntime_model import ModelConfigError, TritonPythonModel

    config = stand_in_config(pooling_model_folder)
    config["input"][0]["dims"] = ["4", "2", "1"]
    with pytest.raises(ModelConfigError, match="input 'tokens'"):
        TritonPythonModel().initialize(
            {
                "model_config": json.dumps(config),
                "model_repository": str(pooling_model_folder),
                "model_version": "1",
            }
        )
