"""MLflow tracking and registry: where runs are logged, where the champion lives, how aliases move.

Models are logged as plain artifact folders (safetensors + JSON spec), never as pickled MLflow flavours, and
registered with `create_model_version(source=...)`. A blessed model is registered as `challenger`; only after
its export loaded and answered correctly in a real Triton server does `champion` move to it (the old one
becomes `previous`). A version whose export or infra validation failed is tagged with the reason.
"""

from __future__ import annotations

import getpass
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.common.constants import ALIAS_CHALLENGER, ALIAS_CHAMPION, ALIAS_PREVIOUS, MLFLOW_EXPERIMENT
from components.common.env import apply_offline_environment, tns_home

MODEL_ARTIFACT_PATH = "model"


def default_tracking_uri() -> str:
    """`$MLFLOW_TRACKING_URI`, else an sqlite database under the local state folder."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{tns_home() / 'mlflow' / 'mlflow.db'}"


def configure(tracking_uri: str = "") -> str:
    """Points MLflow at `tracking_uri` (or the default), creating the local folder and the experiment.

    Returns:
        The tracking URI in use.
    """
    apply_offline_environment()
    import mlflow

    uri = tracking_uri or default_tracking_uri()
    artifact_location = None
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///"))
        database.parent.mkdir(parents=True, exist_ok=True)
        artifact_location = (database.parent / "artifacts").as_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if mlflow.get_experiment_by_name(MLFLOW_EXPERIMENT) is None:
        try:
            mlflow.create_experiment(MLFLOW_EXPERIMENT, artifact_location=artifact_location)
        except mlflow.exceptions.MlflowException:
            if mlflow.get_experiment_by_name(MLFLOW_EXPERIMENT) is None:  # not a create race: re-raise
                raise
    mlflow.set_experiment(MLFLOW_EXPERIMENT)
    return uri


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Flattens nested config values to dotted MLflow params."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:500]
    return flat


@dataclass(frozen=True)
class ModelVersionInfo:
    """A registered model version and where its files are."""

    name: str
    version: str
    source: str
    run_id: str | None


def get_alias(model_name: str, alias: str = ALIAS_CHAMPION) -> ModelVersionInfo | None:
    """The version behind an alias, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        found = _client().get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None
    return ModelVersionInfo(model_name, str(found.version), found.source, found.run_id)


def download_model(info: ModelVersionInfo, destination: str | Path | None = None) -> Path:
    """Downloads a registered version's model folder (safetensors + spec) and returns its local path."""
    import mlflow

    destination = Path(destination or tempfile.mkdtemp(prefix="tns-champion-"))
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=info.source, dst_path=str(destination)))


def log_model_folder(run_id: str, model_dir: str | Path) -> str:
    """Logs a model folder as artifacts of a run; returns the artifact URI to register."""
    import mlflow

    client = _client()
    client.log_artifacts(run_id, str(model_dir), MODEL_ARTIFACT_PATH)
    return f"{mlflow.get_run(run_id).info.artifact_uri}/{MODEL_ARTIFACT_PATH}"


def register_challenger(
    model_name: str, run_id: str, source: str, tags: dict[str, str], description: str = ""
) -> ModelVersionInfo:
    """Creates a registered-model version under the alias `challenger`; `champion` does not move.

    The challenger becomes champion only through `promote_version`, after its export was proven to serve.
    """
    from mlflow.exceptions import MlflowException

    client = _client()
    try:
        client.get_registered_model(model_name)
    except MlflowException:
        client.create_registered_model(
            model_name, description="Multimodal content-safety classifier (tns-pipelines)."
        )
    created = client.create_model_version(
        model_name, source=source, run_id=run_id, tags=tags, description=description or None
    )
    client.set_registered_model_alias(model_name, ALIAS_CHALLENGER, str(created.version))
    return ModelVersionInfo(model_name, str(created.version), source, run_id)


def promote_version(model_name: str, version: str) -> ModelVersionInfo | None:
    """Moves `champion` to `version`, keeping the old champion as `previous`, and drops `challenger` from it.

    `previous` moves before `champion`, so a failure part-way leaves `champion` on a complete version.

    Returns:
        The champion that was replaced, or None.
    """
    client = _client()
    old = get_alias(model_name, ALIAS_CHAMPION)
    if old is not None and old.version != str(version):
        client.set_registered_model_alias(model_name, ALIAS_PREVIOUS, old.version)
    client.set_registered_model_alias(model_name, ALIAS_CHAMPION, str(version))
    _drop_challenger(model_name, version)
    return old


def mark_version_failed(model_name: str, version: str, stage: str, reason: str) -> None:
    """Tags a version whose export or infra validation failed, and drops its `challenger` alias.

    No alias moves to it; `champion` stays where it was.
    """
    client = _client()
    client.set_model_version_tag(model_name, str(version), "tns.promotion", "BLOCKED")
    client.set_model_version_tag(model_name, str(version), "tns.blocked_at", stage)
    client.set_model_version_tag(model_name, str(version), "tns.blocked_reason", reason[:5000])
    _drop_challenger(model_name, version)


def _drop_challenger(model_name: str, version: str) -> None:
    current = get_alias(model_name, ALIAS_CHALLENGER)
    if current is not None and current.version == str(version):
        _client().delete_registered_model_alias(model_name, ALIAS_CHALLENGER)


def version_tags(model_name: str, version: str) -> dict[str, str]:
    """The tags of a registered version."""
    return dict(_client().get_model_version(model_name, version).tags)


def set_version_tags(model_name: str, version: str, tags: dict[str, str]) -> None:
    """Sets tags on a registered-model version."""
    client = _client()
    for key, value in tags.items():
        client.set_model_version_tag(model_name, str(version), key, str(value)[:5000])


def record_forced_promotion(run_id: str, reason: str) -> None:
    """Records on the run who forced a NOT_BLESSED model through the gate, and why."""
    client = _client()
    client.set_tag(run_id, "tns.forced_promotion", "true")
    client.set_tag(run_id, "tns.forced_by", os.environ.get("TNS_USER") or getpass.getuser())
    client.set_tag(run_id, "tns.force_reason", reason)


def latest_versions(model_name: str) -> list[str]:
    """All version numbers of a registered model (empty when it does not exist)."""
    from mlflow.exceptions import MlflowException

    try:
        return sorted(
            (str(v.version) for v in _client().search_model_versions(f"name='{model_name}'")), key=int
        )
    except MlflowException:
        return []
