"""`tns drift`: check a window of inference logs for drift, and with retrain rules decide on retraining."""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from core.common.constants import DEFAULT_MODEL_NAME
from tns.common import (
    UsageError,
    add_retrain_rules_argument,
    add_retry_arguments,
    fail,
    retrain_rules_file,
    timestamp,
)

if TYPE_CHECKING:
    from monitoring.check import DriftOutcome


def register(commands: argparse._SubParsersAction) -> None:
    """Adds `tns drift`."""
    drift = commands.add_parser(
        "drift",
        help="Check a window of inference logs for drift against a reference (exit 0 none, 10 drift, 1 error).",
        description="Compares the current window of inference logs with a reference (logs, or a labeled dataset "
        "such as the champion's training data, scored in process by the served model) and writes report.html, "
        "summary.json and an Evidently snapshot. With --retrain-rules it also decides on retraining.",
    )
    drift.add_argument("--reference", required=True, type=Path, help="Reference logs or labeled dataset.")
    drift.add_argument("--current", required=True, type=Path, help="Current logs (a file or a log folder).")
    drift.add_argument(
        "--out", type=Path, default=None, help="Output folder (default under $TNS_HOME/monitoring)."
    )
    drift.add_argument("--since", type=timestamp, default=None, help="Current window start (ISO 8601, UTC).")
    drift.add_argument("--until", type=timestamp, default=None, help="Current window end, exclusive.")
    drift.add_argument("--reference-since", type=timestamp, default=None, help="Reference window start.")
    drift.add_argument("--reference-until", type=timestamp, default=None, help="Reference window end.")
    drift.add_argument(
        "--set",
        dest="drift_overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Override a drift threshold, e.g. --set embedding_auc_threshold=0.6 (see core/config/drift.py).",
    )
    drift.add_argument(
        "--max-malformed-share",
        type=float,
        default=0.05,
        help="Fail when more than this share of log lines is malformed (default 0.05).",
    )
    drift.add_argument("--workspace", type=Path, default=None, help="Evidently workspace folder.")
    drift.add_argument("--no-snapshot", action="store_true", help="Do not add a snapshot to the workspace.")
    drift.add_argument("--model-name", default=DEFAULT_MODEL_NAME, help="Registered model name.")
    drift.add_argument("--tracking-uri", default="", help="MLflow tracking URI (default: the local store).")
    drift.add_argument(
        "--repository", type=Path, default=None, help="Exported repository to score a dataset reference with."
    )
    drift.add_argument(
        "--reference-rows",
        type=int,
        default=2000,
        help="Dataset rows scored for the reference (default 2000).",
    )
    add_retrain_rules_argument(drift, help="Retrain rules YAML: decide on retraining.")
    drift.add_argument(
        "--kfp-host",
        default=None,
        help="Submit retraining to this Kubeflow host (or KFP_HOST); default local.",
    )
    drift.add_argument("--dry-run", action="store_true", help="Decide on retraining but submit nothing.")
    add_retry_arguments(drift, defaults="the retrain rules' submit_retries / submit_backoff_s")
    drift.add_argument(
        "--ledger",
        type=Path,
        default=None,
        help="Decision ledger (default $TNS_LEDGER, else $TNS_HOME/monitoring/decisions.jsonl).",
    )
    drift.set_defaults(handler=_drift)


def _drift(args: argparse.Namespace) -> int:
    from core.config.drift import DriftConfig
    from monitoring.check import DriftCheckError, DriftRequest, run_drift_check

    config = DriftConfig().with_overrides(args.drift_overrides)
    if not 0 <= args.max_malformed_share <= 1:
        raise UsageError("--max-malformed-share must be in [0, 1]")
    request = DriftRequest(
        reference=args.reference.expanduser(),
        current=args.current.expanduser(),
        out_dir=args.out,
        since=args.since,
        until=args.until,
        reference_since=args.reference_since,
        reference_until=args.reference_until,
        config=config,
        max_malformed_share=args.max_malformed_share,
        workspace=args.workspace,
        save_snapshot=not args.no_snapshot,
        model_name=args.model_name,
        tracking_uri=args.tracking_uri,
        repository=args.repository,
        reference_rows=args.reference_rows,
        command=shlex.join(["tns", *sys.argv[1:]])
        if sys.argv and sys.argv[0].endswith("tns")
        else "tns drift",
    )
    rules_file = retrain_rules_file(args)
    retrain_trigger = _retrain_trigger(args, rules_file) if rules_file else None
    try:
        outcome = run_drift_check(request, retrain_trigger=retrain_trigger)
    except DriftCheckError as error:
        return fail(f"drift check failed: {error}")
    print_outcome(outcome)
    return outcome.exit_code


def _retrain_trigger(args: argparse.Namespace, rules_file: Path):
    """The retrain trigger, called with the drift summary before the report is written (so the report names the
    run and the run's parameters name the report)."""
    from core.config.retrain_rules import RetrainRules
    from monitoring.decision_ledger import DecisionLedger, LedgerLocationError
    from monitoring.submitters import make_submitter
    from monitoring.trigger import evaluate_trigger

    try:
        ledger = DecisionLedger(args.ledger)  # before the check runs: a ledger that would be lost is refused
    except LedgerLocationError as error:
        raise UsageError(f"{error} (or give --ledger FILE)") from None
    rules = RetrainRules.from_yaml(rules_file)
    if args.dry_run:
        rules = replace(rules, dry_run=True)
    submitter = make_submitter(
        args.kfp_host,
        retries=rules.submit_retries if args.retries is None else args.retries,
        backoff_s=rules.submit_backoff_s if args.backoff is None else args.backoff,
    )

    def record_decision(summary: dict) -> dict:
        return evaluate_trigger(summary, rules, ledger, submitter).to_record()

    return record_decision


def _shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_outcome(outcome: DriftOutcome, stream=None) -> None:
    """The console summary: verdict, top signals, the decision and where the report is."""
    stream = stream or sys.stdout
    summary = outcome.summary
    model = summary["model"]
    print(
        f"drift check: {summary['status'].upper()} - current {summary['current'].get('rows', 0)} rows vs reference "
        f"{summary['reference'].get('rows', 0)} rows; model {model['name']} version {model['version']}"
        f" (alias {model.get('alias') or 'unknown'})",
        file=stream,
    )
    for reason in summary["reasons"][:8]:
        print(f"  - {reason}", file=stream)
    estimate = summary.get("performance_estimate") or {}
    if estimate.get("policies"):
        figures = ", ".join(
            f"{policy} {_shown(entry['estimated']['precision'])}/{_shown(entry['estimated']['recall'])}"
            for policy, entry in estimate["policies"].items()
        )
        unreliable = estimate.get("unreliable_policies") or []
        print(
            f"estimated precision/recall at the served thresholds (no labels needed): {figures}"
            + (f"; UNRELIABLE for {', '.join(unreliable)}: labels disagree" if unreliable else ""),
            file=stream,
        )
    skipped = summary["current"].get("malformed_lines", 0)
    if skipped:
        print(f"  ({skipped} malformed log lines skipped)", file=stream)
    trigger = summary.get("trigger")
    if trigger:
        run = trigger.get("run_url") or trigger.get("run_id") or ""
        print(f"retraining: {trigger.get('outcome')} {run}".rstrip(), file=stream)
        for reason in trigger.get("reasons", [])[:4]:
            print(f"  - {reason}", file=stream)
    print(f"report: {summary['report_html']}\nsummary: {summary['summary_json']}", file=stream)
