"""The monitoring pipeline's steps: the drift check and the retrain trigger, on top of `monitoring/`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from core.common.constants import DEFAULT_MODEL_NAME, DRIFT_SUMMARY_FILE, TRIGGER_DECISION_FILE


def drift_check_step(
    reference_uri: str, current_uri: str, config_json: str, out_dir: str, model_name: str = DEFAULT_MODEL_NAME
) -> dict[str, Any]:
    """Runs the drift check into `out_dir` (report.html, summary.json, evidently.html) and returns the summary.

    Args:
        reference_uri: Reference logs or labeled dataset.
        current_uri: Current logs.
        config_json: `DriftConfig` fields as JSON ('{}' = defaults).
        out_dir: Output folder.
        model_name: Registered model name.

    Raises:
        monitoring.check.DriftCheckError: When the logs cannot be used; the folder is removed.
    """
    from core.config.drift import DriftConfig
    from monitoring.check import DriftRequest, run_drift_check

    config = DriftConfig(**json.loads(config_json or "{}"))
    request = DriftRequest(
        reference=Path(reference_uri),
        current=Path(current_uri),
        out_dir=Path(out_dir),
        config=config,
        model_name=model_name,
        command=f"monitoring pipeline: drift check of {current_uri} against {reference_uri}",
    )
    try:
        return run_drift_check(request).summary
    except Exception:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise


def trigger_step(
    summary_dir: str, retrain_rules_json: str, kfp_host: str, ledger_uri: str, out_dir: str
) -> dict[str, Any]:
    """Evaluates the retrain rules on a drift summary, submits the training pipeline when it fires, and writes
    the decision to `out_dir/trigger_decision.json`.

    Args:
        summary_dir: The drift check's output folder (holds summary.json).
        retrain_rules_json: `RetrainRules` fields as JSON ('{}' = the defaults).
        kfp_host: Kubeflow Pipelines API to submit to ('' = $KFP_HOST, else the local runner); the token is
            $KFP_TOKEN, the retries the rules' `submit_retries`.
        ledger_uri: Decision ledger file ('' = `monitoring.decision_ledger.default_ledger_path()`: the mounted
            monitoring state volume on a cluster).
        out_dir: Output folder of the decision.

    Raises:
        RetrainingFailed: When the submission (or a local run) failed, after the decision was written.
        monitoring.decision_ledger.LedgerLocationError: In a pod with no persistent place for the ledger.
    """
    from core.config.retrain_rules import RetrainRules
    from monitoring.decision_ledger import DecisionLedger
    from monitoring.submitters import make_submitter
    from monitoring.trigger import FIRED, evaluate_trigger, retraining_failed

    rules = RetrainRules.from_dict(json.loads(retrain_rules_json or "{}"))
    ledger = DecisionLedger(ledger_uri or None)  # refuses a ledger that would die with the pod
    submitter = (
        None
        if rules.dry_run
        else make_submitter(kfp_host or None, retries=rules.submit_retries, backoff_s=rules.submit_backoff_s)
    )
    summary_path = Path(summary_dir) / DRIFT_SUMMARY_FILE
    decision = evaluate_trigger(summary_path, rules, ledger, submitter)
    record = decision.to_record()
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / TRIGGER_DECISION_FILE).write_text(
        json.dumps(record, indent=2, sort_keys=True), encoding="utf-8"
    )
    if retraining_failed(record):
        raise RetrainingFailed(
            f"drift fired retraining, but {'the run' if record['outcome'] == FIRED else 'the submission'} "
            f"failed: {record.get('error') or record.get('run_state')} (recorded in {ledger.path}; the next "
            "evaluation of this window retries)"
        )
    return record


class RetrainingFailed(RuntimeError):
    """The trigger fired but the retraining could not be submitted (or, run locally, failed); the decision is
    recorded, and the step fails so that the run shows it."""
