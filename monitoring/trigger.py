"""The retraining trigger: applies a retrain policy to a drift summary, with guardrails, and records the decision.

`evaluate_trigger` checks, in this order, and stops at the first that holds:

1. insufficient data: the drift check said `insufficient_data`, or the current window has fewer than
   `min_rows` rows;
2. no drift: fewer than `min_signals` signals match the policy's rules;
3. duplicate window: a run already fired for this model and window (same window twice submits at most once);
4. in flight: `max_in_flight` fired runs of the model have not finished (asked of the submitter; a run
   older than `max_run_hours` counts as finished);
5. cooldown: the model's last fired run is less than `cooldown_hours` old;
6. dry run: record what would be submitted;
7. submit: `fired` with the run's id and link, or `submission_failed` with the error.

Every decision, whatever its outcome, is one line of the append-only `DecisionLedger` (`$TNS_LEDGER`, the
monitoring state volume the compiled pipeline mounts, or `$TNS_HOME/monitoring/decisions.jsonl`: see
`default_ledger_path`), and `trigger_decision.json` beside the drift summary holds the latest
one: the report names the run; the run's `trigger_report` and `data_window` parameters name the report.
Evaluations of one model are serialized by a per-model file lock held from reading the ledger to appending.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from core.common.config import ConfigError
from core.common.constants import (
    ENV_LEDGER,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    MONITORING_STATE_MOUNT,
    MONITORING_STATE_PVC,
)
from core.common.env import tns_home
from monitoring.policy import RetrainPolicy
from monitoring.submitters import (
    DEFAULT_EXPERIMENT,
    ENV_KFP_HOST,
    ENV_KFP_TOKEN,
    STATE_FAILED,
    TERMINAL_STATES,
    KfpSubmitter,
    LocalSubmitter,
    RetrainRequest,
    SubmissionError,
    SubmittedRun,
    Submitter,
    add_retry_arguments,
    kfp_host,
    make_submitter,
)

__all__ = [
    "OUTCOMES",
    "DecisionLedger",
    "KfpSubmitter",
    "LocalSubmitter",
    "RetrainRequest",
    "SubmissionError",
    "SubmittedRun",
    "Submitter",
    "TriggerDecision",
    "TriggerError",
    "add_trigger_arguments",
    "evaluate_trigger",
    "load_summary",
    "run_trigger",
]

LEDGER_VERSION = 1
SUPPORTED_SUMMARY_VERSIONS = (1,)
DECISIONS_FILE = "decisions.jsonl"
TRIGGER_DECISION_FILE = "trigger_decision.json"

FIRED = "fired"
DRY_RUN = "dry_run"
NO_DRIFT = "no_drift"
SUPPRESSED_COOLDOWN = "suppressed_cooldown"
SUPPRESSED_IN_FLIGHT = "suppressed_in_flight"
INSUFFICIENT_DATA = "insufficient_data"
DUPLICATE_WINDOW = "duplicate_window"
SUBMISSION_FAILED = "submission_failed"
OUTCOMES: tuple[str, ...] = (
    FIRED,
    DRY_RUN,
    NO_DRIFT,
    SUPPRESSED_COOLDOWN,
    SUPPRESSED_IN_FLIGHT,
    INSUFFICIENT_DATA,
    DUPLICATE_WINDOW,
    SUBMISSION_FAILED,
)


class TriggerError(ValueError):
    """The drift summary cannot be evaluated (missing, malformed, another schema version or another model)."""


class LockTimeout(TimeoutError):
    """Another evaluation of the same model held the lock for longer than the caller waits."""


# The ledger ------------------------------------------------------------------------------------------------
class LedgerLocationError(RuntimeError):
    """The decision ledger would live where it is lost (inside a pod's own filesystem)."""


def default_ledger_path() -> Path:
    """Where the decision ledger lives when no path is given: `$TNS_LEDGER`; else, when the monitoring state
    volume is mounted (`MONITORING_STATE_MOUNT`, as the compiled monitoring pipeline does), a file on it; else
    `$TNS_HOME/monitoring/decisions.jsonl`.

    Raises:
        LedgerLocationError: Inside a Kubernetes pod without the volume or `$TNS_LEDGER`: the ledger (and with it
            the cooldown, in-flight and duplicate-window guards) would reset with every pod.
    """
    if os.environ.get(ENV_LEDGER):
        return Path(os.environ[ENV_LEDGER])
    if os.path.ismount(MONITORING_STATE_MOUNT):
        return Path(MONITORING_STATE_MOUNT) / DECISIONS_FILE
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        raise LedgerLocationError(
            f"the decision ledger would be written inside this pod ({tns_home() / 'monitoring'}) and lost with it, "
            f"so cooldown, in-flight and duplicate-window guards would reset every run: mount the "
            f"PersistentVolumeClaim {MONITORING_STATE_PVC!r} at {MONITORING_STATE_MOUNT} (the compiled monitoring "
            f"pipeline does; create the claim first, see docs/runbook.md), or pass ledger_uri / ${ENV_LEDGER} on "
            "persistent storage"
        )
    return tns_home() / "monitoring" / DECISIONS_FILE


class DecisionLedger:
    """Append-only JSON Lines file of trigger decisions, safe for concurrent appenders (fcntl locks).

    Args:
        path: The ledger file (default `default_ledger_path()`); created on the first append.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else default_ledger_path()

    def append(self, record: dict[str, Any]) -> None:
        """Appends one record as one line, under an exclusive lock, flushed to disk before returning."""
        line = json.dumps(record, sort_keys=True, default=str) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                size = handle.seek(0, os.SEEK_END)
                if size:
                    handle.seek(size - 1)
                    if handle.read(1) != b"\n":
                        # A torn last line (a crash mid-append): end it, or this record would join it and be
                        # unreadable, and the decision it records (a window that fired) would be lost.
                        line = "\n" + line
                handle.write(line.encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def records(self, model: str | None = None) -> list[dict[str, Any]]:
        """Every readable record in append order (optionally one model's); unreadable lines are skipped."""
        if not self.path.is_file():
            return []
        with self.path.open("r", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)
            try:
                lines = handle.read().splitlines()
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        records = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and (model is None or record.get("model") == model):
                records.append(record)
        return records

    @contextlib.contextmanager
    def model_lock(self, model: str, timeout_s: float = 60.0, poll_s: float = 0.05) -> Iterator[None]:
        """Holds the model's decision lock (`locks/<model>.lock` beside the ledger).

        Raises:
            LockTimeout: Another evaluation held it for `timeout_s`.
        """
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
        lock_path = self.path.parent / "locks" / f"{safe}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout_s
        with lock_path.open("a") as handle:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LockTimeout(
                            f"another trigger evaluation of '{model}' holds {lock_path}"
                        ) from None
                    time.sleep(poll_s)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


# The decision ----------------------------------------------------------------------------------------------
@dataclass
class TriggerDecision:
    """One decision of the trigger; `to_record()` is its ledger line (plus `idempotency_key` = `model:window_id`).

    Attributes:
        decided_at: ISO-8601 UTC time of the decision.
        model: Registered model the policy retrains.
        window_id: Drift window id from the summary; with `model`, the idempotency key.
        window_start: ISO-8601 start of the current window.
        window_end: ISO-8601 end of the current window.
        outcome: One of `OUTCOMES`.
        reasons: Why, in sentences (thresholds and observed values).
        matched_signals: Signals that matched a rule: name, group, score, threshold, severity, drifted, rule.
        model_version: Version of the served model the drift was measured on.
        window_path: Folder of the current window.
        drift_status: The drift check's status (`drift`, `no_drift`, `insufficient_data`).
        current_rows: Rows in the current window.
        dry_run: Whether the policy was a dry run.
        submitter: `kfp`, `local` or '' (dry run without a target).
        run_name: Name of the (would-be) run, `retrain-<model>-<window id prefix>`.
        run_id: The started run (`fired`), or the earlier run of the window (`duplicate_window`).
        run_url: Link to that run (KFP UI, or file:// of a local run's outputs).
        run_state: State known at decision time (local runs have finished: SUCCEEDED or FAILED).
        run_exit_code: Exit code of a local run (0 blessed, 3 not blessed, 1 failed).
        run_output: Output folder of a local run.
        attempts: Submission attempts made.
        data_uri: Dataset the run was (or would be) given.
        error: Why the submission (or a local run) failed.
        report_path: The drift report (HTML) that the decision is about.
        summary_path: The drift summary (JSON) that the decision is about.
        ledger_version: Version of this record format.
    """

    decided_at: str
    model: str
    window_id: str
    window_start: str
    window_end: str
    outcome: str = ""
    reasons: list[str] = field(default_factory=list)
    matched_signals: list[dict[str, Any]] = field(default_factory=list)
    model_version: str = ""
    window_path: str = ""
    drift_status: str = ""
    current_rows: int | None = None
    dry_run: bool = False
    submitter: str = ""
    run_name: str = ""
    run_id: str = ""
    run_url: str = ""
    run_state: str | None = None
    run_exit_code: int | None = None
    run_output: str = ""
    attempts: int = 0
    data_uri: str = ""
    error: str = ""
    report_path: str = ""
    summary_path: str = ""
    ledger_version: int = LEDGER_VERSION

    @property
    def idempotency_key(self) -> str:
        return f"{self.model}:{self.window_id}"

    @property
    def submitted(self) -> bool:
        """True when this decision started a retraining run."""
        return self.outcome == FIRED

    def to_record(self) -> dict[str, Any]:
        return {**asdict(self), "idempotency_key": self.idempotency_key}

    def describe(self) -> str:
        """A few lines for people: outcome, window, reasons, run."""
        lines = [
            f"trigger decision: {self.outcome} for model '{self.model}'"
            + (f" version {self.model_version}" if self.model_version else ""),
            f"  window   {self.window_id[:16]} ({self.window_start} .. {self.window_end}), "
            f"{self.current_rows if self.current_rows is not None else '?'} rows, drift status {self.drift_status or '?'}",
        ]
        lines += [f"  - {reason}" for reason in self.reasons]
        if self.run_id:
            state = f", state {self.run_state}" if self.run_state else ""
            lines.append(f"  run      {self.run_id} ({self.submitter}{state})  {self.run_url}")
        if self.error:
            lines.append(f"  error    {self.error}")
        if self.report_path:
            lines.append(f"  report   {self.report_path}")
        return "\n".join(lines)


def retraining_failed(record: dict[str, Any] | None) -> bool:
    """Whether a decision record says retraining was due but did not happen: the submission failed, or the run
    started on this machine failed."""
    if not record:
        return False
    outcome = record.get("outcome")
    return outcome == SUBMISSION_FAILED or (outcome == FIRED and record.get("run_state") == STATE_FAILED)


def load_summary(summary: dict[str, Any] | str | Path) -> dict[str, Any]:
    """The drift summary as a dict (read from `summary.json` when given a path), checked for what the trigger reads.

    Raises:
        TriggerError: Unreadable, another log schema version, or a required key missing.
    """
    if not isinstance(summary, dict):
        path = Path(summary)
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise TriggerError(f"cannot read drift summary {path}: {error.strerror or error}") from None
        except ValueError as error:
            raise TriggerError(f"drift summary {path} is not valid JSON: {error}") from None
        if not isinstance(summary, dict):
            raise TriggerError(f"drift summary {path} must hold a JSON object")
        summary.setdefault("summary_json", str(path.resolve()))
    version = summary.get("log_schema_version")
    if version not in SUPPORTED_SUMMARY_VERSIONS:
        raise TriggerError(
            f"drift summary log_schema_version {version!r} is not supported (supported: {SUPPORTED_SUMMARY_VERSIONS})"
        )
    missing = [
        key
        for key, ok in (
            ("status", isinstance(summary.get("status"), str)),
            ("window.id", isinstance(summary.get("window"), dict) and bool(summary["window"].get("id"))),
            ("current.rows", isinstance(summary.get("current"), dict) and "rows" in summary["current"]),
            ("signals", isinstance(summary.get("signals"), list)),
        )
        if not ok
    ]
    if missing:
        raise TriggerError(f"drift summary lacks {missing}")
    return summary


def _parse_time(text: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _fmt_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:.1f} h"


def retraining_data(policy: RetrainPolicy) -> tuple[str, str]:
    """The retraining run's `data_uri` and a sentence on where it comes from: the policy's `training_data_uri`,
    else '' (the training pipeline's default dataset). Nothing found beside the logs is used: whoever can write
    the log store must not choose what the next model learns from."""
    if policy.training_data_uri:
        return policy.training_data_uri, f"retraining data: training_data_uri {policy.training_data_uri}"
    return (
        "",
        "retraining data: the training pipeline's default dataset (the policy names no training_data_uri)",
    )


def evaluate_trigger(
    summary: dict[str, Any] | str | Path,
    policy: RetrainPolicy,
    ledger: DecisionLedger,
    submitter: Submitter | None,
    now: datetime | None = None,
    lock_timeout_s: float = 60.0,
) -> TriggerDecision:
    """Decides whether the drift summary starts a retraining run, starts it if so, and records the decision.

    Args:
        summary: The drift check's summary (dict or path of `summary.json`).
        policy: The retrain policy.
        ledger: Where the decision is appended (and past decisions are read).
        submitter: Starts runs and reports their state; may be None only for a dry-run policy.
        now: The decision time (default: now, UTC).
        lock_timeout_s: How long to wait for a concurrent evaluation of the same model.

    Returns:
        The recorded decision. A failed submission is a decision too (`submission_failed`), never an exception.

    Raises:
        TriggerError: The summary cannot be evaluated or concerns another model.
    """
    summary = load_summary(summary)
    if submitter is None and not policy.dry_run:
        raise ValueError("evaluate_trigger needs a submitter unless the policy is a dry run")
    now = (now or datetime.now(UTC)).astimezone(UTC)
    model_info = summary.get("model") or {}
    if model_info.get("name") and model_info["name"] != policy.model_name:
        raise TriggerError(
            f"the drift summary is for model '{model_info['name']}' but the policy retrains '{policy.model_name}'"
        )
    window = summary["window"]
    decision = TriggerDecision(
        decided_at=_fmt_time(now),
        model=policy.model_name,
        model_version=str(model_info.get("version") or ""),
        window_id=str(window["id"]),
        window_start=str(window.get("start") or ""),
        window_end=str(window.get("end") or ""),
        window_path=str(window.get("path") or ""),
        drift_status=summary["status"],
        current_rows=summary["current"].get("rows"),
        dry_run=policy.dry_run,
        submitter=submitter.name if submitter else "",
        report_path=str(summary.get("report_html") or ""),
        summary_path=str(summary.get("summary_json") or ""),
    )
    try:
        with ledger.model_lock(policy.model_name, lock_timeout_s):
            decision = _decide(summary, policy, ledger, submitter, now, decision)
            ledger.append(decision.to_record())
    except LockTimeout as error:
        decision = replace(
            decision,
            outcome=SUPPRESSED_IN_FLIGHT,
            reasons=[
                f"{error} for more than {lock_timeout_s:g} s (a submission or local run is in progress)"
            ],
        )
        ledger.append(decision.to_record())
    _write_beside_summary(decision)
    return decision


def _decide(
    summary: dict[str, Any],
    policy: RetrainPolicy,
    ledger: DecisionLedger,
    submitter: Submitter | None,
    now: datetime,
    decision: TriggerDecision,
) -> TriggerDecision:
    rows = decision.current_rows
    # 1. Enough data?
    if summary["status"] == INSUFFICIENT_DATA or not isinstance(rows, int) or rows < policy.min_rows:
        reasons = []
        if summary["status"] == INSUFFICIENT_DATA:
            reasons.append("the drift check reported insufficient_data")
        if not isinstance(rows, int) or rows < policy.min_rows:
            reasons.append(f"current window has {rows} rows, fewer than min_rows {policy.min_rows}")
        return replace(decision, outcome=INSUFFICIENT_DATA, reasons=reasons)

    # 2. Drift that counts?
    matched = policy.matching_signals(summary["signals"])
    names = sorted({m["name"] for m in matched})
    decision.matched_signals = [
        {key: m.get(key) for key in ("name", "group", "score", "threshold", "severity", "drifted", "rule")}
        for m in matched
    ]
    if len(names) < policy.min_signals:
        rules = ", ".join(rule.describe() for rule in policy.signals)
        drifted = [s.get("name") for s in summary["signals"] if s.get("drifted")]
        return replace(
            decision,
            outcome=NO_DRIFT,
            reasons=[
                f"{len(names)} matching signal(s) {names}, min_signals {policy.min_signals} (rules: {rules})",
                f"drift status {summary['status']}; drifted signals: {drifted or 'none'}",
            ],
        )
    signal_reason = f"{len(names)} matching signal(s): " + ", ".join(
        f"{m['name']} (score {m.get('score')}, severity {m.get('severity')}; {m['rule']})" for m in matched
    )

    records = ledger.records(policy.model_name)
    fired = [r for r in records if r.get("outcome") == FIRED]
    # 3. Same window already submitted?
    earlier = next((r for r in fired if r.get("window_id") == decision.window_id), None)
    if earlier is not None:
        return replace(
            decision,
            outcome=DUPLICATE_WINDOW,
            reasons=[
                f"window {decision.window_id[:16]} already fired run {earlier.get('run_id')} at "
                f"{earlier.get('decided_at')}: at most one run per window",
                signal_reason,
            ],
            run_id=str(earlier.get("run_id") or ""),
            run_url=str(earlier.get("run_url") or ""),
            run_name=str(earlier.get("run_name") or ""),
        )

    # 4. Another run of the model still in flight?
    unfinished = _unfinished_runs(fired, submitter, now, policy)
    if len(unfinished) >= policy.max_in_flight:
        return replace(
            decision,
            outcome=SUPPRESSED_IN_FLIGHT,
            reasons=[
                f"{len(unfinished)} retraining run(s) of '{policy.model_name}' not finished "
                f"(max_in_flight {policy.max_in_flight}): " + "; ".join(unfinished),
                signal_reason,
            ],
        )

    # 5. Cooldown since the last fired run?
    last = max(fired, key=lambda r: _parse_time(r.get("decided_at")) or now, default=None)
    last_at = _parse_time(last.get("decided_at")) if last else None
    if last_at is not None and now - last_at < timedelta(hours=policy.cooldown_hours):
        until = last_at + timedelta(hours=policy.cooldown_hours)
        return replace(
            decision,
            outcome=SUPPRESSED_COOLDOWN,
            reasons=[
                f"last retraining run {last.get('run_id')} fired at {_fmt_time(last_at)} ({_hours(now - last_at)} "
                f"ago), cooldown {policy.cooldown_hours:g} h: next run allowed after {_fmt_time(until)}",
                signal_reason,
            ],
        )

    # 6./7. Dry run or submit.
    data_uri, data_reason = retraining_data(policy)
    request = RetrainRequest(
        model_name=policy.model_name,
        window_id=decision.window_id,
        window_start=decision.window_start,
        window_end=decision.window_end,
        data_uri=data_uri,
        trigger_report=decision.report_path or decision.summary_path,
        config_overrides=tuple(policy.config_overrides),
    )
    decision = replace(decision, data_uri=data_uri, run_name=request.run_name)
    if policy.dry_run:
        return replace(
            decision,
            outcome=DRY_RUN,
            reasons=[
                signal_reason,
                f"dry run: would submit {request.run_name} with parameters {request.pipeline_arguments()}",
                data_reason,
            ],
        )
    assert submitter is not None  # checked by evaluate_trigger
    try:
        run = submitter.submit(request)
    except Exception as error:  # recorded, never lost: even a bug in a submitter leaves a decision behind
        expected = isinstance(error, SubmissionError)
        return replace(
            decision,
            outcome=SUBMISSION_FAILED,
            reasons=[
                signal_reason,
                data_reason,
                "submission failed; the next evaluation of this window retries",
            ],
            error=str(error) if expected else f"unexpected {type(error).__name__}: {error}",
            attempts=error.attempts if expected else 1,
        )
    reasons = [signal_reason, data_reason]
    if run.reused:
        reasons.append(f"run {run.run_id} named {request.run_name} already existed: nothing new was started")
    return replace(
        decision,
        outcome=FIRED,
        reasons=reasons,
        run_id=run.run_id,
        run_url=run.url,
        run_state=run.state,
        run_exit_code=run.exit_code,
        run_output=run.output_dir,
        attempts=run.attempts,
        error=run.error,
    )


def _unfinished_runs(
    fired: list[dict[str, Any]], submitter: Submitter | None, now: datetime, policy: RetrainPolicy
) -> list[str]:
    """Descriptions of fired runs that may still run: state not terminal (or unknown) and younger than max age."""
    unfinished = []
    max_age = timedelta(hours=policy.max_run_hours)
    for record in fired:
        at = _parse_time(record.get("decided_at"))
        if at is None or now - at > max_age:
            continue  # too old to still be running
        run_id = str(record.get("run_id") or "")
        state = record.get("run_state")
        if (
            state not in TERMINAL_STATES
            and submitter is not None
            and record.get("submitter") == submitter.name
        ):
            state = submitter.run_state(run_id)
        if state in TERMINAL_STATES:
            continue
        known = f"state {state}" if state else "state unknown"
        unfinished.append(
            f"{run_id} fired {_fmt_time(at)} ({known}; counts as finished after {policy.max_run_hours:g} h)"
        )
    return unfinished


def _write_beside_summary(decision: TriggerDecision) -> None:
    """`trigger_decision.json` next to the summary: the drift report's link to the run (best effort)."""
    if not decision.summary_path:
        return
    folder = Path(decision.summary_path).parent
    if folder.is_dir():
        with contextlib.suppress(OSError):
            target = folder / TRIGGER_DECISION_FILE
            target.write_text(json.dumps(decision.to_record(), indent=2, sort_keys=True), encoding="utf-8")


# `tns trigger` -------------------------------------------------------------------------------------------
def add_trigger_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the options of `tns trigger` to `parser`."""
    parser.add_argument(
        "--summary", type=Path, required=True, help="summary.json written by the drift check."
    )
    parser.add_argument(
        "--policy",
        type=Path,
        default=None,
        help="Retrain policy YAML (default: the built-in default policy).",
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--kfp-host",
        default=None,
        help=f"Kubeflow Pipelines API endpoint to submit to (default ${ENV_KFP_HOST}); bearer token from ${ENV_KFP_TOKEN}.",
    )
    target.add_argument(
        "--local", action="store_true", help="Run the training pipeline here with the KFP local runner."
    )
    parser.add_argument("--dry-run", action="store_true", help="Decide and record, submit nothing.")
    add_retry_arguments(parser, defaults="the policy's submit_retries / submit_backoff_s")
    parser.add_argument(
        "--experiment",
        default=DEFAULT_EXPERIMENT,
        help=f"KFP experiment of the runs (default {DEFAULT_EXPERIMENT}).",
    )
    parser.add_argument(
        "--ledger",
        type=Path,
        default=None,
        help="Decision ledger (default $TNS_LEDGER, else $TNS_HOME/monitoring/decisions.jsonl).",
    )
    parser.add_argument("--json", action="store_true", help="Print the decision record as JSON.")
    return parser


def run_trigger(args: argparse.Namespace) -> int:
    """Runs `tns trigger`: evaluates the policy on an existing summary and prints the decision.

    Returns:
        0 when a decision was recorded (whatever it was); 1 when the submission failed or the local run failed;
        2 for a usage error (bad policy, unreadable summary, no target).
    """
    try:
        policy = RetrainPolicy.from_yaml(args.policy) if args.policy else RetrainPolicy()
        if args.dry_run:
            policy = replace(policy, dry_run=True)
        submitter: Submitter | None = None
        if args.local or kfp_host(args.kfp_host):
            submitter = make_submitter(
                args.kfp_host,
                local=args.local,
                experiment=args.experiment,
                retries=policy.submit_retries if args.retries is None else args.retries,
                backoff_s=policy.submit_backoff_s if args.backoff is None else args.backoff,
            )
        elif not policy.dry_run:
            raise ConfigError(f"give --kfp-host URL (or set {ENV_KFP_HOST}), --local, or --dry-run")
        decision = evaluate_trigger(args.summary, policy, DecisionLedger(args.ledger), submitter)
    except (ConfigError, TriggerError, ValueError, LedgerLocationError) as error:
        print(f"tns: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(decision.to_record(), indent=2, sort_keys=True) if args.json else decision.describe())
    if retraining_failed(decision.to_record()):
        return EXIT_FAILED
    return EXIT_OK
