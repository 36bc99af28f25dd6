"""KFP component: train the fusion classifier."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from core.common.constants import TRAINING_GPU_IMAGE


@dsl.component(base_image=TRAINING_GPU_IMAGE, install_kfp_package=False)
def train_model(
    dataset: Input[Dataset],
    splits: Input[Dataset],
    config_json: str,
    mlflow_tracking_uri: str,
    git_commit: str,
    model: Output[Model],
    metrics: Output[Metrics],
    trigger_report: str = "",
    data_window: str = "",
) -> NamedTuple("TrainOutputs", [("mlflow_run_id", str)]):
    """Trains the text+image fusion classifier and logs the run to MLflow.

    Args:
        dataset: Ingested dataset.
        splits: Split assignment.
        config_json: Effective run configuration as JSON.
        mlflow_tracking_uri: MLflow tracking URI ('' = MLFLOW_TRACKING_URI or the local default).
        git_commit: Commit of the training code, recorded on the run.
        model: Output model folder (safetensors weights, spec, tokenizer).
        metrics: Training metrics.
        trigger_report: Drift report that triggered this run ('' = manual run), tagged on the MLflow run.
        data_window: Data window (JSON) of a triggered run ('' = manual run), tagged on the MLflow run.
    """
    from collections import namedtuple

    from components.common.failure import reported
    from components.training.executor import training_step
    from core.config.loading import resolve_config

    with reported("train"):
        run_id, summary = training_step(
            dataset.path,
            splits.path,
            resolve_config(config_json),
            model.path,
            mlflow_tracking_uri,
            git_commit,
            trigger_report=trigger_report,
            data_window=data_window,
            artifact_uris=(dataset.uri, splits.uri, model.uri),
        )
    for name in ("best_epoch", "epochs_run", "steps", "seconds", "train_samples_per_second"):
        metrics.log_metric(name, float(summary[name]))
    model.metadata.update({"mlflow_run_id": run_id, "device": summary["device"], "framework": "pytorch"})
    return namedtuple("TrainOutputs", ["mlflow_run_id"])(run_id)
