"""The training pipeline: ingest, validate, split, train, evaluate, gate, register as challenger, export,
infra-validate, promote. Wiring only."""

from kfp import dsl, kubernetes

from components.data.component import ingest_data, split_data
from components.evaluation.component import evaluate_model, gate_model, policy_metrics
from components.export.component import export_model, infra_validate
from components.registry.component import promote_model, record_rejection, register_model
from components.training.component import train_model
from components.validation.component import validate_data
from core.common.constants import (
    BLESSED,
    DEFAULT_POLICIES,
    MLFLOW_SECRET,
    MLFLOW_SECRET_KEYS,
    TRAINING_ACCELERATOR,
    TRAINING_CPU_PER_WORKER,
    TRAINING_MEMORY_GB_PER_WORKER,
)

PIPELINE_NAME = "tns-training"


def _with_mlflow_secret(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """MLflow location and credentials come from a Kubernetes secret on the cluster, never from the YAML."""
    return kubernetes.use_secret_as_env(task, MLFLOW_SECRET, MLFLOW_SECRET_KEYS, optional=True)


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Train, evaluate, gate and register a multimodal (text + image) content-safety classifier.",
)
def training_pipeline(
    data_uri: str = "",
    config_json: str = "{}",
    policies: list = list(DEFAULT_POLICIES),  # noqa: B006 (KFP reads pipeline defaults from the signature)
    force_promote: bool = False,
    force_reason: str = "",
    mlflow_tracking_uri: str = "",
    git_commit: str = "",
    trigger_report: str = "",
    data_window: str = "",
):
    """Turns a labeled multimodal dataset into a gated content-safety model served by Triton: a blessed model
    is registered as `challenger`, exported (ONNX parity checked) and infra-validated in a real tritonserver
    before `champion` moves to it.

    Args:
        data_uri: Dataset folder or manifest (jsonl, csv, parquet) or Hateful Memes folder; empty generates the
            embedded synthetic default dataset.
        config_json: Run configuration as JSON (see configs/default.yaml); '{}' uses the defaults.
        policies: Policy label columns, in the model's output order (overrides config_json's); one ROC curve each.
        force_promote: Promote even when the gate says NOT_BLESSED (requires force_reason; recorded in MLflow).
        force_reason: Why a NOT_BLESSED model is promoted anyway.
        mlflow_tracking_uri: MLflow tracking URI; empty uses MLFLOW_TRACKING_URI from the mlflow-credentials
            secret, or a local sqlite database.
        git_commit: Commit of the training code, recorded for lineage.
        trigger_report: Drift report (path or URL) that triggered this retraining run ('' = manual run).
        data_window: Data window of a triggered retraining run as JSON: id, start, end ('' = manual run).
    """
    ingest = ingest_data(data_uri=data_uri, config_json=config_json, policies=policies)
    ingest.set_display_name("Ingest and fingerprint dataset")
    config = ingest.outputs["Output"]
    dataset = ingest.outputs["dataset"]

    validate = validate_data(dataset=dataset, config_json=config).set_display_name(
        "Validate data (Great Expectations)"
    )
    split = (
        split_data(dataset=dataset, config_json=config)
        .after(validate)
        .set_display_name("Split train/validation/test")
    )
    splits = split.outputs["splits"]

    train = train_model(
        dataset=dataset,
        splits=splits,
        config_json=config,
        mlflow_tracking_uri=mlflow_tracking_uri,
        git_commit=git_commit,
        trigger_report=trigger_report,
        data_window=data_window,
    )
    train.set_display_name("Train fusion classifier")
    train.set_accelerator_type(TRAINING_ACCELERATOR).set_accelerator_limit(1)
    train.set_cpu_limit(str(TRAINING_CPU_PER_WORKER)).set_memory_limit(f"{TRAINING_MEMORY_GB_PER_WORKER}G")
    _with_mlflow_secret(train)
    run_id = train.outputs["mlflow_run_id"]

    evaluate = evaluate_model(
        dataset=dataset,
        splits=splits,
        model=train.outputs["model"],
        config_json=config,
        mlflow_run_id=run_id,
        mlflow_tracking_uri=mlflow_tracking_uri,
        git_commit=git_commit,
    )
    evaluate.set_display_name("Evaluate on test split")
    _with_mlflow_secret(evaluate)
    with dsl.ParallelFor(policies, name="per-policy-roc") as policy:
        policy_metrics(evaluation=evaluate.outputs["evaluation"], policy=policy).set_display_name("ROC curve")

    gate = gate_model(
        evaluation=evaluate.outputs["evaluation"],
        dataset=dataset,
        splits=splits,
        config_json=config,
        mlflow_tracking_uri=mlflow_tracking_uri,
        force_promote=force_promote,
        force_reason=force_reason,
    )
    gate.set_display_name("Gate: floors and champion/challenger")
    _with_mlflow_secret(gate)

    with dsl.If(gate.outputs["Output"] == BLESSED, name="blessed"):
        register = register_model(
            decision=gate.outputs["decision"],
            dataset=dataset,
            splits=splits,
            config_json=config,
            mlflow_run_id=run_id,
            mlflow_tracking_uri=mlflow_tracking_uri,
            git_commit=git_commit,
        )
        register.set_display_name("Register as challenger")
        _with_mlflow_secret(register)
        version = register.outputs["Output"]

        export = export_model(
            model=train.outputs["model"],
            evaluation=evaluate.outputs["evaluation"],
            dataset=dataset,
            splits=splits,
            config_json=config,
            model_version=version,
            mlflow_run_id=run_id,
            mlflow_tracking_uri=mlflow_tracking_uri,
        )
        export.set_display_name("Export ONNX + Triton repository (parity check)")
        _with_mlflow_secret(export)

        infra = infra_validate(
            export=export.outputs["export"],
            config_json=config,
            model_version=version,
            mlflow_run_id=run_id,
            mlflow_tracking_uri=mlflow_tracking_uri,
        )
        infra.set_display_name("Infra-validate in tritonserver")
        infra.set_accelerator_type(TRAINING_ACCELERATOR).set_accelerator_limit(1)
        _with_mlflow_secret(infra)

        promote = promote_model(
            validation=infra.outputs["validation"],
            decision=gate.outputs["decision"],
            config_json=config,
            model_version=version,
            mlflow_tracking_uri=mlflow_tracking_uri,
        )
        promote.set_display_name("Promote to champion")
        _with_mlflow_secret(promote)
    with dsl.Else(name="not-blessed"):
        rejection = record_rejection(
            decision=gate.outputs["decision"], mlflow_run_id=run_id, mlflow_tracking_uri=mlflow_tracking_uri
        )
        rejection.set_display_name("Record NOT_BLESSED decision")
        _with_mlflow_secret(rejection)
