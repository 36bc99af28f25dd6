"""KFP components: export to ONNX and a Triton model repository, and infra-validate it in tritonserver."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from core.common.constants import COMPONENT_IMAGE, SERVING_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def export_model(
    model: Input[Model],
    evaluation: Input[Artifact],
    dataset: Input[Dataset],
    splits: Input[Dataset],
    config_json: str,
    model_version: str,
    mlflow_run_id: str,
    mlflow_tracking_uri: str,
    export: Output[Model],
    parity: Output[Metrics],
) -> str:
    """Exports the challenger to ONNX, checks PyTorch/onnxruntime parity on a golden test batch, and writes
    the Triton model repository (version folders = the registered version).

    Args:
        model: Trained model folder.
        evaluation: Evaluation folder (operating thresholds).
        dataset: Ingested dataset (golden batch).
        splits: Split assignment (the golden batch is drawn from the test split).
        config_json: Effective run configuration as JSON.
        model_version: Registered-model version of the challenger.
        mlflow_run_id: Training run; the repository is logged to it.
        mlflow_tracking_uri: MLflow tracking URI ('' = default).
        export: Output folder: model_repository/, golden/, export_report.json.
        parity: Parity figures.

    Returns:
        The repository path.
    """
    from components.common.failure import reported
    from components.export.executor import export_step
    from core.config.loading import resolve_config

    with reported("export"):
        report = export_step(
            model.path, dataset.path, splits.path, evaluation.path, resolve_config(config_json),
            model_version, export.path, mlflow_run_id, mlflow_tracking_uri,
        )  # fmt: skip
    parity.log_metric("parity_max_abs_diff", report["parity"]["max_abs_diff"])
    parity.log_metric("onnx_megabytes", round(report["onnx_bytes"] / 1e6, 1))
    if report["int8"]:
        parity.log_metric("int8_min_agreement", min(report["int8"]["agreement"].values()))
        parity.log_metric("int8_max_roc_auc_drop", max(report["int8"]["roc_auc_drop"].values(), default=0.0))
    export.metadata.update(
        {"version": model_version, "onnx_opset": report["onnx_opset"], "framework": "triton"}
    )
    return report["repository"]


@dsl.component(base_image=SERVING_IMAGE, install_kfp_package=False)
def infra_validate(
    export: Input[Model],
    config_json: str,
    model_version: str,
    mlflow_run_id: str,
    mlflow_tracking_uri: str,
    validation: Output[Artifact],
    latency: Output[Metrics],
    report: Output[Markdown],
) -> str:
    """Starts a real tritonserver on the exported repository, sends golden requests over HTTP and gRPC, and
    requires the ensemble's answers to equal PyTorch's; records load time and latency.

    Args:
        export: Export folder written by export_model.
        config_json: Effective run configuration as JSON.
        model_version: Registered-model version under validation.
        mlflow_run_id: Training run to log the report to.
        mlflow_tracking_uri: MLflow tracking URI ('' = default).
        validation: Output folder with infra_validation.json (read by the promote step).
        latency: Load time and p50/p99 latency per protocol.
        report: The checks as Markdown.

    Returns:
        PASSED (a failure raises and blocks promotion).
    """
    from components.common.failure import reported
    from components.export.executor import infra_validation_step
    from core.config.loading import resolve_config
    from serving.infra_validation import InfraValidationReport

    with reported("infra_validate"):
        record = infra_validation_step(
            export.path, resolve_config(config_json), model_version, mlflow_run_id, validation.path,
            mlflow_tracking_uri,
        )  # fmt: skip
    latency.log_metric("load_seconds", record["load_seconds"])
    latency.log_metric("max_abs_diff", record["max_abs_diff"])
    for protocol, values in record["latency_ms"].items():
        latency.log_metric(f"{protocol}_p50_ms", values["p50"])
        latency.log_metric(f"{protocol}_p99_ms", values["p99"])
    with open(report.path, "w", encoding="utf-8") as handle:
        handle.write(InfraValidationReport.from_dict(record).to_markdown())
    return "PASSED"
