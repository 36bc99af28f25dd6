"""Submitting a retraining run to a Kubeflow Pipelines host, and talking to such a host.

`KfpSubmitter` sends the compiled `pipelines/compiled/training.yaml` to a Kubeflow Pipelines host through
`kfp.Client`. A host that does not answer (connection refused, timeout, HTTP 5xx/429) is retried with
exponential backoff; after the last attempt `SubmissionError` says why. Before creating a run it looks for a
run of the same name in the experiment, so a retry after a lost answer never starts a second run; a create
that got no answer within the timeout is not retried at once (the host may still be creating it) but left to
the next evaluation, which finds it by name.

The helpers that talk to a host (`connect`, `with_retries`, `quiet_stdout`, ...) serve `monitoring.schedule`
too. `kfp` is imported inside the functions that talk to a host, never at module import.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from core.common.env import compiled_pipeline
from monitoring.submitters import (
    DEFAULT_BACKOFF_S,
    DEFAULT_EXPERIMENT,
    DEFAULT_RETRIES,
    RetrainRequest,
    SubmissionError,
    SubmittedRun,
)

TRAINING_PACKAGE = compiled_pipeline("training")
ENV_KFP_HOST = "KFP_HOST"
ENV_KFP_TOKEN = "KFP_TOKEN"  # bearer token for a host behind authentication; sent as a header only
HEALTHZ_PATH = "/apis/v2beta1/healthz"
MAX_BACKOFF_S = 60.0

T = TypeVar("T")


class HostUnavailable(ConnectionError):
    """The host did not answer its health check (refused, timed out or answered 5xx/429): worth a retry."""


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


def kfp_host(host: str | None = None) -> str | None:
    """The Kubeflow Pipelines host: `host`, else `$KFP_HOST`, else None."""
    return host or os.environ.get(ENV_KFP_HOST) or None


def kfp_token() -> str | None:
    """The bearer token for the host, `$KFP_TOKEN` (None when unset): the one place every caller reads it."""
    return os.environ.get(ENV_KFP_TOKEN) or None


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
