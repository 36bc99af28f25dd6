"""A loopback Kubeflow Pipelines API (v2beta1) for contract tests: records every request and checks bodies
against the KFP API models of `kfp_server_api`, the package `kfp.Client` speaks through.

No Kubeflow cluster runs here, so this server stands in for one, on 127.0.0.1 only. It implements what
`kfp.Client` 2.17 calls for a run from a pipeline package and a recurring run:

| method | path | kfp.Client caller |
|---|---|---|
| GET | /apis/v2beta1/healthz | `Client()` constructor (`get_kfp_healthz`) |
| GET | /apis/v2beta1/experiments?filter= | `create_experiment` -> `get_experiment(experiment_name=)` |
| POST | /apis/v2beta1/experiments | `create_experiment` (body `V2beta1Experiment`) |
| GET | /apis/v2beta1/runs?experiment_id=&filter= | `list_runs` |
| POST | /apis/v2beta1/runs | `run_pipeline` (body `V2beta1Run`) |
| GET | /apis/v2beta1/runs/{run_id} | `get_run` |
| GET | /apis/v2beta1/recurringruns?experiment_id=&filter= | `list_recurring_runs` |
| POST | /apis/v2beta1/recurringruns | `create_recurring_run` (body `V2beta1RecurringRun`) |

A body is checked twice: strictly (every key is a field of the model, recursively, with the field's JSON type
and enum values), then deserialized with `kfp_server_api.ApiClient().deserialize` into the model, whose fields
are checked the way the KFP API server does (display name, exactly one pipeline source, parameters declared by
the pipeline spec, cron trigger, max_concurrency in [1, 10], ...). A body that fails answers HTTP 400 and the
problems are kept in `violations`. Responses are built from the same models (`sanitize_for_serialization`).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kfp_server_api
from kfp_server_api import models

from tests.loopback import LoopbackServer

API = "/apis/v2beta1"
INT64_FIELDS = frozenset({"max_concurrency", "interval_second", "total_size"})  # JSON number or string
MAX_CONCURRENCY_RANGE = (1, 10)  # what the KFP API server accepts
GRPC_CODES = {400: 3, 404: 5, 409: 6, 429: 8, 500: 13, 502: 14, 503: 14, 504: 4}


@dataclass
class RecordedRequest:
    """One request as received: method, path, query, headers, JSON body, and the status it was answered with."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    status: int = 0


@dataclass
class _Failure:
    method: str
    path: str
    status: int
    times: int
    after_processing: bool


class _RawResponse:
    """What `ApiClient.deserialize` reads: an object with `.data`."""

    def __init__(self, data: Any) -> None:
        self.data = json.dumps(data)


def deserialize(data: Any, type_name: str) -> Any:
    """`data` as a `kfp_server_api` model, the way the client deserializes an answer."""
    return kfp_server_api.ApiClient().deserialize(_RawResponse(data), type_name)


def serialize(model: Any) -> Any:
    """A `kfp_server_api` model as the JSON the API server sends (field JSON names, no nulls)."""
    return kfp_server_api.ApiClient().sanitize_for_serialization(model)


def model_problems(data: Any, type_name: str, where: str) -> list[str]:
    """Strict structural check of JSON against a `kfp_server_api` type: unknown keys, wrong JSON types, bad enums."""
    if type_name.startswith("list["):
        inner = type_name[5:-1]
        if not isinstance(data, list):
            return [f"{where}: expected a list, got {type(data).__name__}"]
        return [p for i, item in enumerate(data) for p in model_problems(item, inner, f"{where}[{i}]")]
    if type_name.startswith("dict("):
        inner = re.match(r"dict\(([^,]*), (.*)\)", type_name).group(2)
        if not isinstance(data, dict):
            return [f"{where}: expected an object, got {type(data).__name__}"]
        return [p for key, value in data.items() for p in model_problems(value, inner, f"{where}.{key}")]
    if type_name == "object":
        return []
    if type_name == "str":
        leaf = where.rsplit(".", 1)[-1]
        ok = isinstance(data, str) or (
            leaf in INT64_FIELDS and isinstance(data, int) and not isinstance(data, bool)
        )
        return [] if ok else [f"{where}: expected a string, got {data!r}"]
    if type_name == "int":
        return [] if isinstance(data, int) and not isinstance(data, bool) else [f"{where}: expected an int"]
    if type_name == "bool":
        return [] if isinstance(data, bool) else [f"{where}: expected true/false, got {data!r}"]
    if type_name == "float":
        return [] if isinstance(data, int | float) else [f"{where}: expected a number"]
    if type_name == "datetime":
        try:
            datetime.fromisoformat(str(data).replace("Z", "+00:00"))
        except ValueError:
            return [f"{where}: expected an RFC 3339 time, got {data!r}"]
        return []
    klass = getattr(models, type_name)
    allowed = getattr(klass, "allowable_values", None)
    if allowed is not None:  # enum
        return [] if data in allowed else [f"{where}: {data!r} is not one of {allowed}"]
    if not isinstance(data, dict):
        return [f"{where}: expected a {type_name} object, got {type(data).__name__}"]
    json_to_attr = {json_key: attr for attr, json_key in klass.attribute_map.items()}
    problems = [f"{where}.{key}: not a field of {type_name}" for key in data if key not in json_to_attr]
    for key, value in data.items():
        if key in json_to_attr and value is not None:
            problems += model_problems(value, klass.openapi_types[json_to_attr[key]], f"{where}.{key}")
    return problems


def split_pipeline_spec(pipeline_spec: Any) -> tuple[dict, dict]:
    """(PipelineSpec, PlatformSpec) of a run's `pipeline_spec` (kfp.Client nests both when a platform spec exists)."""
    if not isinstance(pipeline_spec, dict):
        return {}, {}
    if "pipeline_spec" in pipeline_spec:
        return pipeline_spec.get("pipeline_spec") or {}, pipeline_spec.get("platform_spec") or {}
    return pipeline_spec, {}


def pipeline_source_problems(run: Any, where: str) -> list[str]:
    """Exactly one pipeline source; a spec is a compiled PipelineSpec whose parameters the run's arguments fit."""
    problems = []
    if (run.pipeline_spec is None) == (run.pipeline_version_reference is None):
        return [f"{where}: exactly one of pipeline_spec and pipeline_version_reference is required"]
    if run.pipeline_spec is None:
        return problems
    spec, _ = split_pipeline_spec(run.pipeline_spec)
    for key in ("pipelineInfo", "root", "schemaVersion", "deploymentSpec", "components"):
        if key not in spec:
            problems.append(f"{where}.pipeline_spec: no {key} (not a compiled PipelineSpec)")
    if not (spec.get("pipelineInfo") or {}).get("name"):
        problems.append(f"{where}.pipeline_spec.pipelineInfo.name is missing")
    declared = ((spec.get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {}
    given = dict((run.runtime_config.parameters or {}) if run.runtime_config else {})
    for name in sorted(set(given) - set(declared)):
        problems.append(f"{where}.runtime_config.parameters.{name}: not a parameter of the pipeline")
    for name, definition in declared.items():
        if name not in given and "defaultValue" not in definition and not definition.get("isOptional"):
            problems.append(f"{where}.runtime_config.parameters.{name}: required by the pipeline, not given")
    return problems


class FakeKfpServer(LoopbackServer):
    """The loopback KFP API. Use as a context manager; `url` is `http://127.0.0.1:<port>`.

    Args:
        multi_user: What healthz reports (`multi_user`).
    """

    def __init__(self, multi_user: bool = False) -> None:
        self.multi_user = multi_user
        self.requests: list[RecordedRequest] = []
        self.violations: list[str] = []
        self.experiments: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.recurring_runs: dict[str, dict[str, Any]] = {}
        self._failures: list[_Failure] = []
        self._delays: list[list] = []  # [method, path, seconds, times]
        self._lock = threading.Lock()

    # Lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> FakeKfpServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                fake._handle(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                fake._handle(self, "POST")

            def do_DELETE(self) -> None:  # noqa: N802
                fake._handle(self, "DELETE")

            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                return

        return self._serve(Handler, "fake-kfp")

    # Test controls ----------------------------------------------------------------------------------------
    def fail(
        self, method: str, path: str, status: int = 503, times: int = 1, after_processing: bool = False
    ) -> None:
        """Answers the next `times` requests to `method path` (path without query) with `status`.

        With `after_processing`, the request takes effect first and only its answer is lost (e.g. the run is
        created, the client sees 503): what a timeout after the server acted looks like.
        """
        with self._lock:
            self._failures.append(_Failure(method, path, status, times, after_processing))

    def delay(self, method: str, path: str, seconds: float, times: int = 1) -> None:
        """Makes the next `times` requests to `method path` take `seconds` before they are processed."""
        with self._lock:
            self._delays.append([method, path, seconds, times])

    def set_run_state(self, run_id: str, state: str) -> None:
        assert state in models.V2beta1RuntimeState.allowable_values, state
        with self._lock:
            self.runs[run_id]["state"] = state

    def calls(self, method: str | None = None, path: str | None = None) -> list[RecordedRequest]:
        """Recorded requests, optionally of one method and path (without query)."""
        with self._lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method) and (path is None or r.path == path)
            ]

    # Request handling -------------------------------------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        record = RecordedRequest(
            method,
            parts.path,
            parse_qs(parts.query, keep_blank_values=True),
            {k.lower(): v for k, v in handler.headers.items()},
            body,
        )
        with self._lock:
            self.requests.append(record)
            failure = next(
                (f for f in self._failures if f.method == method and f.path == parts.path and f.times > 0),
                None,
            )
            if failure is not None:
                failure.times -= 1
            delay = next((d for d in self._delays if d[:2] == [method, parts.path] and d[3] > 0), None)
            if delay is not None:
                delay[3] -= 1
        if delay is not None:
            time.sleep(delay[2])
        if failure is not None and not failure.after_processing:
            status, answer = failure.status, _status(failure.status, "injected failure")
        else:
            try:
                status, answer = self._route(method, parts.path, record.query, body)
            except Exception as error:  # a bug in the fake: say so rather than hang the client
                status, answer = 500, _status(500, f"fake server error: {error!r}")
            if failure is not None:
                status, answer = failure.status, _status(failure.status, "injected failure after processing")
        record.status = status
        payload = json.dumps(answer).encode("utf-8")
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up waiting
            handler.wfile.write(payload)

    def _reject(self, problems: list[str]) -> tuple[int, Any]:
        with self._lock:
            self.violations.extend(problems)
        return 400, _status(400, "; ".join(problems))

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        if (method, path) == ("GET", f"{API}/healthz"):
            return 200, serialize(models.V2beta1GetHealthzResponse(multi_user=self.multi_user))
        if path == f"{API}/experiments":
            return self._list_experiments(query) if method == "GET" else self._create_experiment(body)
        if path == f"{API}/runs":
            return self._list_runs(query) if method == "GET" else self._create_run(query, body)
        if path == f"{API}/recurringruns":
            return self._list_recurring_runs(query) if method == "GET" else self._create_recurring_run(body)
        match = re.fullmatch(rf"{API}/runs/([^/:]+)", path)
        if method == "GET" and match:
            run = self.runs.get(match.group(1))
            return (200, serialize(_run_model(run))) if run else (404, _status(404, "run not found"))
        match = re.fullmatch(rf"{API}/experiments/([^/:]+)", path)
        if method == "GET" and match:
            experiment = self.experiments.get(match.group(1))
            if experiment is None:
                return 404, _status(404, "experiment not found")
            return 200, serialize(models.V2beta1Experiment(**experiment))
        with self._lock:
            self.violations.append(f"unexpected endpoint {method} {path}")
        return 404, _status(404, f"no endpoint {method} {path}")

    # Experiments --------------------------------------------------------------------------------------
    def _list_experiments(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        name = _display_name_filter(query)
        found = [e for e in self.experiments.values() if name is None or e["display_name"] == name]
        experiments = [models.V2beta1Experiment(**e) for e in found]
        return 200, serialize(models.V2beta1ListExperimentsResponse(experiments=experiments or None))

    def _create_experiment(self, body: Any) -> tuple[int, Any]:
        problems = model_problems(body, "V2beta1Experiment", "experiment")
        experiment = deserialize(body, "V2beta1Experiment") if not problems else None
        if experiment is not None:
            if not experiment.display_name:
                problems.append("experiment.display_name is required")
            if experiment.experiment_id:
                problems.append("experiment.experiment_id is output only")
            if any(e["display_name"] == experiment.display_name for e in self.experiments.values()):
                return 409, _status(409, f"experiment {experiment.display_name} already exists")
        if problems:
            return self._reject(problems)
        experiment_id = str(uuid.uuid4())
        stored = {
            "experiment_id": experiment_id,
            "display_name": experiment.display_name,
            "description": experiment.description,
            "namespace": experiment.namespace,
            "created_at": _now(),
            "storage_state": "AVAILABLE",
        }
        with self._lock:
            self.experiments[experiment_id] = stored
        return 200, serialize(models.V2beta1Experiment(**stored))

    # Runs -----------------------------------------------------------------------------------------------
    def _list_runs(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        name = _display_name_filter(query)
        experiment_id = (query.get("experiment_id") or [None])[0]
        found = [
            _run_model(r)
            for r in self.runs.values()
            if (name is None or r["display_name"] == name)
            and (experiment_id is None or r["experiment_id"] == experiment_id)
        ]
        return 200, serialize(models.V2beta1ListRunsResponse(runs=found or None, total_size=len(found)))

    def _create_run(self, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        problems = model_problems(body, "V2beta1Run", "run")
        if problems:
            return self._reject(problems)
        run = deserialize(body, "V2beta1Run")
        if not run.display_name:
            problems.append("run.display_name is required")
        for output_only in ("run_id", "created_at", "state", "finished_at", "run_details"):
            if getattr(run, output_only) is not None:
                problems.append(f"run.{output_only} is output only")
        if run.experiment_id and run.experiment_id not in self.experiments:
            problems.append(f"run.experiment_id {run.experiment_id}: no such experiment")
        problems += pipeline_source_problems(run, "run")
        if problems:
            return self._reject(problems)
        run_id = str(uuid.uuid4())
        stored = {
            "run_id": run_id,
            "experiment_id": run.experiment_id,
            "display_name": run.display_name,
            "pipeline_spec": run.pipeline_spec,
            "runtime_config": run.runtime_config,
            "service_account": run.service_account,
            "created_at": _now(),
            "state": "PENDING",
            "storage_state": "AVAILABLE",
        }
        with self._lock:
            self.runs[run_id] = stored
        return 200, serialize(_run_model(stored))

    # Recurring runs -------------------------------------------------------------------------------------
    def _list_recurring_runs(self, query: dict[str, list[str]]) -> tuple[int, Any]:
        name = _display_name_filter(query)
        experiment_id = (query.get("experiment_id") or [None])[0]
        found = [
            models.V2beta1RecurringRun(**r)
            for r in self.recurring_runs.values()
            if (name is None or r["display_name"] == name)
            and (experiment_id is None or r["experiment_id"] == experiment_id)
        ]
        return 200, serialize(models.V2beta1ListRecurringRunsResponse(recurring_runs=found or None))

    def _create_recurring_run(self, body: Any) -> tuple[int, Any]:
        problems = model_problems(body, "V2beta1RecurringRun", "recurring_run")
        if problems:
            return self._reject(problems)
        job = deserialize(body, "V2beta1RecurringRun")
        if not job.display_name:
            problems.append("recurring_run.display_name is required")
        if job.mode not in ("ENABLE", "DISABLE"):
            problems.append(f"recurring_run.mode must be ENABLE or DISABLE, got {job.mode!r}")
        if job.experiment_id and job.experiment_id not in self.experiments:
            problems.append(f"recurring_run.experiment_id {job.experiment_id}: no such experiment")
        trigger = job.trigger
        if trigger is None or (trigger.cron_schedule is None) == (trigger.periodic_schedule is None):
            problems.append("recurring_run.trigger needs exactly one of cron_schedule and periodic_schedule")
        elif trigger.cron_schedule is not None and len((trigger.cron_schedule.cron or "").split()) != 6:
            problems.append(
                f"recurring_run.trigger.cron_schedule.cron {trigger.cron_schedule.cron!r}: KFP needs 6 fields"
            )
        try:
            concurrency = int(job.max_concurrency)
        except (TypeError, ValueError):
            problems.append(f"recurring_run.max_concurrency must be an integer, got {job.max_concurrency!r}")
        else:
            low, high = MAX_CONCURRENCY_RANGE
            if not low <= concurrency <= high:
                problems.append(
                    f"recurring_run.max_concurrency must be in [{low}, {high}], got {concurrency}"
                )
        problems += pipeline_source_problems(job, "recurring_run")
        if problems:
            return self._reject(problems)
        job_id = str(uuid.uuid4())
        stored = {
            "recurring_run_id": job_id,
            "experiment_id": job.experiment_id,
            "display_name": job.display_name,
            "description": job.description,
            "pipeline_spec": job.pipeline_spec,
            "runtime_config": job.runtime_config,
            "trigger": job.trigger,
            "mode": job.mode,
            "max_concurrency": str(job.max_concurrency),
            "no_catchup": job.no_catchup,
            "created_at": _now(),
            "status": "ENABLED" if job.mode == "ENABLE" else "DISABLED",
        }
        with self._lock:
            self.recurring_runs[job_id] = stored
        return 200, serialize(models.V2beta1RecurringRun(**stored))


def _run_model(stored: dict[str, Any]) -> Any:
    return models.V2beta1Run(**stored)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _status(http_status: int, message: str) -> dict[str, Any]:
    return serialize(models.GoogleRpcStatus(code=GRPC_CODES.get(http_status, 2), message=message))


def _display_name_filter(query: dict[str, list[str]]) -> str | None:
    """The display name an EQUALS filter asks for (string_value or its JSON name stringValue), if any."""
    text = (query.get("filter") or [""])[0]
    if not text:
        return None
    for predicate in json.loads(text).get("predicates", []):
        if predicate.get("key") == "display_name" and predicate.get("operation") in ("EQUALS", 1):
            return predicate.get("string_value", predicate.get("stringValue"))
    return None
