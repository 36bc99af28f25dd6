"""Submitting a retraining run of the training pipeline: what every submitter shares, and the choice of one.

- `RetrainRequest` is the run to submit, `SubmittedRun` the run a submitter started, `Submitter` the protocol
  of both submitters, and `SubmissionError` what they raise when a run could not be submitted.
- `make_submitter` builds the submitter of every caller: a `monitoring.kfp_submitter.KfpSubmitter` for a
  Kubeflow Pipelines host, else a `monitoring.local_submitter.LocalSubmitter` that runs the pipeline on this
  machine.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Protocol

DEFAULT_EXPERIMENT = "tns-retraining"
# KFP v2beta1 run states after which a run no longer runs.
TERMINAL_STATES = frozenset({"SUCCEEDED", "SKIPPED", "FAILED", "CANCELED"})
STATE_SUCCEEDED = "SUCCEEDED"
STATE_FAILED = "FAILED"
STATE_RUNNING = "RUNNING"
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF_S = 1.0


class SubmissionError(RuntimeError):
    """A run could not be submitted; `attempts` were made and the last error is in the message."""

    def __init__(self, message: str, attempts: int = 1, transient: bool = False) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.transient = transient


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
        """Configuration overrides of the run, with the rules' model name when it is not the default."""
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
            from core.config.loading import load_run_config

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


def make_submitter(
    host: str | None = None,
    *,
    local: bool = False,
    experiment: str = DEFAULT_EXPERIMENT,
    retries: int | None = None,
    backoff_s: float | None = None,
) -> Submitter:
    """The submitter of every caller (`tns drift --retrain-rules`, `tns trigger`, the monitoring pipeline's trigger
    step), built the same way: a `KfpSubmitter` for `host` (or `$KFP_HOST`) with the token of `$KFP_TOKEN` and
    the given retries, else (or with `local`) a `LocalSubmitter`."""
    from monitoring.kfp_submitter import KfpSubmitter, kfp_host, kfp_token
    from monitoring.local_submitter import LocalSubmitter

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
