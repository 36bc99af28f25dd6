"""Reading the MLflow registry that a test run wrote."""

from __future__ import annotations

from pathlib import Path


def registry(tns_home: Path):
    """An MLflow client on the run's sqlite database (None when no run got as far as MLflow)."""
    database = tns_home / "mlflow" / "mlflow.db"
    if not database.is_file():
        return None
    from mlflow import MlflowClient

    uri = f"sqlite:///{database}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def model_versions(tns_home: Path, name: str = "content-safety") -> list[str]:
    client = registry(tns_home)
    if client is None:
        return []
    return sorted((str(v.version) for v in client.search_model_versions(f"name='{name}'")), key=int)
