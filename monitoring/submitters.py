"""Submitting a retraining run of the training pipeline: to Kubeflow Pipelines or on this machine.

- `KfpSubmitter` sends the compiled `pipelines/compiled/training.yaml` to a Kubeflow Pipelines host through
  `kfp.Client`. A host that does not answer (connection refused, timeout, HTTP 5xx/429) is retried with
  exponential backoff; after the last attempt `SubmissionError` says why. Before creating a run it looks for a
  run of the same name in the experiment, so a retry after a lost answer never starts a second run; a create
  that got no answer within the timeout is not retried at once (the host may still be creating it) but left to
  the next evaluation, which finds it by name.
- `LocalSubmitter` runs the pipeline with the KFP local runner (`pipelines.local.run_training`) in a
  subprocess, waits for it and keeps its exit code (0 blessed, 3 not blessed, 1 failed) and output folder.

`kfp` is imported inside the functions that talk to a host, never at module import.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from core.common.constants import ENV_HOME, EXIT_FAILED, EXIT_NOT_BLESSED, EXIT_OK
from core.common.env import tns_home

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAINING_PACKAGE = REPO_ROOT / "pipelines" / "compiled" / "training.yaml"
DEFAULT_EXPERIMENT = "tns-retraining"
ENV_KFP_HOST = "KFP_HOST"
ENV_KFP_TOKEN = "KFP_TOKEN"  # bearer token for a host behind authentication; sent as a header only
HEALTHZ_PATH = "/apis/v2beta1/healthz"
# KFP v2beta1 run states after which a run no longer runs.
TERMINAL_STATES = frozenset({"SUCCEEDED", "SKIPPED", "FAILED", "CANCELED"})
STATE_SUCCEEDED = "SUCCEEDED"
STATE_FAILED = "FAILED"
STATE_RUNNING = "RUNNING"
MAX_BACKOFF_S = 60.0
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF_S = 1.0
LOCAL_RUNS_DIR = "runs"  # under $TNS_HOME/monitoring
LOCAL_REQUEST_FILE = "request.json"
LOCAL_RESULT_FILE = "result.json"
LOCAL_LOG_FILE = "output.log"
LOCAL_PID_FILE = "pid"

T = TypeVar("T")


class SubmissionError(RuntimeError):
    """A run could not be submitted; `attempts` were made and the last error is in the message."""

    def __init__(self, message: str, attempts: int = 1, transient: bool = False) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.transient = transient


class HostUnavailable(ConnectionError):
    """The host did not answer its health check (refused, timed out or answered 5xx/429): worth a retry."""


@dataclass(frozen=True)
class RetrainRequest:
    """One retraining run to submit: what the training pipeline gets, and the key that makes it unique.

    Attributes:
        model_name: Registered model to retrain.
        window_id: Drift window id (sha256 of the reference and current window identity).
        window_start: ISO-8601 start of the current window.
        window_end: ISO-8601 end of the current window.
        data_uri: Dataset of the run ('' = the pipeline's default dataset).
        trigger_report: The drift report (path or URL) that triggered the run.
        config_overrides: `KEY=VALUE` overrides of the run configuration.
    """

    model_name: str
    window_id: str
    window_start: str
    window_end: str
    data_uri: str
    trigger_report: str
    config_overrides: tuple[str, ...] = ()

    @property
    def idempotency_key(self) -> str:
        """Model and window: one retraining run at most per key."""
        return f"{self.model_name}:{self.window_id}"

    @property
    def data_window(self) -> str:
        """The `data_window` pipeline parameter: compact JSON with the window's id, start and end."""
        window = {"id": self.window_id, "start": self.window_start, "end": self.window_end}
        return json.dumps(window, sort_keys=True, separators=(",", ":"))

    @property
    def run_name(self) -> str:
        """Deterministic run name (KFP display name), so that a resubmission finds an earlier run."""
        return f"retrain-{self.model_name}-{self.window_id[:16]}"

    def overrides(self) -> list[str]:
        """Configuration overrides of the run, with the policy's model name when it is not the default."""
        from core.common.constants import DEFAULT_MODEL_NAME

        extra = [] if self.model_name == DEFAULT_MODEL_NAME else [f"model_name={self.model_name}"]
        return [*self.config_overrides, *extra]

    def pipeline_arguments(self) -> dict[str, Any]:
        """Arguments of the training pipeline (`pipelines/training.py`) for a submission to a KFP host."""
        arguments: dict[str, Any] = {
            "data_uri": self.data_uri,
            "trigger_report": self.trigger_report,
            "data_window": self.data_window,
        }
        if self.overrides():
            from core.common.config import load_run_config

            config = load_run_config(overrides=self.overrides())
            arguments["config_json"] = config.to_json()
            arguments["policies"] = list(config.policies)
        return arguments


@dataclass
class SubmittedRun:
    """A run that a submitter started (or found already started for the same request).

    Attributes:
        run_id: KFP run id, or `local-<UTC time>-<key hash>` for a local run.
        url: Where to look at the run (KFP UI link, or a file:// URL of the local output folder).
        submitter: `kfp` or `local`.
        attempts: Submission attempts it took.
        state: The run's state when known at submission (local runs have finished by then).
        exit_code: Exit code of a local run (0 blessed, 3 not blessed, 1 failed).
        output_dir: Output folder of a local run.
        reused: True when a run of the same name already existed and nothing new was started.
        error: Why a local run failed ('' otherwise).
    """

    run_id: str
    url: str
    submitter: str
    attempts: int = 1
    state: str | None = None
    exit_code: int | None = None
    output_dir: str = ""
    reused: bool = False
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Submitter(Protocol):
    """Starts retraining runs and reports their state."""

    name: str

    def submit(self, request: RetrainRequest) -> SubmittedRun:
        """Starts the run; raises `SubmissionError` when it could not."""
        ...

    def run_state(self, run_id: str) -> str | None:
        """The run's state (`RUNNING`, `SUCCEEDED`, `FAILED`, ...), or None when it cannot be told."""
        ...


# Talking to a Kubeflow Pipelines host ---------------------------------------------------------------------
def check_host(host: str) -> str:
    """The host URL without a trailing slash; raises ValueError unless it is an http(s) URL."""
    host = (host or "").strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+", host):
        raise ValueError(f"the Kubeflow Pipelines host must be an http:// or https:// URL, got {host!r}")
    return host


def probe_host(host: str, token: str | None = None, timeout_s: float = 30.0) -> None:
    """GETs the host's health endpoint once; raises `HostUnavailable` when it does not answer usefully.

    kfp.Client calls the same endpoint in its constructor, without a timeout and with five 5-second retries on
    HTTP errors; probing first keeps a silent or failing host from hanging or stalling a submission. Proxies
    from the environment are not used (kfp.Client does not use them either).
    """
    import urllib.error
    import urllib.request

    request = urllib.request.Request(host + HEALTHZ_PATH, headers={"Accept": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout_s) as response:
            response.read()
    except urllib.error.HTTPError as error:
        if error.code >= 500 or error.code == 429:
            raise HostUnavailable(f"{host}{HEALTHZ_PATH} answered HTTP {error.code} {error.reason}") from None
        raise SubmissionError(
            f"{host}{HEALTHZ_PATH} answered HTTP {error.code} {error.reason}: is {host} the Kubeflow Pipelines "
            "API endpoint, and is KFP_TOKEN valid?"
        ) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise HostUnavailable(f"no answer from {host}{HEALTHZ_PATH}: {reason}") from None


def connect(host: str, token: str | None = None, namespace: str = "", timeout_s: float = 30.0) -> Any:
    """A `kfp.Client` for `host` that works offline: no kube config, no in-cluster lookup.

    Args:
        host: Kubeflow Pipelines API endpoint, e.g. `http://127.0.0.1:8888` (a port-forward) or the gateway URL.
        token: Bearer token (`existing_token`); None for an unauthenticated host.
        namespace: Kubernetes namespace of a multi-user deployment; '' for a single-user one.
        timeout_s: Limit of every HTTP request the client makes.

    Raises:
        HostUnavailable: The host did not answer its health check.
    """
    host = check_host(host)
    probe_host(host, token, timeout_s)
    import kfp

    with warnings.catch_warnings(), quiet_stdout():
        # "This client only works with Kubeflow Pipeline v2.0.0-beta.2 and later versions."
        warnings.simplefilter("ignore", FutureWarning)
        client = kfp.Client(host=host, existing_token=token or None, namespace=namespace or "kubeflow")
    _limit_requests(client._run_api.api_client.rest_client, timeout_s)  # shared by every service API
    return client


def _limit_requests(rest: Any, timeout_s: float) -> None:
    """Gives every request of kfp's generated REST client a timeout and a single attempt.

    kfp.Client takes no timeout; its REST client passes `_request_timeout` (default None: wait forever) to
    urllib3 on each call, so the default is filled in here. urllib3's own connection retries are turned off:
    retries and backoff are `with_retries`'.
    """
    import urllib3

    send = rest.request

    def request(*args: Any, _request_timeout: Any = None, **kwargs: Any) -> Any:
        return send(*args, _request_timeout=_request_timeout or (timeout_s, timeout_s), **kwargs)

    rest.request = request
    rest.pool_manager.connection_pool_kw["retries"] = urllib3.Retry(total=0, redirect=0)
    rest.pool_manager.clear()


def is_transient(error: BaseException) -> bool:
    """Whether an error may go away on retry: no connection, a timeout, HTTP 5xx or 429."""
    import kfp_server_api
    import urllib3

    if isinstance(error, SubmissionError):
        return error.transient
    if isinstance(error, kfp_server_api.ApiException):
        return error.status in (0, 429) or (error.status or 0) >= 500
    return isinstance(error, OSError | TimeoutError | urllib3.exceptions.HTTPError)


def _is_read_timeout(error: BaseException) -> bool:
    """A request that was sent but not answered in time (the server may have acted on it)."""
    import urllib3

    if isinstance(error, urllib3.exceptions.MaxRetryError):
        error = error.reason or error
    return isinstance(error, urllib3.exceptions.ReadTimeoutError | TimeoutError)


def describe_error(error: BaseException) -> str:
    """One line about an error from kfp, urllib3 or the socket layer (ApiException's str is a page long)."""
    import kfp_server_api
    import urllib3

    if isinstance(error, kfp_server_api.ApiException):
        body = " ".join(str(error.body or "").split())[:300]
        return f"HTTP {error.status} {error.reason}" + (f": {body}" if body else "")
    if isinstance(error, urllib3.exceptions.MaxRetryError) and error.reason is not None:
        return f"{type(error.reason).__name__}: {error.reason}"
    return f"{type(error).__name__}: {error}"


def with_retries(
    action: Callable[[int], T],
    what: str,
    retries: int = 3,
    backoff_s: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[T, int]:
    """Calls `action(attempt)` until it succeeds, retrying transient errors with exponential backoff.

    Args:
        action: Called with the attempt number (1, 2, ...).
        what: What is attempted, for the error message (e.g. "submitting to http://host").
        retries: Retries after the first attempt (`retries + 1` attempts at most).
        backoff_s: Wait before the first retry; doubled before each further one (at most 60 s).
        sleep: Waits; tests pass a recorder.

    Returns:
        The action's result and the number of attempts it took.

    Raises:
        SubmissionError: A non-transient error (at once) or a transient one after the last attempt.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return action(attempt), attempt
        except Exception as error:
            transient = is_transient(error)
            if not transient or attempt > retries:
                detail = str(error) if isinstance(error, SubmissionError) else describe_error(error)
                tries = f"after {attempt} attempts" if attempt > 1 else "on the first attempt"
                kind = "" if transient else " (not retried)"
                raise SubmissionError(
                    f"{what} failed {tries}{kind}: {detail}", attempts=attempt, transient=transient
                ) from error
            sleep(min(backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S))


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """kfp.Client prints experiment and run links to stdout; the caller reports them itself."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def add_retry_arguments(parser: argparse.ArgumentParser, defaults: str = "") -> None:
    """`--retries` and `--backoff`: how hard to try a host that does not answer (None when not given, so that a
    retrain policy's `submit_retries` / `submit_backoff_s` apply; `defaults` says so in the help)."""
    parser.add_argument(
        "--retries",
        type=int,
        default=None,
        help=f"Retries when the host does not answer (default {defaults or DEFAULT_RETRIES}).",
    )
    parser.add_argument(
        "--backoff",
        type=float,
        default=None,
        help=f"Seconds before the first retry, doubled each time (default {defaults or DEFAULT_BACKOFF_S}).",
    )


def kfp_host(host: str | None = None) -> str | None:
    """The Kubeflow Pipelines host: `host`, else `$KFP_HOST`, else None."""
    return host or os.environ.get(ENV_KFP_HOST) or None


def kfp_token() -> str | None:
    """The bearer token for the host, `$KFP_TOKEN` (None when unset): the one place every caller reads it."""
    return os.environ.get(ENV_KFP_TOKEN) or None


def make_submitter(
    host: str | None = None,
    *,
    local: bool = False,
    experiment: str = DEFAULT_EXPERIMENT,
    retries: int | None = None,
    backoff_s: float | None = None,
) -> Submitter:
    """The submitter of every caller (`tns drift --policy`, `tns trigger`, the monitoring pipeline's trigger
    step), built the same way: a `KfpSubmitter` for `host` (or `$KFP_HOST`) with the token of `$KFP_TOKEN` and
    the given retries, else (or with `local`) a `LocalSubmitter`."""
    host = None if local else kfp_host(host)
    if host is None:
        return LocalSubmitter()
    return KfpSubmitter(
        host,
        experiment=experiment,
        retries=DEFAULT_RETRIES if retries is None else retries,
        backoff_s=DEFAULT_BACKOFF_S if backoff_s is None else backoff_s,
        token=kfp_token(),
    )


def display_name_filter(name: str) -> str:
    """A KFP list filter (JSON `Filter` message) selecting resources by display name."""
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})


class KfpSubmitter:
    """Submits the compiled training pipeline to a Kubeflow Pipelines host.

    Args:
        host: KFP API endpoint (http:// or https://).
        experiment: Experiment of the retraining runs (created when missing).
        retries: Retries after the first attempt when the host does not answer.
        backoff_s: Wait before the first retry, doubled before each further one.
        timeout_s: Limit of each HTTP request.
        pipeline_package: Compiled training pipeline (default `pipelines/compiled/training.yaml`).
        token: Bearer token for an authenticated host (sent as a header, never in a request body).
        namespace: Namespace of a multi-user deployment ('' for single-user).
        ui_host: Base URL of the KFP UI for run links (default: `host`).
        sleep: Waits between attempts; tests pass a recorder.
    """

    name = "kfp"

    def __init__(
        self,
        host: str,
        experiment: str = DEFAULT_EXPERIMENT,
        retries: int = DEFAULT_RETRIES,
        backoff_s: float = DEFAULT_BACKOFF_S,
        timeout_s: float = 30.0,
        pipeline_package: str | Path | None = None,
        token: str | None = None,
        namespace: str = "",
        ui_host: str = "",
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if retries < 0 or backoff_s < 0 or timeout_s <= 0:
            raise ValueError("retries and backoff_s must be >= 0 and timeout_s positive")
        self.host = check_host(host)
        self.experiment = experiment
        self.retries = retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.pipeline_package = Path(pipeline_package) if pipeline_package else TRAINING_PACKAGE
        self.token = token
        self.namespace = namespace
        self.ui_host = (ui_host or self.host).rstrip("/")
        self.sleep = sleep

    def run_url(self, run_id: str) -> str:
        """The run's page in the KFP UI."""
        return f"{self.ui_host}/#/runs/details/{run_id}"

    def _client(self) -> Any:
        return connect(self.host, self.token, self.namespace, self.timeout_s)

    def submit(self, request: RetrainRequest) -> SubmittedRun:
        """Creates the run (or finds the one already created for the same request).

        Raises:
            SubmissionError: The package is missing, the host refused the run, or it did not answer after the
                last retry.
        """
        if not self.pipeline_package.is_file():
            raise SubmissionError(f"compiled pipeline {self.pipeline_package} is missing: run `tns compile`")
        arguments = request.pipeline_arguments()

        def attempt(number: int) -> SubmittedRun:
            client = self._client()
            with quiet_stdout():
                experiment = client.create_experiment(name=self.experiment, namespace=self.namespace or None)
                found = client.list_runs(
                    experiment_id=experiment.experiment_id, filter=display_name_filter(request.run_name)
                )
                if found.runs:  # an earlier attempt or evaluation created it: never start a second run
                    run_id = found.runs[0].run_id
                    return SubmittedRun(run_id, self.run_url(run_id), self.name, number, reused=True)
                try:
                    result = client.create_run_from_pipeline_package(
                        str(self.pipeline_package),
                        arguments=arguments,
                        run_name=request.run_name,
                        experiment_id=experiment.experiment_id,
                    )
                except Exception as error:
                    if _is_read_timeout(error):  # the host may still create it: retrying now could make two
                        raise SubmissionError(
                            f"no answer within {self.timeout_s:g} s while creating {request.run_name}; whether "
                            "it was created is unknown, so it is not retried now (the next evaluation of this "
                            "window looks it up by name before creating another)"
                        ) from error
                    raise
            return SubmittedRun(result.run_id, self.run_url(result.run_id), self.name, number)

        run, attempts = with_retries(
            attempt, f"submitting {request.run_name} to {self.host}", self.retries, self.backoff_s, self.sleep
        )
        run.attempts = attempts
        return run

    def run_state(self, run_id: str) -> str | None:
        """The run's KFP state (e.g. `RUNNING`, `SUCCEEDED`), or None when the host cannot tell (one attempt)."""
        try:
            with quiet_stdout():
                state = self._client().get_run(run_id).state
        except Exception:  # unknown is an answer: the caller falls back to the run's age
            return None
        return str(state).upper() if state else None


# Running locally ------------------------------------------------------------------------------------------
Runner = Callable[[list[str], dict[str, str], Path, float | None], int]


def run_process(command: list[str], env: dict[str, str], log_path: Path, timeout_s: float | None) -> int:
    """Runs `command` from the repository root with stdout and stderr into `log_path`; returns its exit code.

    A run past `timeout_s` is killed and counts as failed.
    """
    with log_path.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)
        (log_path.parent / LOCAL_PID_FILE).write_text(str(process.pid), encoding="utf-8")
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            log.write(f"\ntns: killed after {timeout_s:.0f} s (LocalSubmitter timeout)\n")
            return EXIT_FAILED


class LocalSubmitter:
    """Runs the training pipeline on this machine (KFP local runner) in a subprocess and waits for it.

    Each run gets `$TNS_HOME/monitoring/runs/<run id>/` with `request.json` (the `TrainingRequest`),
    `output.log`, `pid` and, once finished, `result.json` (exit code, state, output folder).

    Args:
        home: State folder (default `$TNS_HOME`); the run's pipeline outputs go to `<home>/kfp/`.
        runner: Runs the command and returns its exit code (default `run_process`); tests inject one.
        python: Interpreter of the subprocess.
        timeout_s: Longest a run may take before it is killed (None: no limit).
    """

    name = "local"

    def __init__(
        self,
        home: Path | None = None,
        runner: Runner | None = None,
        python: str = sys.executable,
        timeout_s: float | None = 6 * 3600.0,
    ) -> None:
        self.home = Path(home) if home else tns_home()
        self.runner = runner or run_process
        self.python = python
        self.timeout_s = timeout_s

    @property
    def runs_dir(self) -> Path:
        return self.home / "monitoring" / LOCAL_RUNS_DIR

    def training_request(self, request: RetrainRequest) -> dict[str, Any]:
        """The `pipelines.local.TrainingRequest` fields of the run, as JSON-ready values."""
        return {
            "data": request.data_uri or None,
            "overrides": request.overrides(),
            "trigger_report": request.trigger_report,
            "data_window": request.data_window,
        }

    def build_command(self, request: RetrainRequest) -> list[str]:
        """The subprocess command: `tns run training`, the entry point a user runs, with the request's data,
        overrides, trigger report and data window."""
        command = [self.python, "-m", "pipelines.cli", "run", "training"]
        if request.data_uri:
            command += ["--data", request.data_uri]
        for override in request.overrides():
            command += ["--set", override]
        if request.trigger_report:
            command += ["--trigger-report", request.trigger_report]
        if request.data_window:
            command += ["--data-window", request.data_window]
        return command

    def new_run_id(self, request: RetrainRequest) -> str:
        key = hashlib.sha256(request.idempotency_key.encode("utf-8")).hexdigest()[:8]
        return f"local-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{key}"

    def submit(self, request: RetrainRequest) -> SubmittedRun:
        """Runs the training pipeline to its end; the returned run carries its exit code and state.

        Raises:
            SubmissionError: The subprocess could not be started.
        """
        run_id = self.new_run_id(request)
        run_dir = self.runs_dir / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        request_file = run_dir / LOCAL_REQUEST_FILE
        request_file.write_text(json.dumps(self.training_request(request), indent=2), encoding="utf-8")
        log_path = run_dir / LOCAL_LOG_FILE
        env = {**os.environ, ENV_HOME: str(self.home)}
        started = time.time()
        try:
            exit_code = self.runner(self.build_command(request), env, log_path, self.timeout_s)
        except OSError as error:
            raise SubmissionError(f"could not start the local training run: {error}") from error
        output_dir = _output_dir(log_path) or _newest_pipeline_dir(self.home / "kfp", started)
        state = STATE_SUCCEEDED if exit_code in (EXIT_OK, EXIT_NOT_BLESSED) else STATE_FAILED
        error = (
            ""
            if state == STATE_SUCCEEDED
            else f"local training run exited with code {exit_code}; log {log_path}"
        )
        result = {"exit_code": exit_code, "state": state, "output_dir": output_dir, "log": str(log_path)}
        (run_dir / LOCAL_RESULT_FILE).write_text(json.dumps(result, indent=2), encoding="utf-8")
        url = Path(output_dir or run_dir).resolve().as_uri()
        return SubmittedRun(run_id, url, self.name, 1, state, exit_code, output_dir, error=error)

    def run_state(self, run_id: str) -> str | None:
        """From the run folder: the recorded final state, `RUNNING` while its process lives, else None."""
        run_dir = self.runs_dir / run_id
        result = run_dir / LOCAL_RESULT_FILE
        if result.is_file():
            with contextlib.suppress(ValueError, OSError):
                return json.loads(result.read_text(encoding="utf-8")).get("state")
        pid_file = run_dir / LOCAL_PID_FILE
        if pid_file.is_file():
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(pid_file.read_text(encoding="utf-8")), 0)
                return STATE_RUNNING
        return None


def _output_dir(log_path: Path) -> str:
    """The pipeline output folder that `tns run training` prints at the end ('outputs in DIR')."""
    with contextlib.suppress(OSError):
        for line in reversed(log_path.read_text(encoding="utf-8", errors="replace").splitlines()):
            match = re.search(r"outputs in (\S.*)$", line)
            if match:
                return match.group(1).strip()
    return ""


def _newest_pipeline_dir(root: Path, after: float) -> str:
    runs = [p for p in root.glob("tns-training-*") if p.is_dir() and p.stat().st_mtime >= after - 1]
    return str(max(runs, key=lambda p: p.stat().st_mtime)) if runs else ""
