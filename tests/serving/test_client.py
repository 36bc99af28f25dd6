"""`ContentSafetyClient` and `InferenceLog`: batching, logging, retries, timeouts, thread safety.

Batching, logging and bad requests run against the session's real tritonserver. Retry and timeout behaviour is
tested against a port where nothing listens, a loopback socket that accepts connections and never answers, and
a loopback HTTP server that answers with chosen error statuses.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
import time
import types
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

import serving.client as client_module
from monitoring.log_writer import InferenceLog
from serving.client import (
    BadRequestError,
    ContentSafetyClient,
    RequestTimeoutError,
    ServerUnavailableError,
    prediction_dict,
    score_matrix,
)
from serving.triton_host import free_port
from tests.serving.helpers import TOLERANCE, url_of

PROTOCOLS = ("http", "grpc")


def _count_attempts(client: ContentSafetyClient) -> list[float]:
    """Wraps the client's single-attempt call; returns the list of attempt start times it fills."""
    attempts: list[float] = []
    original = client._infer_once

    def counted(*args, **kwargs):
        attempts.append(time.monotonic())
        return original(*args, **kwargs)

    client._infer_once = counted
    return attempts


@pytest.fixture
def no_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backoff without jitter: delays are exactly backoff_s * 2**attempt."""
    monkeypatch.setattr(client_module, "random", types.SimpleNamespace(random=lambda: 0.0))


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts TCP connections and never sends a byte."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


class _StatusServer(ThreadingHTTPServer):
    """Answers every POST with the next status of `statuses` (the last one repeats) and a Triton error body."""

    daemon_threads = True

    def __init__(self, statuses: list[int]) -> None:
        super().__init__(("127.0.0.1", 0), _StatusHandler)
        self.statuses = list(statuses)
        self.requests = 0


class _StatusHandler(BaseHTTPRequestHandler):
    server: _StatusServer

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        server = self.server
        status = server.statuses[min(server.requests, len(server.statuses) - 1)]
        server.requests += 1
        body = json.dumps({"error": f"fake error {status}"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def status_server():
    servers: list[_StatusServer] = []

    def start(statuses: list[int]) -> _StatusServer:
        server = _StatusServer(statuses)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


# Construction -----------------------------------------------------------------------------------------------
def test_invalid_arguments_are_refused():
    with pytest.raises(ValueError, match="protocol"):
        ContentSafetyClient(protocol="websocket")
    with pytest.raises(ValueError, match="max_batch_size"):
        ContentSafetyClient(max_batch_size=0)
    with pytest.raises(ValueError, match="timeout_s"):
        ContentSafetyClient(timeout_s=0)
    client = ContentSafetyClient(f"http://127.0.0.1:{free_port()}")
    assert client.url.startswith("127.0.0.1:")
    with pytest.raises(ValueError, match="2 texts and 1 images"):
        client.classify(["a", "b"], [None])
    assert client.classify([]) == []
    client.close()
    client.close()  # closing twice is harmless
    with pytest.raises(RuntimeError, match="closed"):
        client.classify_one("late")


# Against the real server ------------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_large_inputs_are_split_into_max_batch_size_requests(triton_server, exported_repository, protocol):
    golden = exported_repository.golden
    records: list[dict] = []
    with ContentSafetyClient(
        url_of(triton_server, protocol), protocol=protocol, max_batch_size=3, inference_log=records.extend
    ) as client:
        attempts = _count_attempts(client)
        predictions = client.classify(golden.texts, golden.images)

    assert len(attempts) == 4  # 10 items: 3 + 3 + 3 + 1
    np.testing.assert_allclose(score_matrix(predictions), golden.probabilities, rtol=0, atol=TOLERANCE)
    by_request: dict[str, list[int]] = {}
    for record in records:
        by_request.setdefault(record["request_id"], []).append(record["item"])
    assert sorted(by_request.values(), key=len, reverse=True) == [[0, 1, 2]] * 3 + [[0]]


def test_client_default_batch_matches_the_server_limit(triton_server, exported_repository):
    """130 items go as 64 + 64 + 2; one request over the server's max_batch_size is a bad request."""
    golden = exported_repository.golden
    rows = [i % len(golden) for i in range(130)]
    texts, images = [golden.texts[i] for i in rows], [golden.images[i] for i in rows]
    with ContentSafetyClient(triton_server.grpc_url, protocol="grpc") as client:
        attempts = _count_attempts(client)
        scores = client.scores(texts, images)
    assert len(attempts) == 3
    np.testing.assert_allclose(scores, golden.probabilities[rows], rtol=0, atol=TOLERANCE)
    with ContentSafetyClient(triton_server.http_url, max_batch_size=100, retries=3, backoff_s=5) as client:
        attempts = _count_attempts(client)
        with pytest.raises(BadRequestError, match="batch"):
            client.classify(texts[:65], images[:65])
    assert len(attempts) == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bad_request_is_not_retried(triton_server, protocol):
    with ContentSafetyClient(
        url_of(triton_server, protocol), protocol=protocol, retries=3, backoff_s=5.0
    ) as client:
        attempts = _count_attempts(client)
        started = time.monotonic()
        with pytest.raises(BadRequestError, match="neither text nor image") as caught:
            client.classify_one("", None)
    assert len(attempts) == 1 and time.monotonic() - started < 2.0
    assert "attempts" not in str(caught.value)


def test_text_that_is_not_unicode_is_refused_before_sending():
    with ContentSafetyClient(f"127.0.0.1:{free_port()}", retries=3, backoff_s=5.0) as client:
        attempts = _count_attempts(client)
        with pytest.raises(BadRequestError, match="item 1: text is not valid Unicode"):
            client.classify(["fine", "lone surrogate \udc80"])
    assert attempts == []


def test_one_http_client_shared_by_threads(triton_server, exported_repository):
    golden = exported_repository.golden
    with ContentSafetyClient(triton_server.http_url, protocol="http") as client:

        def ask(index: int) -> tuple[int, np.ndarray]:
            row = index % len(golden)
            prediction = client.classify_one(golden.texts[row], golden.images[row])
            return row, np.asarray(list(prediction.scores.values()), dtype=np.float32)

        with ThreadPoolExecutor(max_workers=6) as pool:
            answers = list(pool.map(ask, range(120)))
        assert client.is_ready()
    for row, scores in answers:
        np.testing.assert_allclose(scores, golden.probabilities[row], rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("keep_text", [True, False])
def test_inference_log_records(triton_server, exported_repository, tmp_path: Path, keep_text: bool):
    from core.export.onnx_export import INPUT_NAMES, OUTPUT_NAMES, onnx_session
    from core.training.preprocessing import Preprocessor
    from monitoring.log_reader import read_logs
    from monitoring.schema import LOG_SCHEMA_VERSION, text_features

    golden = exported_repository.golden
    rows = [0, golden.indices("image-only")[0], golden.indices("text+image")[0]]
    from serving.content_store import LocalContentStore

    log = InferenceLog(tmp_path / "logs", keep_text=keep_text)
    store = LocalContentStore(tmp_path / "content")
    with ContentSafetyClient(
        triton_server.grpc_url, protocol="grpc", inference_log=log, content_store=store
    ) as client:
        predictions = client.classify([golden.texts[i] for i in rows], [golden.images[i] for i in rows])
        with pytest.raises(BadRequestError):
            client.classify_one("", None)

    files = sorted((tmp_path / "logs").glob("date=*/inference-*.jsonl"))
    assert len(files) == 1 and files[0].parent.name == f"date={time.strftime('%Y-%m-%d', time.gmtime())}"
    raw = files[0].read_text(encoding="utf-8")
    records = [json.loads(line) for line in raw.splitlines()]
    assert len(records) == 4
    # The served embeddings are the exported model's, projected: compare with onnxruntime in process.
    texts, images = [golden.texts[i] for i in rows], [golden.images[i] for i in rows]
    tensors = Preprocessor.from_model_dir(exported_repository.model_dir).serving_inputs(texts, images)
    session = onnx_session(exported_repository.onnx_path)
    _, text_embeddings, image_embeddings = session.run(
        list(OUTPUT_NAMES), {n: tensors[n] for n in INPUT_NAMES}
    )
    for offset, (record, row, prediction) in enumerate(zip(records, rows, predictions, strict=False)):
        text, image = golden.texts[row], golden.images[row]
        assert record["schema_version"] == LOG_SCHEMA_VERSION
        assert record["image_bytes"] == (len(image) if image else 0)
        assert record["image_sha256"] == (hashlib.sha256(image).hexdigest() if image else None)
        assert record["image_format"] == ("PNG" if image else None)
        assert record["text"] == (text if keep_text else None)
        assert {k: record[k] for k in text_features(text)} == text_features(text)
        assert record["text_sha256"] == (hashlib.sha256(text.encode()).hexdigest() if text else None)
        assert record["model_name"] == "content-safety" and record["model_version"] == "3"
        assert record["scores"] == pytest.approx(prediction.scores, abs=1e-6)
        assert record["flags"] == prediction.flags
        assert record["action"] == prediction.action and record["latency_ms"] > 0
        for name, expected, present in (
            ("text_embedding", text_embeddings, text),
            ("image_embedding", image_embeddings, image),
        ):
            if present:
                np.testing.assert_allclose(record[name], expected[offset], rtol=0, atol=1e-4)
            else:
                assert record[name] is None
    assert len({r["request_id"] for r in records[:3]}) == 1
    assert [r["item"] for r in records[:3]] == [0, 1, 2]
    # The content store holds each served item under its log key (the raw text too, whatever keep_text says);
    # the failed request stored nothing.
    for record, row in zip(records[:3], rows, strict=True):
        stored = store.get(record["request_id"], record["item"])
        assert (stored.text, stored.image) == (golden.texts[row], golden.images[row])
    assert store.get(records[3]["request_id"], 0) is None and store.counts["stored"] == 3
    failed = records[3]
    assert failed["scores"] is None and failed["action"] is None
    assert failed["error"].startswith("BadRequestError: ") and "neither text nor image" in failed["error"]
    # Never the image itself, in any encoding; the texts only when asked for.
    for image in filter(None, images):
        assert base64.b64encode(image[:48]).decode() not in raw
        assert image[:48].decode("latin-1") not in raw
    assert (golden.texts[0] in raw) == keep_text
    # Read back as a window: the failed request is counted, not a row.
    window = read_logs(tmp_path / "logs")
    assert window.stats.rows == 3 and window.stats.failed_requests == 1 and window.stats.malformed == 0
    assert window.policies == list(prediction.scores)


def test_prediction_dict_is_json_friendly(triton_server, exported_repository):
    with ContentSafetyClient(triton_server.http_url) as client:
        prediction = client.classify_one("hello there")
    data = json.loads(json.dumps(prediction_dict(prediction)))
    assert data["model_version"] == "3" and data["flagged_policies"] == prediction.flagged_policies
    assert data["scores"] == prediction.scores


# Failures: nothing listening, no answer, error statuses -----------------------------------------------------
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unreachable_server_is_retried_with_backoff(protocol, no_jitter):
    backoff = 0.2
    with ContentSafetyClient(
        f"127.0.0.1:{free_port()}", protocol=protocol, retries=2, backoff_s=backoff, timeout_s=2.0
    ) as client:
        attempts = _count_attempts(client)
        started = time.monotonic()
        with pytest.raises(ServerUnavailableError, match=r"after 3 attempts") as caught:
            client.classify_one("hello")
        elapsed = time.monotonic() - started
        assert not client.is_ready()
    assert not isinstance(caught.value, RequestTimeoutError)
    assert len(attempts) == 3
    gaps = np.diff(attempts)
    # Waits of backoff, then 2 * backoff (no jitter here); connection refusals themselves are immediate.
    assert backoff <= gaps[0] < backoff + 0.3 and 2 * backoff <= gaps[1] < 2 * backoff + 0.3
    assert 3 * backoff <= elapsed < 3 * backoff + 1.0


def test_backoff_jitter_adds_at_most_half(monkeypatch: pytest.MonkeyPatch):
    delays: list[float] = []
    fake_time = types.SimpleNamespace(
        sleep=delays.append, monotonic=time.monotonic, perf_counter=time.perf_counter
    )
    monkeypatch.setattr(client_module, "time", fake_time)
    monkeypatch.setattr(client_module, "random", types.SimpleNamespace(random=lambda: 0.999))
    client = ContentSafetyClient(f"127.0.0.1:{free_port()}", retries=3, backoff_s=0.1)
    with client, pytest.raises(ServerUnavailableError, match="after 4 attempts"):
        client.classify_one("hello")
    assert delays == pytest.approx([0.1 * 1.4995, 0.2 * 1.4995, 0.4 * 1.4995])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_no_answer_times_out_per_attempt(silent_port: int, protocol, no_jitter):
    timeout, backoff = 0.4, 0.1
    with ContentSafetyClient(
        f"127.0.0.1:{silent_port}", protocol=protocol, retries=1, backoff_s=backoff, timeout_s=timeout
    ) as client:
        attempts = _count_attempts(client)
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError, match="after 2 attempts"):
            client.classify_one("hello")
        elapsed = time.monotonic() - started
        assert len(attempts) == 2
        assert 2 * timeout + backoff - 0.05 <= elapsed < 2 * timeout + backoff + 1.5
        started = time.monotonic()
        assert not client.is_ready()  # answers within the timeout, not after gRPC's own minutes-long wait
        assert time.monotonic() - started < 2 * timeout + 1.0


@pytest.mark.parametrize(
    ("statuses", "error", "attempts"),
    [
        ([503], ServerUnavailableError, 3),
        ([500, 502], ServerUnavailableError, 3),
        ([429], ServerUnavailableError, 3),
        ([400], BadRequestError, 1),
        ([404], BadRequestError, 1),
    ],
)
def test_http_error_statuses(status_server, no_jitter, statuses, error, attempts):
    server = status_server(statuses)
    url = f"127.0.0.1:{server.server_address[1]}"
    client = ContentSafetyClient(url, retries=2, backoff_s=0.01)
    with client, pytest.raises(error, match="fake error") as caught:
        client.classify_one("hello")
    assert server.requests == attempts
    assert type(caught.value) is error


# The client's own metrics (prometheus-client) --------------------------------------------------------------
def _values(registry, name: str) -> dict[frozenset, float]:
    """A metric's values by label set, read back from the registry's text exposition."""
    from prometheus_client import generate_latest

    from serving.metrics import parse

    samples = parse(generate_latest(registry).decode("utf-8"))
    return {labels: value for (sample, labels), value in samples.items() if sample == name}


def test_client_metrics_count_outcomes_retries_and_time(status_server, no_jitter):
    from prometheus_client import CollectorRegistry

    from core.common.constants import (
        METRIC_CLIENT_REQUEST_SECONDS,
        METRIC_CLIENT_REQUESTS,
        METRIC_CLIENT_RETRIES,
    )

    registry = CollectorRegistry()
    flaky = status_server([503, 503, 400])  # two retried failures, then a refused request
    down = status_server([503])
    for server in (flaky, down):
        client = ContentSafetyClient(
            f"127.0.0.1:{server.server_address[1]}", retries=2, backoff_s=0.01, metrics_registry=registry
        )
        with client, pytest.raises((BadRequestError, ServerUnavailableError)):
            client.classify_one("hello")
    http = ("protocol", "http")
    assert _values(registry, METRIC_CLIENT_REQUESTS) == {
        frozenset({http, ("outcome", "bad_request")}): 1.0,
        frozenset({http, ("outcome", "unavailable")}): 1.0,
    }
    # 2 retries before the refusal, 2 before giving up.
    assert _values(registry, METRIC_CLIENT_RETRIES) == {frozenset({http, ("error", "unavailable")}): 4.0}
    assert _values(registry, f"{METRIC_CLIENT_REQUEST_SECONDS}_count") == {frozenset({http}): 2.0}
    (seconds,) = _values(registry, f"{METRIC_CLIENT_REQUEST_SECONDS}_sum").values()
    assert seconds >= 0.01 + 0.02 + 0.01 + 0.02  # the backoff waits are inside


def test_client_metrics_of_served_requests_per_protocol_share_one_registry(triton_server):
    from prometheus_client import CollectorRegistry

    from core.common.constants import METRIC_CLIENT_REQUESTS, METRIC_CLIENT_RETRIES

    registry = CollectorRegistry()
    for protocol in PROTOCOLS:
        with ContentSafetyClient(
            url_of(triton_server, protocol), protocol=protocol, metrics_registry=registry
        ) as client:
            client.classify(["hello", "buy followers"], [None, None])
            client.classify_one("again")
    assert _values(registry, METRIC_CLIENT_REQUESTS) == {
        frozenset({("protocol", protocol), ("outcome", "ok")}): 2.0 for protocol in PROTOCOLS
    }
    assert _values(registry, METRIC_CLIENT_RETRIES) == {}
