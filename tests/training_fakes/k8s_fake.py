"""A loopback Kubernetes API server for contract tests of the Kubeflow Trainer SDK: records every request and
checks TrainJob bodies against the models of `kubeflow_trainer_api`, the package the SDK builds them with.

No cluster runs here: this server stands in for one, on 127.0.0.1 only, for what kubeflow 0.5.0's
`TrainerClient(KubernetesBackendConfig(...))` asks (T is /apis/trainer.kubeflow.org/v1alpha1):

| method | path | SDK caller |
|---|---|---|
| GET | /api/v1/namespaces/kubeflow-system/configmaps/kubeflow-trainer-public | `TrainerClient()` |
| GET | T/namespaces/{ns}/trainingruntimes/{name} | `get_runtime` (asked first; 404 unless served) |
| GET | T/clustertrainingruntimes/{name} | `get_runtime`; `get_job` asks for its runtime too |
| GET | T/namespaces/{ns}/trainingruntimes, T/clustertrainingruntimes | `list_runtimes` |
| POST | T/namespaces/{ns}/trainjobs | `train` (body `TrainerV1alpha1TrainJob`) |
| GET | T/namespaces/{ns}/trainjobs/{name} | `get_job`, `wait_for_job_status`, `get_job_logs`, ... |
| DELETE | T/namespaces/{ns}/trainjobs/{name} | `delete_job` |
| GET | /api/v1/namespaces/{ns}/pods?labelSelector= | `get_job` (the job's steps) |
| GET | /api/v1/namespaces/{ns}/pods/{pod}/log?container=&follow= | `get_job_logs` (a chunked stream) |
| GET | /api/v1/namespaces/{ns}/events | `get_job_events` |

A TrainJob body is checked twice: strictly against `TrainerV1alpha1TrainJob` (every key a field of its model
by JSON name, recursively; required fields present; `from_dict` accepts it; `to_dict` gives it back), then as
the API server and Trainer webhook would (apiVersion, kind, DNS-1035 name, a runtime served, the namespace).
Failing bodies answer 422 (a Kubernetes `Status`; problems kept in `violations`), a taken name 409.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import threading
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes.client
from kubeflow_trainer_api import models
from pydantic import BaseModel, ValidationError

from tests.loopback import LoopbackServer

GROUP = "trainer.kubeflow.org"
API_VERSION = f"{GROUP}/v1alpha1"
TRAINER, NS, NAME = f"/apis/{API_VERSION}", "/namespaces/([^/]+)", "/([^/]+)"
ANCESTOR_LABEL, JOBSET = "trainer.kubeflow.org/trainjob-ancestor-step", "jobset.sigs.k8s.io/"
RUNTIME_KINDS = ("ClusterTrainingRuntime", "TrainingRuntime")
DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
MAX_BODY_BYTES, TIME = 4 * 1024 * 1024, "%Y-%m-%dT%H:%M:%SZ"
POD_PHASES = {"Created": "Pending", "Running": "Running", "Complete": "Succeeded", "Failed": "Failed"}
Check = Callable[[dict[str, Any]], list[str]]


@dataclass
class Outcome:
    """The script every TrainJob follows; read at each poll, so it may be set before or after submission.

    Args:
        status: How the job ends: "Complete" or "Failed".
        polls_until_done: GETs of the TrainJob before it ends. The first shows no condition and Pending pods
            (the SDK says "Created"), the next ones Running pods (the SDK derives "Running" from them), and
            GET number `polls_until_done + 1` a condition Complete or Failed, with Succeeded or Failed pods.
        log_lines: The log of the "node" container of every node pod.
        events: `(reason, message, type)` Events about the TrainJob, oldest first.
        failure_reason, failure_message: Those of the Failed condition (JobSet's, which Trainer copies).
    """

    status: typing.Literal["Complete", "Failed"] = "Complete"
    polls_until_done: int = 2
    log_lines: list[str] = field(default_factory=list)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    failure_reason: str = "FailedJobs"
    failure_message: str = "jobset failed due to one or more job failures"


@dataclass
class _Job:
    namespace: str
    created: datetime
    uid: str
    polls: int = 0


def torch_distributed_runtime(image: str = "pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime") -> dict[str, Any]:
    """Kubeflow Trainer's own `torch-distributed` ClusterTrainingRuntime (manifests/base/runtimes)."""
    container = {"name": "node", "image": image, "command": ["/bin/bash", "-c", "echo Torch Runtime"]}
    job = {"metadata": {"labels": {ANCESTOR_LABEL: "trainer"}}}
    job["spec"] = {"template": {"spec": {"containers": [container]}}}
    spec = {"mlPolicy": {"numNodes": 1, "torch": {}}}  # API 2.3: numProcPerNode left torch for the TrainJob
    spec["template"] = {"spec": {"replicatedJobs": [{"name": "node", "template": job}]}}
    metadata = {"name": "torch-distributed", "labels": {"trainer.kubeflow.org/framework": "torch"}}
    return {"apiVersion": API_VERSION, "kind": "ClusterTrainingRuntime", "metadata": metadata, "spec": spec}


def model_problems(data: Any, cls: type[BaseModel], where: str = "") -> list[str]:
    """Keys that are no field of `cls` (by JSON name), missing required fields; recursively, by JSON path."""
    if not isinstance(data, dict):
        return [f"{where.rstrip('.') or '.'}: expected an object ({cls.__name__}), got {type(data).__name__}"]
    fields = {(info.alias or name): info for name, info in cls.model_fields.items()}
    problems = [f"{where}{key}: unknown field, not in {cls.__name__}" for key in data if key not in fields]
    for key, info in fields.items():
        if info.is_required() and data.get(key) is None:
            problems.append(f"{where}{key}: required field of {cls.__name__} is missing")
        elif data.get(key) is not None:
            problems += _value_problems(data[key], info.annotation, f"{where}{key}")
    return problems


def _value_problems(value: Any, annotation: Any, where: str) -> list[str]:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union and len(inner := [a for a in args if a is not type(None)]) == 1:  # Optional
        return _value_problems(value, inner[0], where)
    if origin is list and isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _value_problems(item, args[0], f"{where}[{i}]")]
    if origin is dict and isinstance(value, dict):
        return [p for k, item in value.items() for p in _value_problems(item, args[1], f"{where}.{k}")]
    is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
    if is_model and "actual_instance" not in annotation.model_fields:  # not a oneOf wrapper of scalars
        return model_problems(value, annotation, f"{where}.")
    return []  # scalars: `from_dict` checks their types


def roundtrip_problems(body: Any, back: Any, where: str = "") -> list[str]:
    """Where the model's `to_dict()` (as JSON) differs from the body: keys dropped, added, values changed."""
    if isinstance(body, dict) and isinstance(back, dict):
        problems = [f"{where}{k}: dropped by the model (unknown key)" for k in body if k not in back]
        problems += [f"{where}{k}: added by the model" for k in back if k not in body]
        for k in body.keys() & back.keys():
            problems += roundtrip_problems(body[k], back[k], f"{where}{k}.")
        return problems
    if isinstance(body, list) and isinstance(back, list) and len(body) == len(back):
        pairs = enumerate(zip(body, back, strict=True))
        return [p for i, (b, m) in pairs for p in roundtrip_problems(b, m, f"{where.rstrip('.')}[{i}].")]
    return [] if body == back else [f"{where.rstrip('.')}: {body!r} reads back as {back!r}"]


def _without_none(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _without_none(v) for k, v in data.items() if v is not None}
    return [_without_none(v) for v in data] if isinstance(data, list) else data


def trainjob_model_problems(body: Any) -> list[str]:
    """The strict check: JSON field names, `TrainerV1alpha1TrainJob.from_dict`, the `to_dict` round trip."""
    if problems := model_problems(body, models.TrainerV1alpha1TrainJob):
        return problems
    try:
        model = models.TrainerV1alpha1TrainJob.from_dict(body)
    except ValidationError as error:  # raised by a nested from_dict: it names the model, not the JSON path
        return [f"{error.title}.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()]
    except (TypeError, ValueError) as error:  # oneOf wrappers (Quantity, IntOrString) raise these
        return [f"not a TrainerV1alpha1TrainJob: {str(error).splitlines()[0]}"]
    back = json.loads(json.dumps(model.to_dict(), default=lambda t: t.isoformat().replace("+00:00", "Z")))
    return roundtrip_problems(_without_none(body), _without_none(back))


def selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """Whether `labels` satisfy a selector of `key=value`, `key!=value`, `key in (...)`, `key notin (...)`."""
    for term in filter(None, (t.strip() for t in re.split(r",(?![^()]*\))", selector))):
        if match := re.fullmatch(r"(\S+)\s+(in|notin)\s+\((.*)\)", term):
            ok = (labels.get(match[1]) in {v.strip() for v in match[3].split(",")}) == (match[2] == "in")
        else:
            key, op, value = re.fullmatch(r"([^!=\s]+)\s*(!=|==|=)\s*(\S*)", term).groups()
            ok = (labels.get(key) == value) == (op != "!=")
        if not ok:
            return False
    return True


def _status(code: int, reason: str, message: str, **details: Any) -> tuple[int, dict[str, Any]]:
    """(code, a Kubernetes `Status`), as the API server answers errors and deletions."""
    status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": code}
    status |= {"message": message, "reason": reason, "details": details}
    return code, status | ({"status": "Success"} if code < 400 else {})


def _not_found(plural: str, name: str) -> tuple[int, dict[str, Any]]:
    return _status(404, "NotFound", f'{plural} "{name}" not found', name=name, kind=plural)


class _Handler(BaseHTTPRequestHandler):
    """Hands every request to the `FakeKubernetes` that owns the server."""

    protocol_version = "HTTP/1.1"
    timeout = 10  # a client that stalls mid-request does not hold its thread for ever

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.fake._handle(self)

    do_POST = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        return


class FakeKubernetes(LoopbackServer):
    """The loopback Kubernetes API. Use as a context manager; `client_configuration()` points a client at it.

    Args:
        namespace: The namespace tests submit to (what `KubernetesBackendConfig(namespace=)` should say).
        extra_checks: More contract checks run on every TrainJob body: `check(body) -> list of problems`.

    Attributes:
        outcome: The script every TrainJob follows, read at each poll; `Outcome()` (Complete after 2 polls).
        requests: Every request as a dict: method, path, query (dict of lists), body (JSON or None), status.
        violations: Problems of the bodies answered 422, and requests to endpoints the fake lacks.
        trainjobs: Name -> the TrainJob body as POSTed and accepted (until deleted).
        runtimes: (Cluster)TrainingRuntime objects served; Trainer's `torch-distributed` at first.
        trainer_version: What the `kubeflow-trainer-public` ConfigMap says; None answers 404.
    """

    def __init__(self, namespace: str = "kubeflow-user", extra_checks: list[Check] | None = None) -> None:
        self.namespace, self.extra_checks, self.outcome = namespace, list(extra_checks or []), Outcome()
        self.runtimes, self.trainer_version = [torch_distributed_runtime()], "2.3.0"
        self.requests, self.violations, self.trainjobs = [], [], {}
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.RLock()
        self._routes = [
            ("GET", rf"/api/v1{NS}/configmaps{NAME}", self._config_map),
            ("GET", rf"{TRAINER}(?:{NS})?/(cluster)?trainingruntimes(?:{NAME})?", self._runtimes),
            ("POST", rf"{TRAINER}{NS}/trainjobs", self._create_trainjob),
            ("GET DELETE", rf"{TRAINER}{NS}/trainjobs{NAME}", self._get_or_delete_trainjob),
            ("GET", rf"/api/v1{NS}/pods", self._pods),
            ("GET", rf"/api/v1{NS}/pods{NAME}/log", self._log),
            ("GET", rf"/api/v1{NS}/events", self._events),
        ]

    # Lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> FakeKubernetes:
        """Starts serving on 127.0.0.1, on a free port, from a daemon thread."""
        return self._serve(_Handler, "fake-kubernetes")

    def client_configuration(self) -> kubernetes.client.Configuration:
        """A `kubernetes.client.Configuration` for this server: plain HTTP, no credentials."""
        return kubernetes.client.Configuration(host=self.url)

    # Request handling -------------------------------------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts, length = urlsplit(handler.path), int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(min(length, MAX_BODY_BYTES)) if length else b""
        handler.close_connection |= length > MAX_BODY_BYTES  # a body cut short is no JSON: 422, then hang up
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        record = {"method": handler.command, "path": parts.path, "query": parse_qs(parts.query), "body": body}
        with self._lock:
            self.requests.append(record)
        try:
            status, answer = self._route(handler.command, parts.path, record["query"], body)
        except Exception as error:  # a bug in the fake: say so rather than hang the client
            status, answer = _status(500, "InternalError", f"fake server error: {error!r}")
        record["status"] = status
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up waiting
            handler.send_response(status)
            if isinstance(answer, list):  # a log: plain text, chunked a line a chunk, as kubelet streams it
                handler.send_header("Content-Type", "text/plain")
                handler.send_header("Transfer-Encoding", "chunked")
                chunks = [b"%x\r\n%s\r\n" % (len(d), d) for d in (f"{line}\n".encode() for line in answer)]
                payload = b"".join(chunks) + b"0\r\n\r\n"
            else:
                payload = json.dumps(answer).encode()
                handler.send_header("Content-Type", "application/json")
                handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        for route_method, pattern, answer in self._routes:
            if method in route_method.split() and (match := re.fullmatch(pattern, path)):
                return answer(*match.groups(), method=method, query=query, body=body)
        with self._lock:
            self.violations.append(f"unexpected endpoint {method} {path}")
        return _status(404, "NotFound", f"the server could not find the requested resource {method} {path}")

    def _config_map(self, namespace: str, name: str, **_: Any) -> tuple[int, Any]:
        if f"{namespace}/{name}" != "kubeflow-system/kubeflow-trainer-public" or not self.trainer_version:
            return _not_found("configmaps", name)
        data = {"kubeflow_trainer_version": self.trainer_version}
        return 200, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}

    def _runtimes(self, namespace: str | None, cluster: str, name: str | None, **_: Any) -> tuple[int, Any]:
        kind, ns = "ClusterTrainingRuntime" if cluster else "TrainingRuntime", namespace
        if name is None:
            found = [r for r in self.runtimes if (r["kind"], r["metadata"].get("namespace")) == (kind, ns)]
            return 200, {"apiVersion": API_VERSION, "kind": f"{kind}List", "metadata": {}, "items": found}
        runtime = self._runtime({"kind": kind, "name": name}, namespace)
        return (200, copy.deepcopy(runtime)) if runtime else _not_found(f"{kind.lower()}s.{GROUP}", name)

    def _runtime(self, ref: dict[str, Any], namespace: str) -> dict[str, Any] | None:
        """The runtime a runtimeRef names (kind ClusterTrainingRuntime when not given), if served."""
        kind = ref.get("kind") or RUNTIME_KINDS[0]
        scope = namespace if kind == "TrainingRuntime" else None
        found = (r for r in self.runtimes if (r["kind"], r["metadata"].get("namespace")) == (kind, scope))
        return next((r for r in found if r["metadata"]["name"] == ref.get("name")), None)

    # TrainJobs ------------------------------------------------------------------------------------------
    def _create_trainjob(self, namespace: str, body: Any, **_: Any) -> tuple[int, Any]:
        problems, name = ["body: not a JSON object"], None
        if isinstance(body, dict):
            problems = trainjob_model_problems(body) + self._admission_problems(namespace, body)
            problems += [p for check in self.extra_checks for p in check(copy.deepcopy(body))]
            name = (body.get("metadata") or {}).get("name")
        if problems:
            with self._lock:
                self.violations.extend(problems)
            message = f'TrainJob.{GROUP} "{name}" is invalid: ' + "; ".join(problems)
            causes = [{"reason": "FieldValueInvalid", "message": p} for p in problems]
            return _status(422, "Invalid", message, name=name, group=GROUP, kind="TrainJob", causes=causes)
        with self._lock:
            if name in self._jobs:
                message = f'trainjobs.{GROUP} "{name}" already exists'
                return _status(409, "AlreadyExists", message, name=name, group=GROUP, kind="trainjobs")
            self._jobs[name] = _Job(namespace, datetime.now(UTC).replace(microsecond=0), str(uuid.uuid4()))
            self.trainjobs[name] = copy.deepcopy(body)
            return 201, self._trainjob(name, poll=False)

    def _admission_problems(self, namespace: str, body: dict[str, Any]) -> list[str]:
        """What the API server (CRD schema and rules) and the Trainer webhook reject."""
        problems = []
        for key, wanted in (("apiVersion", API_VERSION), ("kind", "TrainJob")):
            if body.get(key) != wanted:
                problems.append(f"{key}: must be {wanted}, got {body.get(key)!r}")
        metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        name = metadata.get("name")
        if not isinstance(name, str) or not DNS_1035.fullmatch(name) or len(name) > 63:
            problems.append(f"metadata.name: {name!r} must be a DNS-1035 label of at most 63 characters")
        if metadata.get("namespace") not in (None, namespace):
            problems.append(f"metadata.namespace: {metadata['namespace']!r} is not the path's {namespace!r}")
        ref = body["spec"].get("runtimeRef") if isinstance(body.get("spec"), dict) else None
        ref = ref if isinstance(ref, dict) else {}
        if ref.get("kind") not in (None, *RUNTIME_KINDS):
            problems.append(f"spec.runtimeRef.kind: must be one of {RUNTIME_KINDS}, got {ref['kind']!r}")
        elif ref.get("name") is not None and self._runtime(ref, namespace) is None:
            problems.append(f"spec.runtimeRef.name: no {ref.get('kind') or RUNTIME_KINDS[0]} {ref['name']!r}")
        if ref.get("apiGroup") not in (None, GROUP):
            problems.append(f"spec.runtimeRef.apiGroup: must be {GROUP}, got {ref['apiGroup']!r}")
        return problems

    def _get_or_delete_trainjob(self, namespace: str, name: str, method: str, **_: Any) -> tuple[int, Any]:
        with self._lock:
            if name not in self._jobs or self._jobs[name].namespace != namespace:
                return _not_found(f"trainjobs.{GROUP}", name)
            if method == "GET":
                return 200, self._trainjob(name, poll=True)
            uid, _ = self._jobs.pop(name).uid, self.trainjobs.pop(name)
        return _status(200, "", "", name=name, group=GROUP, kind="trainjobs", uid=uid)

    def _state(self, job: _Job) -> str:
        """Created, Running, Complete or Failed after `job.polls` GETs, by the current `outcome`."""
        done = job.polls > self.outcome.polls_until_done
        return self.outcome.status if done else "Created" if job.polls <= 1 else "Running"

    def _trainjob(self, name: str, poll: bool) -> dict[str, Any]:
        """The TrainJob as the API server returns it: server metadata, CRD defaults, status (lock held)."""
        job = self._jobs[name]
        job.polls += poll
        state, obj = self._state(job), copy.deepcopy(self.trainjobs[name])
        obj["metadata"] |= {"namespace": job.namespace, "uid": job.uid, "resourceVersion": str(job.polls + 1)}
        obj["metadata"]["creationTimestamp"] = f"{job.created:{TIME}}"
        obj["spec"]["runtimeRef"] = {"apiGroup": GROUP, "kind": RUNTIME_KINDS[0]} | obj["spec"]["runtimeRef"]
        if state in ("Complete", "Failed"):  # Trainer sets no condition while the JobSet runs
            done = {"reason": "AllJobsCompleted", "message": "jobset completed successfully"}
            if state == "Failed":
                done = {"reason": self.outcome.failure_reason, "message": self.outcome.failure_message}
            condition = {"type": state, "status": "True", "lastTransitionTime": f"{datetime.now(UTC):{TIME}}"}
            obj["status"] = {"conditions": [condition | done]}
        return obj

    # Pods, logs, events ---------------------------------------------------------------------------------
    def _pods(self, namespace: str, query: dict[str, list[str]], **_: Any) -> tuple[int, Any]:
        """A pod per training node of every job in `namespace`, named and labelled as JobSet does."""
        with self._lock:
            jobs_now = list(self._jobs.items())
            jobs = [(n, j, self._state(j), copy.deepcopy(self.trainjobs[n]["spec"])) for n, j in jobs_now]
        pods = []
        for name, job, state, spec in (j for j in jobs if j[1].namespace == namespace):
            runtime = (self._runtime(spec["runtimeRef"], namespace) or {}).get("spec") or {}
            trainer, rjobs = spec.get("trainer") or {}, runtime["template"]["spec"]["replicatedJobs"]
            containers = [c for r in rjobs for c in r["template"]["spec"]["template"]["spec"]["containers"]]
            base = next((c for c in containers if c["name"] == "node"), {})
            res = trainer.get("resourcesPerNode") or base.get("resources") or {}
            # quantities come back as strings: 2.0 as "2"
            res = {k: {r: str(q).removesuffix(".0") for r, q in v.items()} for k, v in res.items()}
            container = {"name": "node", "image": trainer.get("image") or base.get("image"), "resources": res}
            container |= {"command": trainer.get("command") or base.get("command"), "env": trainer.get("env")}
            pod_spec = {"containers": [_without_none(container)], "subdomain": name, "restartPolicy": "Never"}
            for index in range(trainer.get("numNodes") or runtime["mlPolicy"].get("numNodes") or 1):
                labels = {f"{JOBSET}jobset-name": name, f"{JOBSET}replicatedjob-name": "node"}
                labels |= {"batch.kubernetes.io/job-completion-index": str(index), ANCESTOR_LABEL: "trainer"}
                metadata = {"name": f"{name}-node-0-{index}-{job.uid[:5]}", "namespace": namespace}
                metadata |= {"uid": str(uuid.uuid5(uuid.UUID(job.uid), str(index))), "labels": labels}
                metadata["creationTimestamp"] = f"{job.created + timedelta(seconds=1):{TIME}}"
                pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}
                if selector_matches((query.get("labelSelector") or [""])[0], labels):
                    pods.append(pod | {"status": {"phase": POD_PHASES[state]}})
        return 200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": pods}

    def _log(self, namespace: str, pod_name: str, query: dict[str, list[str]], **_: Any) -> tuple[int, Any]:
        """The pod's log (`outcome.log_lines`), followed or not: the same stream, ended when written."""
        pods = self._pods(namespace, {})[1]["items"]
        pod = next((p for p in pods if p["metadata"]["name"] == pod_name), None)
        if pod is None or (query.get("container") or ["node"])[0] != "node":  # a node pod has one container
            return _not_found("pods", pod_name)
        if pod["status"]["phase"] == "Pending":
            return _status(400, "BadRequest", f'container "node" in pod "{pod_name}" is waiting to start')
        return 200, list(self.outcome.log_lines)

    def _events(self, namespace: str, **_: Any) -> tuple[int, Any]:
        """The `outcome.events` of every job in `namespace`, a second apart from the job's creation."""
        with self._lock:
            jobs = [(n, j) for n, j in self._jobs.items() if j.namespace == namespace]
            events = list(enumerate(self.outcome.events))
        items = []
        for (name, job), (i, (reason, message, event_type)) in ((j, e) for j in jobs for e in events):
            seen = f"{job.created + timedelta(seconds=i):{TIME}}"
            involved = {"apiVersion": API_VERSION, "kind": "TrainJob", "name": name, "uid": job.uid}
            event = {"metadata": {"name": f"{name}.{i:x}"}, "involvedObject": involved, "type": event_type}
            items.append(event | {"reason": reason, "message": message, "firstTimestamp": seen})
        return 200, {"apiVersion": "v1", "kind": "EventList", "metadata": {}, "items": items}
