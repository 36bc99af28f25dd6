"""`ContentSafetyClient`'s own Prometheus metrics (prometheus-client), when asked for with `metrics_registry=`.

The server counts what reached it; these count what the caller saw, retries and failures included:

- `tns_client_requests_total{protocol, outcome}`: requests the client finished, by outcome (`ok`,
  `bad_request`, `unavailable`, `timeout`), each after all its attempts;
- `tns_client_retries_total{protocol, error}`: attempts that failed and were tried again (`unavailable`,
  `timeout`);
- `tns_client_request_seconds{protocol}`: each request's time, retries and backoff included.

Labels never carry an item, a request id or a user. The families are registered once per registry, so several
clients (an HTTP and a gRPC one, say) may share one registry.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from core.common.constants import METRIC_CLIENT_REQUEST_SECONDS, METRIC_CLIENT_REQUESTS, METRIC_CLIENT_RETRIES

OUTCOME_OK = "ok"
# ContentSafetyError subclass name -> outcome / retry label.
ERROR_LABELS = {
    "BadRequestError": "bad_request",
    "ServerUnavailableError": "unavailable",
    "RequestTimeoutError": "timeout",
}
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_families: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def error_label(error: BaseException) -> str:
    """The label of a client error: `bad_request`, `unavailable`, `timeout` (or `error` for anything else)."""
    return ERROR_LABELS.get(type(error).__name__, "error")


def _registered(registry: Any) -> tuple[Any, Any, Any]:
    from prometheus_client import Counter, Histogram

    with _lock:
        if registry not in _families:
            _families[registry] = (
                Counter(
                    METRIC_CLIENT_REQUESTS.removesuffix("_total"),
                    "Requests the content-safety client finished, by outcome, after all attempts.",
                    ["protocol", "outcome"],
                    registry=registry,
                ),
                Counter(
                    METRIC_CLIENT_RETRIES.removesuffix("_total"),
                    "Failed attempts the content-safety client tried again.",
                    ["protocol", "error"],
                    registry=registry,
                ),
                Histogram(
                    METRIC_CLIENT_REQUEST_SECONDS,
                    "Time of a content-safety request as the client saw it, retries and backoff included.",
                    ["protocol"],
                    buckets=LATENCY_BUCKETS,
                    registry=registry,
                ),
            )
        return _families[registry]


class ClientMetrics:
    """The metric children of one client (one protocol) in a registry.

    Args:
        registry: A `prometheus_client.CollectorRegistry` (e.g. `prometheus_client.REGISTRY`).
        protocol: The client's protocol label.
    """

    def __init__(self, registry: Any, protocol: str) -> None:
        self._requests, self._retries, seconds = _registered(registry)
        self._protocol = protocol
        self._seconds = seconds.labels(protocol=protocol)

    def finished(self, seconds: float, error: BaseException | None = None) -> None:
        """One request ended: `ok` without `error`, else the error's outcome."""
        outcome = OUTCOME_OK if error is None else error_label(error)
        self._requests.labels(protocol=self._protocol, outcome=outcome).inc()
        self._seconds.observe(seconds)

    def retried(self, error: BaseException) -> None:
        """One failed attempt will be tried again."""
        self._retries.labels(protocol=self._protocol, error=error_label(error)).inc()
