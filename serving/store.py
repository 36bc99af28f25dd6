"""Where `tns serve` gets its model: the champion's Triton repository, from MLflow, cached locally.

The export step logs each registered version's generated repository as the run artifact `triton_repository`.
`champion_repository` follows the `champion` alias to its version and run, downloads that folder once into
`<tns home>/serving/<model>/<version>/` and reuses it afterwards. The download goes to a temporary sibling folder
that is renamed into place when complete, so an interrupted download is never mistaken for a repository.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from core.common.constants import (
    ALIAS_CHAMPION,
    DEFAULT_MODEL_NAME,
    REPOSITORY_MANIFEST_FILE,
    SERVING_METADATA_FILE,
    TAG_REPOSITORY_MANIFEST,
    TRITON_ENSEMBLE,
    TRITON_POSTPROCESS,
    TRITON_REPOSITORY_ARTIFACT,
)
from core.common.env import tns_home
from core.common.integrity import IntegrityError, remove_bytecode, verify_repository
from core.common.markup import redact_credentials

SERVING_DIR = "serving"
PARTIAL_PREFIX = ".partial-"


class ServingStoreError(RuntimeError):
    """The champion's repository cannot be found or fetched; the message says what to do."""


class ChampionNotFoundError(ServingStoreError):
    """The registered model has no `champion` version."""


class RepositoryNotExportedError(ServingStoreError):
    """The champion version's run holds no exported Triton repository."""


class RepositoryIntegrityError(ServingStoreError):
    """The champion's repository does not match what its export recorded (a changed, missing or extra file:
    `file`), or its manifest cannot be trusted (`file` None)."""

    def __init__(self, message: str, file: str | None = None) -> None:
        super().__init__(message)
        self.file = file


def serving_cache(model_name: str = DEFAULT_MODEL_NAME) -> Path:
    """The local folder holding the downloaded repositories of a model: `<tns home>/serving/<model>`."""
    return tns_home() / SERVING_DIR / model_name


def is_model_repository(path: Path, version: str | None = None) -> bool:
    """Whether `path` holds an ensemble config (and, given `version`, that version's ensemble folder)."""
    ensemble = path / TRITON_ENSEMBLE
    if not (ensemble / "config.pbtxt").is_file():
        return False
    return version is None or (ensemble / str(version)).is_dir()


def repository_metadata(repository: str | Path) -> dict:
    """The served model's name, version, policies and thresholds (`postprocess/<version>/serving_metadata.json`).

    Raises:
        ServingStoreError: When the folder holds no exported repository.
    """
    repository = Path(repository)
    found = sorted(
        (repository / TRITON_POSTPROCESS).glob(f"*/{SERVING_METADATA_FILE}"),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else -1,
    )
    if not found or not is_model_repository(repository):
        raise ServingStoreError(
            f"{repository} is not a Triton model repository exported by tns-pipelines "
            f"(no {TRITON_ENSEMBLE}/config.pbtxt or {TRITON_POSTPROCESS}/<version>/{SERVING_METADATA_FILE})"
        )
    return json.loads(found[-1].read_text(encoding="utf-8"))


def champion_repository(
    model_name: str = DEFAULT_MODEL_NAME, tracking_uri: str = "", dest: str | Path | None = None
) -> Path:
    """The Triton repository of the model's champion version, downloaded from MLflow unless already here.

    Args:
        model_name: The registered model.
        tracking_uri: The MLflow tracking URI ('' = `$MLFLOW_TRACKING_URI` or the local database).
        dest: The folder the repository goes to; default `<tns home>/serving/<model>/<version>`.

    Returns:
        The repository folder (give it to `TritonServer` or `tritonserver --model-repository`).

    Raises:
        ChampionNotFoundError: No `champion` alias on the model (or no such model).
        RepositoryNotExportedError: The champion's run logged no `triton_repository` artifact.
        ServingStoreError: The download failed or holds no repository for the champion's version.
    """
    from core.registry.mlflow_registry import configure, get_alias

    try:
        uri = configure(tracking_uri)
        champion = get_alias(model_name, ALIAS_CHAMPION)
    except Exception as error:  # noqa: BLE001 (an unreachable or broken tracking store: name it and stop)
        where = redact_credentials(tracking_uri or "the default tracking URI")
        raise ServingStoreError(
            f"cannot read the MLflow registry at {where}: {redact_credentials(error)}"
        ) from error
    if champion is None:
        raise ChampionNotFoundError(
            f"Registered model '{model_name}' has no '{ALIAS_CHAMPION}' version in MLflow at {redact_credentials(uri)}: train and "
            "promote one with `tns run training`, or serve an exported folder with `tns serve --repository DIR`."
        )
    version = str(champion.version)
    target = Path(dest) if dest is not None else serving_cache(model_name) / version
    target = target.expanduser().resolve()
    if not champion.run_id:
        raise RepositoryNotExportedError(
            f"'{model_name}' version {version} ({ALIAS_CHAMPION}) has no MLflow run, so no exported repository"
        )
    if is_model_repository(target, version):
        try:  # a cached copy is checked too: the cache is a folder anyone on the host may have edited
            _verify(target, champion.run_id, model_name, version)
            return target
        except RepositoryIntegrityError as error:
            if dest is not None or error.file is None:
                raise
            shutil.rmtree(target)  # a changed cached copy: fetched again below, and checked again
    elif dest is not None and target.exists() and any(target.iterdir()):
        raise ServingStoreError(
            f"{target} exists and is not the repository of '{model_name}' version {version}: "
            "choose an empty or new folder"
        )
    _download(champion.run_id, target, model_name, version)
    _verify(target, champion.run_id, model_name, version)
    return target


def _verify(repository: Path, run_id: str, model_name: str, version: str) -> None:
    """Checks the repository against the run's manifest and the manifest against the version's tag, before a
    server runs any of its code; Python bytecode a server left in a cached copy is removed first (any other is
    an unexpected file)."""
    import mlflow

    from core.registry.mlflow_registry import version_tags

    label = f"'{model_name}' version {version} ({ALIAS_CHAMPION})"
    expected = version_tags(model_name, version).get(TAG_REPOSITORY_MANIFEST)
    if not expected:
        raise RepositoryIntegrityError(
            f"{label} has no '{TAG_REPOSITORY_MANIFEST}' tag: it was exported before repositories carried a "
            "manifest, so its files cannot be checked. Re-run `tns run training` to export it again, or serve a "
            "folder you trust with `tns serve --repository DIR`."
        )
    try:
        with tempfile.TemporaryDirectory(prefix="tns-manifest-") as scratch:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=REPOSITORY_MANIFEST_FILE, dst_path=scratch
            )
            manifest = Path(path).read_bytes()
    except Exception as error:  # noqa: BLE001 (any store failure: name it and stop)
        raise RepositoryIntegrityError(f"the manifest of {label} cannot be fetched: {error}") from error
    remove_bytecode(repository)  # a cached copy that was served before; the export has none
    try:
        verify_repository(repository, manifest, expected)
    except IntegrityError as error:
        raise RepositoryIntegrityError(f"refusing to serve {label}: {error}", error.file) from error


def _download(run_id: str, target: Path, model_name: str, version: str) -> None:
    import mlflow
    from mlflow import MlflowClient

    label = f"'{model_name}' version {version} ({ALIAS_CHAMPION}, run {run_id})"
    if not MlflowClient().list_artifacts(run_id, TRITON_REPOSITORY_ARTIFACT):
        raise RepositoryNotExportedError(
            f"{label} has no exported Triton repository (run artifact '{TRITON_REPOSITORY_ARTIFACT}'): its export "
            "step did not run or failed. Re-run `tns run training`, or serve a folder with `--repository DIR`."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{target.name}-", dir=target.parent))
    try:
        try:
            downloaded = Path(
                mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=TRITON_REPOSITORY_ARTIFACT, dst_path=str(staging)
                )
            )
        except Exception as error:  # noqa: BLE001 (any store failure: name it and stop)
            raise ServingStoreError(f"downloading the repository of {label} failed: {error}") from error
        if not is_model_repository(downloaded, version):
            raise ServingStoreError(
                f"the '{TRITON_REPOSITORY_ARTIFACT}' artifact of {label} is not a model repository for version "
                f"{version} (no {TRITON_ENSEMBLE}/config.pbtxt and {TRITON_ENSEMBLE}/{version}/)"
            )
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()
        elif target.exists():  # a damaged copy in the cache (the caller checked an explicit `dest`)
            shutil.rmtree(target)
        try:
            os.replace(downloaded, target)
        except OSError:
            if not is_model_repository(target, version):  # not another process's finished download
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
