"""The drift check behind `tns drift` and the monitoring pipeline: read the windows, compare them, decide on
retraining, write the report, summary and snapshot.

The reference is either a window of inference logs or a labeled dataset (the champion's training data), which is
scored once in process by the served model (`serving.in_process`) into log records and cached. The summary and the
report also carry each policy's label-free performance estimate (`monitoring.performance_estimate`). Outputs go to
one folder: `summary.json`, `report.html` (self-contained) and `evidently.html`; the Evidently snapshot is also added
to a workspace project that `tns monitor ui` serves. Both files are written under temporary names and renamed,
so a failed check leaves no half-written report.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.common.constants import (
    DEFAULT_MODEL_NAME,
    DRIFT_SUMMARY_FILE,
    EXIT_DRIFT,
    EXIT_DRIFT_RETRAIN_FAILED,
    EXIT_FAILED,
    EXIT_OK,
    MANIFEST_NAMES,
)
from core.common.env import tns_home
from core.common.markup import redact_credentials
from core.config.drift import DriftConfig
from monitoring.drift import DriftResult, compare_windows, window_id
from monitoring.drift_signals import WindowCounts
from monitoring.log_reader import DEFAULT_MAX_MALFORMED_SHARE, LogReadError, LogWindow, read_logs
from monitoring.performance_estimate import estimate_performance
from monitoring.schema import LogSchemaError

EXIT_NO_DRIFT = EXIT_OK
EXIT_ERROR = EXIT_FAILED
REPORT_FILE = "report.html"
EVIDENTLY_REPORT_FILE = "evidently.html"
SUMMARY_VERSION = 1
DEFAULT_REFERENCE_ROWS = 2000


class DriftCheckError(RuntimeError):
    """The drift check cannot run (bad input); the message names what is wrong."""


@dataclass
class DriftRequest:
    """What `tns drift` was asked to do.

    Attributes:
        reference: Inference logs (file or folder) or a labeled dataset folder/manifest.
        current: Inference logs (file or folder).
        out_dir: Output folder (default `$TNS_HOME/monitoring/reports/<time>-<window id>`).
        since: Start of the current window (inclusive).
        until: End of the current window (exclusive).
        reference_since: Start of the reference window, for logs.
        reference_until: End of the reference window, for logs.
        config: Thresholds and limits.
        max_malformed_share: Share of malformed log lines above which the check fails.
        workspace: Evidently workspace folder (default `$TNS_HOME/monitoring/workspace`).
        save_snapshot: Add the Evidently snapshot to the workspace (and save its HTML beside the report).
        model_name: Registered model name (for the alias lookup and the dataset reference's champion).
        tracking_uri: MLflow tracking URI ('' = the local store).
        repository: Exported Triton repository to score a dataset reference with (default: the champion's).
        reference_rows: Largest number of dataset rows scored for the reference (a seeded sample above it).
        command: The command line, recorded in the report.
    """

    reference: Path
    current: Path
    out_dir: Path | None = None
    since: datetime | None = None
    until: datetime | None = None
    reference_since: datetime | None = None
    reference_until: datetime | None = None
    config: DriftConfig = field(default_factory=DriftConfig)
    max_malformed_share: float = DEFAULT_MAX_MALFORMED_SHARE
    workspace: Path | None = None
    save_snapshot: bool = True
    model_name: str = DEFAULT_MODEL_NAME
    tracking_uri: str = ""
    repository: Path | None = None
    reference_rows: int = DEFAULT_REFERENCE_ROWS
    command: str = ""


@dataclass
class DriftOutcome:
    """The summary written, and the exit code of the check."""

    summary: dict[str, Any]
    exit_code: int
    out_dir: Path
    result: DriftResult | None = None


def is_dataset(path: Path) -> bool:
    """Whether `path` is a labeled dataset (a manifest) rather than inference logs."""
    if path.is_file():
        return path.name in MANIFEST_NAMES
    return any((path / name).is_file() for name in MANIFEST_NAMES)


def _window_identity(window: LogWindow) -> str:
    stats = window.stats
    if not stats.rows:
        return f"{window.path.resolve()}|empty"
    first, last = window.frame.iloc[0], window.frame.iloc[-1]
    return (
        f"{window.path.resolve()}|{stats.rows}|{stats.start.isoformat()}|{stats.end.isoformat()}|"
        f"{first['request_id']}:{first['item']}|{last['request_id']}:{last['item']}"
    )


def _window_info(window: LogWindow) -> dict[str, Any]:
    return {"path": str(window.path), **window.stats.to_dict()}


def window_counts(window: LogWindow) -> WindowCounts:
    """The exact figures of a window, which its frame (a sample above the row budget) may not give."""
    stats = window.stats
    return WindowCounts(
        rows=stats.rows,
        flags={policy: tuple(counts) for policy, counts in stats.flag_counts.items()},
    )


def model_alias(model_name: str, version: str, tracking_uri: str) -> str | None:
    """The alias (`champion`, `previous`, ...) the registry gives `version` now, or None when unknown."""
    database = tns_home() / "mlflow" / "mlflow.db"
    if not tracking_uri and not os.environ.get("MLFLOW_TRACKING_URI") and not database.is_file():
        return None
    try:
        from mlflow import MlflowClient

        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{database}"
        aliases = (
            MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version(model_name, version).aliases
        )
    except Exception:  # noqa: BLE001 (the alias is context for the report, not a reason to fail the check)
        return None
    return ",".join(sorted(aliases)) or "none"


def load_reference(request: DriftRequest, scorer_factory: Callable[[], Any] | None = None) -> LogWindow:
    """The reference window: logs as they are, or a dataset scored once by the served model and cached."""
    if not is_dataset(request.reference):
        return read_logs(
            request.reference,
            request.reference_since,
            request.reference_until,
            request.max_malformed_share,
            row_budget=request.config.max_sample_rows,
            seed=request.config.seed,
        )
    from monitoring.reference import ReferenceDatasetError, scored_reference

    try:
        return scored_reference(
            request.reference,
            scorer_factory=scorer_factory,
            model_name=request.model_name,
            tracking_uri=request.tracking_uri,
            repository=request.repository,
            max_rows=request.reference_rows,
            seed=request.config.seed,
        )
    except ReferenceDatasetError as error:
        raise DriftCheckError(str(error)) from error


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def build_summary(
    request: DriftRequest,
    reference: LogWindow,
    current: LogWindow,
    result: DriftResult,
    out_dir: Path,
    pair_id: str,
) -> dict[str, Any]:
    """The JSON summary of a check (the report is rendered from it); `pair_id` is the windows' `window_id`."""
    current_info, reference_info = _window_info(current), _window_info(reference)
    versions = current_info.get("model_versions") or reference_info.get("model_versions") or [""]
    model_name = current_info.get("model_name") or reference_info.get("model_name") or request.model_name
    version = versions[0]
    return {
        "summary_version": SUMMARY_VERSION,
        "log_schema_version": 1,
        "checked_at": datetime.now(UTC).isoformat(),
        "status": result.status,
        "drift_detected": result.drift_detected,
        "exit_code": EXIT_DRIFT if result.drift_detected else EXIT_NO_DRIFT,
        "reasons": result.reasons,
        "window": {
            "id": pair_id,
            "start": current_info.get("start"),
            "end": current_info.get("end"),
            "path": str(current.path),
        },
        "current": current_info,
        "reference": reference_info,
        "sampled": result.sampled,
        "model": {
            "name": model_name,
            "version": version,
            "alias": model_alias(model_name, version, request.tracking_uri) if version else None,
            "versions_in_window": current_info.get("model_versions", []),
        },
        "policies": result.policies,
        "signals": [signal.to_dict() for signal in result.signals],
        "drifted_signals": [signal.name for signal in result.drifted],
        "top_signal": result.drifted[0].name if result.drifted else None,
        "top_group": result.drifted[0].group if result.drifted else None,
        "examples": result.examples,
        "config": request.config.__dict__,
        "report_html": str(out_dir / REPORT_FILE),
        "summary_json": str(out_dir / DRIFT_SUMMARY_FILE),
        "command": redact_credentials(request.command),
        "trigger": None,
    }


def save_snapshot(result: DriftResult, workspace: Path, model_name: str, out_dir: Path) -> dict[str, Any]:
    """Adds the Evidently snapshot to the workspace project `<model> drift` and saves its HTML beside the report."""
    if result.snapshot is None:
        return {}
    from evidently.ui.workspace import Workspace

    workspace.mkdir(parents=True, exist_ok=True)
    store = Workspace.create(str(workspace))
    name = f"{model_name} drift"
    projects = store.search_project(name)
    project = projects[0] if projects else store.create_project(name, description="tns drift checks")
    reference = store.add_run(project.id, result.snapshot, include_data=False, name=out_dir.name)
    result.snapshot.save_html(str(out_dir / EVIDENTLY_REPORT_FILE))
    return {
        "workspace": str(workspace),
        "project": name,
        "project_id": str(project.id),
        "snapshot_id": str(getattr(reference, "id", "")),
        "html": str(out_dir / EVIDENTLY_REPORT_FILE),
    }


def write_outputs(summary: dict[str, Any], out_dir: Path) -> None:
    """Writes `summary.json` and `report.html` (each atomically)."""
    from monitoring.drift_report import render_report

    out_dir.mkdir(parents=True, exist_ok=True)
    _write_atomically(out_dir / DRIFT_SUMMARY_FILE, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    _write_atomically(out_dir / REPORT_FILE, render_report(summary))


def run_drift_check(
    request: DriftRequest,
    retrain_trigger: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None,
    scorer_factory: Callable[[], Any] | None = None,
) -> DriftOutcome:
    """Runs the whole check.

    Args:
        request: What to compare and where to write.
        retrain_trigger: Called with the summary before it is written (the retrain trigger); what it returns is stored
            as `summary["trigger"]`, so the report names the run it started.
        scorer_factory: Builds the scorer of a dataset reference (default: the champion from MLflow).

    Returns:
        The outcome; `exit_code` is 10 on drift (11 when `retrain_trigger` fired a retraining whose submission, or local
        run, failed) and 0 otherwise.

    Raises:
        DriftCheckError: When the logs cannot be read (missing, schema mismatch, too many malformed lines).
    """
    try:
        current = read_logs(
            request.current,
            request.since,
            request.until,
            request.max_malformed_share,
            row_budget=request.config.max_sample_rows,
            seed=request.config.seed + 1,
        )
        reference = load_reference(request, scorer_factory)
    except (LogReadError, LogSchemaError) as error:
        raise DriftCheckError(str(error)) from error
    policies = current.policies or reference.policies
    if current.policies and reference.policies and set(current.policies) != set(reference.policies):
        raise DriftCheckError(
            f"the windows score different policies: reference {reference.policies}, current {current.policies}"
        )
    result = compare_windows(
        reference.frame,
        current.frame,
        policies,
        request.config,
        counts=(window_counts(reference), window_counts(current)),
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    summary_id = window_id(_window_identity(reference), _window_identity(current))
    out_dir = (request.out_dir or tns_home() / "monitoring" / "reports" / f"{stamp}-{summary_id}").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = build_summary(request, reference, current, result, out_dir, summary_id)
    summary["performance_estimate"] = estimate_performance(
        reference.frame, current.frame, policies, request.config
    ).to_dict()
    if request.save_snapshot:
        workspace = (request.workspace or tns_home() / "monitoring" / "workspace").resolve()
        summary["evidently"] = save_snapshot(result, workspace, summary["model"]["name"], out_dir)
    if retrain_trigger is not None:
        from monitoring.trigger import retraining_failed

        summary["trigger"] = retrain_trigger(summary)
        if summary["exit_code"] == EXIT_DRIFT and retraining_failed(summary["trigger"]):
            summary["exit_code"] = EXIT_DRIFT_RETRAIN_FAILED
    write_outputs(summary, out_dir)
    return DriftOutcome(summary=summary, exit_code=summary["exit_code"], out_dir=out_dir, result=result)
