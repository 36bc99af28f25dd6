"""MLflow tracking and registry: where runs are logged, where the champion lives, how aliases move.

Models are logged as plain artifact folders (safetensors + JSON spec), never as pickled MLflow flavours, and
registered with `create_model_version(source=...)`. The alias `champion` names the serving model and
`previous` the one it replaced; nothing here moves an alias unless asked to register a blessed model.
"""

from __future__ import annotations

import getpass
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.common.constants import ALIAS_CHAMPION, ALIAS_PREVIOUS, MLFLOW_EXPERIMENT
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


def register_version(
    model_name: str, run_id: str, source: str, tags: dict[str, str], description: str = ""
) -> ModelVersionInfo:
    """Creates a registered-model version and moves `champion` to it, keeping the old one as `previous`.

    The new version is created first; aliases move only after it exists, `previous` before `champion`, so a
    failure part-way leaves `champion` on a complete version.
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
    old = get_alias(model_name, ALIAS_CHAMPION)
    if old is not None:
        client.set_registered_model_alias(model_name, ALIAS_PREVIOUS, old.version)
    client.set_registered_model_alias(model_name, ALIAS_CHAMPION, str(created.version))
    return ModelVersionInfo(model_name, str(created.version), source, run_id)


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
