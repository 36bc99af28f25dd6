"""Training step: train on the split dataset and log everything to MLflow."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from core.common.constants import TRAINING_SUMMARY_FILE
from core.config.run import RunConfig
from core.data.ingest import read_fingerprint, read_preparation


def training_step(
    dataset_dir: str | Path,
    splits_dir: str | Path,
    config: RunConfig,
    model_dir: str | Path,
    tracking_uri: str = "",
    git_commit: str = "",
    trigger_report: str = "",
    data_window: str = "",
    artifact_uris: tuple[str, str, str] = ("", "", ""),
    trainer_client=None,
) -> tuple[str, dict]:
    """Trains the fusion classifier inside an MLflow run and logs params, metrics and the model folder.

    Args:
        dataset_dir: Ingested dataset artifact.
        splits_dir: Split artifact.
        config: Effective run configuration.
        model_dir: Folder to write the model to.
        tracking_uri: MLflow tracking URI ('' = `$MLFLOW_TRACKING_URI` or the local sqlite default).
        git_commit: Commit of the code that trains, recorded as a tag.
        trigger_report: Drift report that triggered a retraining run, recorded as tag `tns.trigger_report`.
        data_window: Data window (JSON) of a triggered run, recorded as tag `tns.data_window`.
        artifact_uris: The dataset, split and model artifacts' URIs (a TrainJob reads and publishes through
            them; '' = the local paths).
        trainer_client: Kubeflow `TrainerClient` for a TrainJob (default: the cluster's, in-cluster config).

    Returns:
        The MLflow run id and the training summary.
    """
    import mlflow

    from core.registry.mlflow_registry import configure, flatten, log_model_folder
    from core.training.trainer import train_model

    configure(tracking_uri)
    git_commit = git_commit or os.environ.get("TNS_GIT_COMMIT", "")
    fingerprint = read_fingerprint(dataset_dir)
    with mlflow.start_run(run_name=f"train-{fingerprint['fingerprint'][:8]}") as run:
        mlflow.set_tags(
            {
                "tns.dataset_fingerprint": fingerprint["fingerprint"],
                "tns.dataset_source": fingerprint["source"],
                "tns.git_commit": git_commit or "unknown",
                "tns.policies": ",".join(config.policies),
            }
        )
        lineage = {"tns.trigger_report": trigger_report, "tns.data_window": data_window}
        if any(lineage.values()):  # a triggered retraining run names its drift report and data window
            mlflow.set_tags({key: value for key, value in lineage.items() if value})
        overrides = config.validation.severity_overrides()
        if overrides:  # validation checks made stricter or looser than the defaults, on the record
            mlflow.set_tag("tns.validation_severity_overrides", json.dumps(overrides, sort_keys=True))
        mlflow.log_params(flatten(config.to_dict()))
        mlflow.log_dict(fingerprint, "dataset/fingerprint.json")
        preparation = read_preparation(dataset_dir)
        if preparation is not None:
            mlflow.log_dict(preparation.to_dict(), "dataset/preparation.json")
        if config.train.processes > 1:  # DDP; rank 0 logs the epochs to this run
            paths = (str(dataset_dir), str(splits_dir), str(model_dir))
            uris = tuple(uri or path for uri, path in zip(artifact_uris, paths, strict=True))
            result = _distributed(config, paths, uris, run.info.run_id, trainer_client)
        else:
            result = train_model(
                dataset_dir,
                splits_dir,
                config,
                model_dir,
                on_epoch_end=lambda epoch, metrics: mlflow.log_metrics(metrics, step=epoch),
            )
        summary = result.to_dict()
        (Path(model_dir) / TRAINING_SUMMARY_FILE).write_text(json.dumps(summary, indent=2), encoding="utf-8")
        mlflow.log_metrics(
            {
                "best_epoch": result.best_epoch,
                "train_seconds": result.seconds,
                "train_samples_per_second": result.train_samples_per_second,
                "steps": result.steps,
            }
        )
        log_model_folder(run.info.run_id, model_dir)
    return run.info.run_id, summary


def _distributed(
    config: RunConfig, paths: tuple[str, str, str], uris: tuple[str, str, str], run_id: str, trainer_client
):
    """Trains with train.nodes x train.workers processes: torchrun in this step on the artifacts' local `paths`,
    or a Kubeflow Trainer TrainJob through their `uris` (`train.launcher`); returns rank 0's `TrainingResult`."""
    from core.config.train import LAUNCHER_TRAINJOB
    from core.training.launch import resolve_launcher, train_with_torchrun

    dataset_dir, splits_dir, model_dir = paths
    dataset_uri, splits_uri, model_uri = uris
    if resolve_launcher(config.train) != LAUNCHER_TRAINJOB:
        with tempfile.TemporaryDirectory(prefix="torchrun-") as work_dir:
            return train_with_torchrun(dataset_dir, splits_dir, config, model_dir, work_dir, run_id)
    from core.training.trainjob import TrainJobRequest, run_trainjob

    if trainer_client is None:
        from kubeflow.trainer import KubernetesBackendConfig, TrainerClient

        trainer_client = TrainerClient(KubernetesBackendConfig())
    request = TrainJobRequest(config, dataset_uri, splits_uri, model_uri.rstrip("/") + "-trainjob", run_id)
    return run_trainjob(trainer_client, request, model_dir)
