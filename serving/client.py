"""`ContentSafetyClient`: a typed client of the `content_safety` ensemble over Triton's HTTP or gRPC API.

    from monitoring.log_writer import InferenceLog
    from serving.client import ContentSafetyClient

    with ContentSafetyClient("127.0.0.1:8000", inference_log=InferenceLog("logs/inference")) as client:
        prediction = client.classify_one(text="buy followers now", image=open("meme.png", "rb").read())
        prediction.action, prediction.flagged_policies, prediction.scores["spam"]

With `content_store=` (a `serving.content_store.ContentStore`), each item's text and image bytes of a
successful request are also kept for human review under the same request id and item as its log record.

Requests larger than `max_batch_size` items are split. Unavailable servers, timeouts and server errors (5xx,
429, UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED) are retried with exponential backoff and jitter; a
request the server rejects (bad input) is not retried and raises `BadRequestError` with the server's message.

One client may be shared by threads: over gRPC they share one channel (tritonclient's gRPC client is
thread-safe), over HTTP each thread gets its own connection (tritonclient's HTTP client is not thread-safe).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from core.common.constants import (
    TRITON_ENSEMBLE,
    TRITON_INPUT_IMAGE,
    TRITON_INPUT_TEXT,
    TRITON_OUTPUT_DECISION,
    TRITON_OUTPUT_FLAGS,
    TRITON_OUTPUT_IMAGE_EMBEDDING,
    TRITON_OUTPUT_SCORES,
    TRITON_OUTPUT_TEXT_EMBEDDING,
)

if TYPE_CHECKING:
    from serving.content_store import ContentStore

PROTOCOLS = ("http", "grpc")
# Failures worth another attempt (besides HTTP 5xx): the server is down, overloaded or failed internally.
RETRIED_GRPC_STATUSES = frozenset(
    {"StatusCode.UNAVAILABLE", "StatusCode.INTERNAL", "StatusCode.RESOURCE_EXHAUSTED"}
)
RETRIED_HTTP_STATUSES = frozenset({"429"})
DEFAULT_PORTS = {"http": 8000, "grpc": 8001}
logger = logging.getLogger(__name__)


class ContentSafetyError(Exception):
    """Base class of the client's errors."""


class BadRequestError(ContentSafetyError):
    """The server rejected the request (e.g. an item with neither text nor image, a corrupt image)."""


class ServerUnavailableError(ContentSafetyError):
    """The server could not be reached or kept failing after all retries."""


class RequestTimeoutError(ServerUnavailableError):
    """The server did not answer within the timeout, after all retries."""


@dataclass(frozen=True)
class Prediction:
    """The ensemble's answer for one item."""

    scores: dict[str, float]
    flags: dict[str, bool]
    action: str
    model_name: str
    model_version: str
    decision: dict[str, Any] = field(repr=False)
    text_embedding: np.ndarray | None = field(default=None, repr=False, compare=False)
    image_embedding: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def flagged_policies(self) -> list[str]:
        return [policy for policy, flagged in self.flags.items() if flagged]


def _bytes_array(values: Sequence[bytes]) -> np.ndarray:
    array = np.empty((len(values), 1), dtype=object)
    for row, value in enumerate(values):
        array[row, 0] = value
    return array


class ContentSafetyClient:
    """Scores (text, image) items with the `content_safety` ensemble of a Triton server.

    Args:
        url: `host:port` of the server's HTTP or gRPC endpoint.
        protocol: "http" or "grpc".
        model_name: The ensemble's name.
        model_version: A version to pin ('' = the server's choice).
        timeout_s: Per-attempt timeout.
        retries: Further attempts after a failed one (not for bad requests).
        backoff_s: First retry delay; doubles per attempt, with up to 50% jitter.
        max_batch_size: Largest number of items per request (the ensemble's `max_batch_size`).
        inference_log: A sink called after every request with one dict per item: `request_id`, `item`,
            `timestamp`, `model_name`, `model_version`, `text`, `image`, `scores`, `flags`, `action`,
            `text_embedding`, `image_embedding`, `latency_ms`, `error` (None, or why the request failed).
            `monitoring.log_writer.InferenceLog` turns them into inference-log records; serving never imports it.
        content_store: Where each item's text and image bytes go after a successful request, keyed by the same
            `request_id` and `item` as its log record (`serving.content_store`), for human review. A failed
            write never fails the request: it is counted in `content_store_failures` and logged.
        metrics_registry: A `prometheus_client.CollectorRegistry` to publish the client's requests by outcome,
            retries and request time to (`serving.client_metrics`); None publishes nothing.
    """

    def __init__(
        self,
        url: str = f"127.0.0.1:{DEFAULT_PORTS['http']}",
        protocol: str = "http",
        model_name: str = TRITON_ENSEMBLE,
        model_version: str = "",
        timeout_s: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.1,
        max_batch_size: int = 64,
        inference_log: Callable[[list[dict[str, Any]]], None] | None = None,
        content_store: ContentStore | None = None,
        metrics_registry: Any = None,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if max_batch_size < 1 or retries < 0 or timeout_s <= 0:
            raise ValueError("max_batch_size >= 1, retries >= 0 and timeout_s > 0 are required")
        self.url = url.removeprefix("http://").removeprefix("grpc://")
        self.protocol = protocol
        self.model_name = model_name
        self.model_version = model_version
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_batch_size = max_batch_size
        self.inference_log = inference_log
        self.content_store = content_store
        self.content_store_failures = 0
        self._module = self._client_module()
        self._lock = threading.Lock()
        self._closed = False
        # gRPC: one thread-safe client. HTTP: one client per thread (tritonclient.http is not thread-safe).
        self._grpc_client = self._module.InferenceServerClient(self.url) if protocol == "grpc" else None
        self._local = threading.local()
        self._http_clients: list[Any] = []
        self._serves_embeddings: bool | None = None
        self._metrics = None
        if metrics_registry is not None:
            from serving.client_metrics import ClientMetrics

            self._metrics = ClientMetrics(metrics_registry, protocol)

    def _client_module(self):
        if self.protocol == "http":
            import tritonclient.http as module
        else:
            import tritonclient.grpc as module
        return module

    @property
    def _client(self):
        """The tritonclient client of the calling thread."""
        if self._closed:
            raise RuntimeError("the client is closed")
        if self._grpc_client is not None:
            return self._grpc_client
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._module.InferenceServerClient(
                self.url, connection_timeout=self.timeout_s, network_timeout=self.timeout_s
            )
            self._local.client = client
            with self._lock:
                self._http_clients.append(client)
        return client

    def _timeout_kwargs(self) -> dict[str, Any]:
        return {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}

    # Lifecycle ------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Closes the connections (of every thread); the client cannot be used afterwards."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            clients = [self._grpc_client] if self._grpc_client is not None else self._http_clients
            self._http_clients = []
        for client in clients:
            with contextlib.suppress(Exception):
                client.close()

    def __enter__(self) -> ContentSafetyClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def is_ready(self) -> bool:
        """Whether the server is up and the ensemble is ready to serve (answers within `timeout_s`)."""
        try:
            client = self._client
            timeout = self._timeout_kwargs()
            return bool(client.is_server_ready(**timeout)) and bool(
                client.is_model_ready(self.model_name, self.model_version, **timeout)
            )
        except Exception:  # noqa: BLE001 (any transport error means "not ready")
            return False

    def wait_until_ready(self, timeout_s: float = 30.0, poll_s: float = 0.1) -> bool:
        """Polls `is_ready` until it is true or `timeout_s` passed; returns the last answer."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.is_ready():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll_s)

    # Scoring --------------------------------------------------------------------------------------------
    def classify_one(self, text: str | None = None, image: bytes | None = None) -> Prediction:
        """Scores one item; at least one of `text` and `image` must be given."""
        return self.classify([text], [image])[0]

    def classify(
        self, texts: Sequence[str | None], images: Sequence[bytes | None] | None = None
    ) -> list[Prediction]:
        """Scores items in requests of at most `max_batch_size` items.

        Raises:
            BadRequestError: The server rejected a request (the message names the item and the problem).
            ServerUnavailableError: The server could not answer after all retries.
        """
        images = list(images) if images is not None else [None] * len(texts)
        if len(images) != len(texts):
            raise ValueError(f"got {len(texts)} texts and {len(images)} images")
        predictions: list[Prediction] = []
        for start in range(0, len(texts), self.max_batch_size):
            chunk = slice(start, start + self.max_batch_size)
            predictions.extend(self._classify_batch(list(texts[chunk]), list(images[chunk])))
        return predictions

    def scores(self, texts: Sequence[str | None], images: Sequence[bytes | None] | None = None) -> np.ndarray:
        """The (N, P) float32 score matrix, in the model's policy order."""
        return score_matrix(self.classify(texts, images))

    def _classify_batch(self, texts: list[str | None], images: list[bytes | None]) -> list[Prediction]:
        request_id = uuid.uuid4().hex
        started = time.perf_counter()
        try:
            result = self._infer_with_retries(texts, images, request_id)
        except ContentSafetyError as error:
            if self._metrics is not None:
                self._metrics.finished(time.perf_counter() - started, error)
            self._log(request_id, texts, images, None, started, error)
            raise
        if self._metrics is not None:
            self._metrics.finished(time.perf_counter() - started)
        scores = result.as_numpy(TRITON_OUTPUT_SCORES)
        flags = result.as_numpy(TRITON_OUTPUT_FLAGS)
        decisions = result.as_numpy(TRITON_OUTPUT_DECISION).reshape(-1)
        text_embeddings = result.as_numpy(TRITON_OUTPUT_TEXT_EMBEDDING) if self._wants_embeddings() else None
        image_embeddings = (
            result.as_numpy(TRITON_OUTPUT_IMAGE_EMBEDDING) if self._wants_embeddings() else None
        )
        predictions = []
        for row, raw in enumerate(decisions):
            decision = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
            policies = list(decision["policies"])
            predictions.append(
                Prediction(
                    scores={p: float(scores[row, j]) for j, p in enumerate(policies)},
                    flags={p: bool(flags[row, j]) for j, p in enumerate(policies)},
                    action=decision["action"],
                    model_name=decision["model_name"],
                    model_version=str(decision["model_version"]),
                    decision=decision,
                    text_embedding=None
                    if text_embeddings is None or not texts[row]
                    else text_embeddings[row],
                    image_embedding=None
                    if image_embeddings is None or not images[row]
                    else image_embeddings[row],
                )
            )
        answered = datetime.now(UTC)
        self._store_content(request_id, texts, images, answered)
        self._log(request_id, texts, images, predictions, started, None, answered)
        return predictions

    def _store_content(
        self, request_id: str, texts: list[str | None], images: list[bytes | None], answered: datetime
    ) -> None:
        """Writes each item's content to the content store; a failure is counted and logged, never raised."""
        if self.content_store is None:
            return
        for row, (text, image) in enumerate(zip(texts, images, strict=True)):
            try:
                self.content_store.put(request_id, row, text, image, timestamp=answered)
            except Exception as error:  # noqa: BLE001 (review content must never fail a served request)
                with self._lock:
                    self.content_store_failures += 1
                logger.warning("content store write failed for %s item %d: %s", request_id, row, error)

    def _inputs(self, texts: list[str | None], images: list[bytes | None]) -> list:
        encoded = []
        for index, text in enumerate(texts):
            try:
                encoded.append((text or "").encode("utf-8"))
            except UnicodeEncodeError as error:  # lone surrogates: not sendable as UTF-8
                raise BadRequestError(f"item {index}: text is not valid Unicode ({error.reason})") from None
        text_input = self._module.InferInput(TRITON_INPUT_TEXT, [len(texts), 1], "BYTES")
        text_input.set_data_from_numpy(_bytes_array(encoded))
        image_input = self._module.InferInput(TRITON_INPUT_IMAGE, [len(images), 1], "BYTES")
        image_input.set_data_from_numpy(_bytes_array([i or b"" for i in images]))
        return [text_input, image_input]

    def _wants_embeddings(self) -> bool:
        """Whether to fetch the embedding outputs: only for the inference log, and only from models that
        serve them (repositories exported before embeddings were added do not)."""
        if self.inference_log is None:
            return False
        if self._serves_embeddings is None:
            try:
                metadata = self._client.get_model_metadata(self.model_name, self.model_version)
                names = (
                    {output.name for output in metadata.outputs}
                    if self.protocol == "grpc"
                    else {output["name"] for output in metadata["outputs"]}
                )
            except Exception:  # noqa: BLE001 (metadata is optional: log without embeddings)
                return False
            self._serves_embeddings = TRITON_OUTPUT_TEXT_EMBEDDING in names
        return self._serves_embeddings

    def _infer_once(self, inputs: list, request_id: str):
        names = [TRITON_OUTPUT_SCORES, TRITON_OUTPUT_FLAGS, TRITON_OUTPUT_DECISION]
        if self._wants_embeddings():
            names += [TRITON_OUTPUT_TEXT_EMBEDDING, TRITON_OUTPUT_IMAGE_EMBEDDING]
        outputs = [self._module.InferRequestedOutput(name) for name in names]
        return self._client.infer(
            self.model_name,
            inputs,
            model_version=self.model_version,
            outputs=outputs,
            request_id=request_id,
            **self._timeout_kwargs(),
        )

    def _infer_with_retries(self, texts: list[str | None], images: list[bytes | None], request_id: str):
        from tritonclient.utils import InferenceServerException

        inputs = self._inputs(texts, images)
        attempt = 0
        while True:
            try:
                return self._infer_once(inputs, request_id)
            except InferenceServerException as error:
                failure, cause = _classify_server_error(error), error
            except (OSError, http.client.HTTPException) as error:  # HTTP transport: refused, reset, timed out
                timed_out = isinstance(error, TimeoutError) or "timed out" in str(error).lower()
                failure = (
                    RequestTimeoutError(f"no answer from {self.url} within {self.timeout_s} s: {error}")
                    if timed_out
                    else ServerUnavailableError(
                        f"cannot reach {self.url} ({self.protocol}): {type(error).__name__}: {error}"
                    )
                )
                cause = error
            if isinstance(failure, BadRequestError):
                raise failure from cause
            if attempt >= self.retries:
                raise type(failure)(f"{failure} (after {attempt + 1} attempts)") from cause
            if self._metrics is not None:
                self._metrics.retried(failure)
            time.sleep(self.backoff_s * (2**attempt) * (1 + random.random() / 2))  # noqa: S311 (jitter)
            attempt += 1

    def _log(
        self,
        request_id: str,
        texts: list[str | None],
        images: list[bytes | None],
        predictions: list[Prediction] | None,
        started: float,
        error: Exception | None,
        answered: datetime | None = None,
    ) -> None:
        if self.inference_log is None:
            return
        now = answered or datetime.now(UTC)
        latency_ms = (time.perf_counter() - started) * 1000.0
        served = []
        for row, (text, image) in enumerate(zip(texts, images, strict=True)):
            prediction = predictions[row] if predictions is not None else None
            served.append(
                {
                    "request_id": request_id,
                    "item": row,
                    "timestamp": now,
                    "model_name": prediction.model_name if prediction else self.model_name,
                    "model_version": prediction.model_version if prediction else self.model_version,
                    "text": text,
                    "image": image,
                    "scores": prediction.scores if prediction else None,
                    "flags": prediction.flags if prediction else None,
                    "action": prediction.action if prediction else None,
                    "text_embedding": prediction.text_embedding if prediction else None,
                    "image_embedding": prediction.image_embedding if prediction else None,
                    "latency_ms": latency_ms,
                    "error": None if prediction else f"{type(error).__name__}: {error}",
                }
            )
        self.inference_log(served)


def _classify_server_error(error) -> ContentSafetyError:
    """Maps a tritonclient error to BadRequestError (not retried) or ServerUnavailableError (retried)."""
    status = str(error.status() or "")
    message = error.message() or str(error)
    if status == "StatusCode.DEADLINE_EXCEEDED" or "Deadline Exceeded" in message:
        return RequestTimeoutError(f"no answer within the timeout: {message}")
    if status in RETRIED_GRPC_STATUSES or status.startswith("5") or status in RETRIED_HTTP_STATUSES:
        return ServerUnavailableError(f"server error ({status}): {message}")
    if not status:  # transport-level failure reported by tritonclient without a status
        return ServerUnavailableError(message)
    if status.startswith("4") or status == "StatusCode.INVALID_ARGUMENT":
        return BadRequestError(message)
    return BadRequestError(f"{status}: {message}")


def score_matrix(predictions: Sequence[Prediction]) -> np.ndarray:
    """The (N, P) float32 scores of predictions, in the model's policy order."""
    return np.asarray([list(p.scores.values()) for p in predictions], dtype=np.float32)


def prediction_dict(prediction: Prediction) -> dict[str, Any]:
    """A JSON-friendly view of a prediction (for `tns predict --json`)."""
    data = asdict(prediction)
    for name in ("text_embedding", "image_embedding"):
        data[name] = None if data[name] is None else [float(value) for value in data[name]]
    data["flagged_policies"] = prediction.flagged_policies
    return data
