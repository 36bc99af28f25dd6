"""The retraining trigger: applies the retrain rules to a drift summary, with guardrails, and records the decision.

`evaluate_trigger` checks, in this order, and stops at the first that holds:

1. insufficient data: the drift check said `insufficient_data`, or the current window has fewer than
   `min_rows` rows;
2. no drift: fewer than `min_signals` signals match the retrain rules' signal rules;
3. duplicate window: a run already fired for this model and window (same window twice submits at most once);
4. in flight: `max_in_flight` fired runs of the model have not finished (asked of the submitter; a run
   older than `max_run_hours` counts as finished);
5. cooldown: the model's last fired run is less than `cooldown_hours` old;
6. dry run: record what would be submitted;
7. submit: `fired` with the run's id and link, or `submission_failed` with the error.

Every decision, whatever its outcome, is one line of the append-only `DecisionLedger`
(`monitoring.decision_ledger`), and `trigger_decision.json` beside the drift summary holds the latest
one: the report names the run; the run's `trigger_report` and `data_window` parameters name the report.
Evaluations of one model are serialized by a per-model file lock held from reading the ledger to appending.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from core.common.constants import TRIGGER_DECISION_FILE
from core.config.retrain_rules import RetrainRules
from monitoring.decision_ledger import DecisionLedger, LockTimeout
from monitoring.submitters import (
    STATE_FAILED,
    TERMINAL_STATES,
    RetrainRequest,
    SubmissionError,
    Submitter,
)

LEDGER_VERSION = 1
SUPPORTED_SUMMARY_VERSIONS = (1,)

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


# The decision ----------------------------------------------------------------------------------------------
@dataclass
class TriggerDecision:
    """One decision of the trigger; `to_record()` is its ledger line (plus `idempotency_key` = `model:window_id`).

    Attributes:
        decided_at: ISO-8601 UTC time of the decision.
        model: Registered model the retrain rules retrain.
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
        dry_run: Whether the retrain rules were a dry run.
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


def evaluate_trigger(
    summary: dict[str, Any] | str | Path,
    rules: RetrainRules,
    ledger: DecisionLedger,
    submitter: Submitter | None,
    now: datetime | None = None,
    lock_timeout_s: float = 60.0,
) -> TriggerDecision:
    """Decides whether the drift summary starts a retraining run, starts it if so, and records the decision.

    Args:
        summary: The drift check's summary (dict or path of `summary.json`).
        rules: The retrain rules.
        ledger: Where the decision is appended (and past decisions are read).
        submitter: Starts runs and reports their state; may be None only when the rules are a dry run.
        now: The decision time (default: now, UTC).
        lock_timeout_s: How long to wait for a concurrent evaluation of the same model.

    Returns:
        The recorded decision. A failed submission is a decision too (`submission_failed`), never an exception.

    Raises:
        TriggerError: The summary cannot be evaluated or concerns another model.
    """
    summary = load_summary(summary)
    if submitter is None and not rules.dry_run:
        raise ValueError("evaluate_trigger needs a submitter unless the retrain rules are a dry run")
    now = (now or datetime.now(UTC)).astimezone(UTC)
    model_info = summary.get("model") or {}
    if model_info.get("name") and model_info["name"] != rules.model_name:
        raise TriggerError(
            f"the drift summary is for model '{model_info['name']}' but the retrain rules retrain '{rules.model_name}'"
        )
    window = summary["window"]
    decision = TriggerDecision(
        decided_at=_fmt_time(now),
        model=rules.model_name,
        model_version=str(model_info.get("version") or ""),
        window_id=str(window["id"]),
        window_start=str(window.get("start") or ""),
        window_end=str(window.get("end") or ""),
        window_path=str(window.get("path") or ""),
        drift_status=summary["status"],
        current_rows=summary["current"].get("rows"),
        dry_run=rules.dry_run,
        submitter=submitter.name if submitter else "",
        report_path=str(summary.get("report_html") or ""),
        summary_path=str(summary.get("summary_json") or ""),
    )
    try:
        with ledger.model_lock(rules.model_name, lock_timeout_s):
            decision = _apply_guardrails(summary, rules, ledger, submitter, now, decision)
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


def _apply_guardrails(
    summary: dict[str, Any],
    rules: RetrainRules,
    ledger: DecisionLedger,
    submitter: Submitter | None,
    now: datetime,
    decision: TriggerDecision,
) -> TriggerDecision:
    rows = decision.current_rows
    # 1. Enough data?
    if summary["status"] == INSUFFICIENT_DATA or not isinstance(rows, int) or rows < rules.min_rows:
        reasons = []
        if summary["status"] == INSUFFICIENT_DATA:
            reasons.append("the drift check reported insufficient_data")
        if not isinstance(rows, int) or rows < rules.min_rows:
            reasons.append(f"current window has {rows} rows, fewer than min_rows {rules.min_rows}")
        return replace(decision, outcome=INSUFFICIENT_DATA, reasons=reasons)

    # 2. Drift that counts?
    matched = rules.matching_signals(summary["signals"])
    names = sorted({m["name"] for m in matched})
    decision.matched_signals = [
        {key: m.get(key) for key in ("name", "group", "score", "threshold", "severity", "drifted", "rule")}
        for m in matched
    ]
    if len(names) < rules.min_signals:
        described = ", ".join(rule.describe() for rule in rules.signals)
        drifted = [s.get("name") for s in summary["signals"] if s.get("drifted")]
        return replace(
            decision,
            outcome=NO_DRIFT,
            reasons=[
                f"{len(names)} matching signal(s) {names}, min_signals {rules.min_signals} (rules: {described})",
                f"drift status {summary['status']}; drifted signals: {drifted or 'none'}",
            ],
        )
    signal_reason = f"{len(names)} matching signal(s): " + ", ".join(
        f"{m['name']} (score {m.get('score')}, severity {m.get('severity')}; {m['rule']})" for m in matched
    )

    records = ledger.records(rules.model_name)
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
    unfinished = _unfinished_runs(fired, submitter, now, rules)
    if len(unfinished) >= rules.max_in_flight:
        return replace(
            decision,
            outcome=SUPPRESSED_IN_FLIGHT,
            reasons=[
                f"{len(unfinished)} retraining run(s) of '{rules.model_name}' not finished "
                f"(max_in_flight {rules.max_in_flight}): " + "; ".join(unfinished),
                signal_reason,
            ],
        )

    # 5. Cooldown since the last fired run?
    last = max(fired, key=lambda r: _parse_time(r.get("decided_at")) or now, default=None)
    last_at = _parse_time(last.get("decided_at")) if last else None
    if last_at is not None and now - last_at < timedelta(hours=rules.cooldown_hours):
        until = last_at + timedelta(hours=rules.cooldown_hours)
        return replace(
            decision,
            outcome=SUPPRESSED_COOLDOWN,
            reasons=[
                f"last retraining run {last.get('run_id')} fired at {_fmt_time(last_at)} ({_hours(now - last_at)} "
                f"ago), cooldown {rules.cooldown_hours:g} h: next run allowed after {_fmt_time(until)}",
                signal_reason,
            ],
        )

    # 6./7. Dry run or submit.
    from core.data.lineage import LineageError
    from monitoring.retraining_data import RetrainingDataError, retraining_data_uri

    try:
        data_uri, data_reason = retraining_data_uri(
            rules, decision.window_id, decision.window_path, build=not rules.dry_run
        )
    except (RetrainingDataError, LineageError, OSError, ValueError) as error:
        return replace(
            decision,
            outcome=SUBMISSION_FAILED,
            reasons=[signal_reason, "the retraining dataset could not be built; the next evaluation retries"],
            error=f"retraining data: {error}",
        )
    request = RetrainRequest(
        model_name=rules.model_name,
        window_id=decision.window_id,
        window_start=decision.window_start,
        window_end=decision.window_end,
        data_uri=data_uri,
        trigger_report=decision.report_path or decision.summary_path,
        config_overrides=tuple(rules.config_overrides),
    )
    decision = replace(decision, data_uri=data_uri, run_name=request.run_name)
    if rules.dry_run:
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
    fired: list[dict[str, Any]], submitter: Submitter | None, now: datetime, rules: RetrainRules
) -> list[str]:
    """Descriptions of fired runs that may still run: state not terminal (or unknown) and younger than max age."""
    unfinished = []
    max_age = timedelta(hours=rules.max_run_hours)
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
            f"{run_id} fired {_fmt_time(at)} ({known}; counts as finished after {rules.max_run_hours:g} h)"
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
