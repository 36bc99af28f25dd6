"""KFP components: evaluate, per-policy classification metrics, and the gate."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from core.common.constants import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def evaluate_model(
    dataset: Input[Dataset],
    splits: Input[Dataset],
    model: Input[Model],
    config_json: str,
    mlflow_run_id: str,
    mlflow_tracking_uri: str,
    git_commit: str,
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    report: Output[HTML],
    model_card: Output[Markdown],
) -> NamedTuple("EvaluateOutputs", [("policies", list)]):
    """Scores the test split per policy: ROC-AUC with bootstrap CI, PR-AUC, thresholds, calibration,
    modality and language slices, and the modality ablation; writes the model card.

    Args:
        dataset: Ingested dataset.
        splits: Split assignment.
        model: Trained model folder.
        config_json: Effective run configuration as JSON.
        mlflow_run_id: Training run to log metrics and reports to.
        mlflow_tracking_uri: MLflow tracking URI ('' = default).
        git_commit: Commit of the training code (for the model card).
        evaluation: Output folder with evaluation.json, test scores and model card inputs.
        metrics: Scalar test metrics.
        report: Model card (HTML).
        model_card: Model card (Markdown).

    Returns:
        The evaluated policy names (one ROC curve each).
    """
    from collections import namedtuple

    from components.common.failure import reported
    from components.evaluation.executor import evaluation_metrics, evaluation_step, write_reports
    from core.config.loading import resolve_config

    with reported("evaluate"):
        result, card = evaluation_step(
            model.path, dataset.path, splits.path, resolve_config(config_json), evaluation.path,
            mlflow_run_id, mlflow_tracking_uri, git_commit,
        )  # fmt: skip
        write_reports(result, card, report.path, model_card.path)
    for name, value in evaluation_metrics(result).items():
        metrics.log_metric(name, value)
    return namedtuple("EvaluateOutputs", ["policies"])(sorted(result["policies"]))


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def policy_metrics(evaluation: Input[Artifact], policy: str, roc: Output[ClassificationMetrics]):
    """Publishes one policy's ROC curve and confusion matrix (at its operating threshold) to the UI.

    Args:
        evaluation: Evaluation folder written by evaluate_model.
        policy: Policy name.
        roc: ROC curve and confusion matrix.
    """
    import json
    import os

    from core.common.constants import EVALUATION_FILE

    with open(os.path.join(evaluation.path, EVALUATION_FILE), encoding="utf-8") as handle:
        values = json.load(handle)["policies"][policy]
    curve = values["roc_curve"]
    if curve["fpr"]:
        roc.log_roc_curve(curve["fpr"], curve["tpr"], curve["thresholds"])
    roc.log_confusion_matrix([f"not {policy}", policy], values["confusion_matrix"])
    roc.metadata.update({"policy": policy, "threshold": values["threshold"], "roc_auc": values["roc_auc"]})


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def gate_model(
    evaluation: Input[Artifact],
    dataset: Input[Dataset],
    splits: Input[Dataset],
    config_json: str,
    mlflow_tracking_uri: str,
    force_promote: bool,
    force_reason: str,
    decision: Output[Artifact],
    summary: Output[Markdown],
) -> str:
    """Blesses the model or not: per-policy floors, and non-regression against the registry's champion
    re-scored on the same test split. Every reason is recorded in the decision artifact.

    Args:
        evaluation: Evaluation of the new model.
        dataset: Ingested dataset (to re-score the champion).
        splits: Split assignment.
        config_json: Effective run configuration as JSON.
        mlflow_tracking_uri: MLflow tracking URI ('' = default).
        force_promote: Bless despite failed checks (needs force_reason).
        force_reason: Why the promotion is forced; recorded in MLflow.
        decision: Decision folder with gate_decision.json.
        summary: The decision and its reasons, as Markdown.

    Returns:
        BLESSED or NOT_BLESSED.
    """
    from components.common.failure import reported
    from components.evaluation.executor import gate_step
    from core.config.loading import resolve_config

    with reported("gate"):
        result = gate_step(
            evaluation.path, dataset.path, splits.path, resolve_config(config_json), decision.path,
            mlflow_tracking_uri, force_promote, force_reason,
        )  # fmt: skip
    with open(summary.path, "w", encoding="utf-8") as handle:
        handle.write(result.to_markdown())
    decision.metadata.update({"decision": result.decision, "forced": result.forced})
    return result.decision
