"""The monitoring pipeline: drift check, then (on drift) the guarded retrain trigger. Wiring only."""

from kfp import dsl, kubernetes

from components.monitoring.component import check_drift, trigger_retraining
from core.common.constants import DEFAULT_MODEL_NAME, MONITORING_STATE_MOUNT, MONITORING_STATE_PVC
from monitoring.drift import STATUS_DRIFT

PIPELINE_NAME = "tns-monitoring"


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Check production inference logs for drift and, when the retrain rules fire, start retraining.",
)
def monitoring_pipeline(
    reference_uri: str = "",
    current_uri: str = "",
    drift_config_json: str = "{}",
    retrain_rules_json: str = "{}",
    kfp_host: str = "",
    ledger_uri: str = "",
    model_name: str = DEFAULT_MODEL_NAME,
    state_pvc: str = MONITORING_STATE_PVC,
):
    """Compares the current window of inference logs with a reference and, on drift, applies the retrain rules.

    Args:
        reference_uri: Reference inference logs, or a labeled dataset (the champion's training data).
        current_uri: Current window of inference logs (a day partition or a log folder).
        drift_config_json: Drift thresholds as JSON (core.config.drift.DriftConfig); '{}' uses the defaults.
        retrain_rules_json: Retrain rules as JSON (core.config.retrain_rules.RetrainRules); '{}' = defaults.
        kfp_host: Kubeflow Pipelines API the retraining run is submitted to; '' uses $KFP_HOST.
        ledger_uri: Decision ledger file on persistent storage; '' uses the state volume below (on the cluster)
            or $TNS_HOME/monitoring/decisions.jsonl (locally).
        model_name: Registered model name.
        state_pvc: PersistentVolumeClaim mounted in the trigger step at MONITORING_STATE_MOUNT: the ledger and
            its locks live there, so the guardrails survive pods (ignored by the local runner).
    """
    drift = check_drift(
        reference_uri=reference_uri,
        current_uri=current_uri,
        config_json=drift_config_json,
        model_name=model_name,
    ).set_display_name("Check drift (Evidently)")
    with dsl.If(drift.outputs["Output"] == STATUS_DRIFT, name="drift-detected"):
        trigger = trigger_retraining(
            summary=drift.outputs["summary"],
            retrain_rules_json=retrain_rules_json,
            kfp_host=kfp_host,
            ledger_uri=ledger_uri,
        ).set_display_name("Retrain trigger (guarded)")
        kubernetes.mount_pvc(trigger, pvc_name=state_pvc, mount_path=MONITORING_STATE_MOUNT)
