"""KFP components of the monitoring pipeline: the drift check and the retrain trigger."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Metrics, Output

from core.common.constants import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def check_drift(
    reference_uri: str,
    current_uri: str,
    config_json: str,
    model_name: str,
    report: Output[HTML],
    summary: Output[Artifact],
    metrics: Output[Metrics],
) -> str:
    """Compares a window of inference logs with a reference (Evidently) and writes the on-call report.

    Args:
        reference_uri: Reference inference logs, or a labeled dataset (the champion's training data).
        current_uri: Current window of inference logs.
        config_json: Drift thresholds as JSON (fields of core.config.drift.DriftConfig); '{}' uses defaults.
        model_name: Registered model name.
        report: The self-contained HTML report (shown in the Kubeflow UI).
        summary: Folder with summary.json, report.html and evidently.html.
        metrics: Rows, drifted signals and the top severity.

    Returns:
        "drift", "no_drift" or "insufficient_data".
    """
    import shutil

    from components.common.failure import reported
    from components.monitoring.executor import drift_check_step

    with reported("check_drift"):
        result = drift_check_step(reference_uri, current_uri, config_json, summary.path, model_name)
    shutil.copyfile(result["report_html"], report.path)
    metrics.log_metric("current_rows", result["current"].get("rows", 0))
    metrics.log_metric("drifted_signals", len(result["drifted_signals"]))
    metrics.log_metric("top_severity", max((s["severity"] or 0 for s in result["signals"]), default=0.0))
    summary.metadata.update({"status": result["status"], "window_id": result["window"]["id"]})
    return result["status"]


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def trigger_retraining(
    summary: Input[Artifact],
    retrain_rules_json: str,
    kfp_host: str,
    ledger_uri: str,
    decision: Output[Artifact],
) -> str:
    """Applies the retrain rules (signals, minimum rows, cooldown, one run in flight, idempotent per window)
    and submits the training pipeline when it fires; every decision is recorded in the ledger.

    Args:
        summary: The drift check's output folder.
        retrain_rules_json: Retrain rules as JSON (core.config.retrain_rules.RetrainRules); '{}' = defaults.
        kfp_host: Kubeflow Pipelines API to submit to; '' uses $KFP_HOST, else the local runner.
        ledger_uri: Decision ledger file (a persistent volume on a cluster); '' uses $TNS_HOME/monitoring.
        decision: trigger_decision.json: outcome, reasons, run id and URL, report path.

    Returns:
        The outcome (fired, dry_run, suppressed_cooldown, suppressed_in_flight, duplicate_window, ...).
    """
    from components.common.failure import reported
    from components.monitoring.executor import trigger_step

    with reported("trigger_retraining"):
        record = trigger_step(summary.path, retrain_rules_json, kfp_host, ledger_uri, decision.path)
    decision.metadata.update({"outcome": record["outcome"], "run_id": record.get("run_id") or ""})
    return record["outcome"]
