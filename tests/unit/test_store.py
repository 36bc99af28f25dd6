"""`serving.store`: the champion's Triton repository fetched from MLflow (real sqlite store in a temporary folder)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from core.common.constants import (
    REPOSITORY_MANIFEST_FILE,
    SERVING_METADATA_FILE,
    TAG_REPOSITORY_MANIFEST,
    TRITON_ENSEMBLE,
    TRITON_POSTPROCESS,
    TRITON_REPOSITORY_ARTIFACT,
)
from core.common.integrity import manifest_sha256, repository_manifest
from core.registry.mlflow_registry import (
    configure,
    log_model_folder,
    promote_version,
    register_challenger,
)
from serving import store
from serving.store import (
    ChampionNotFoundError,
    RepositoryNotExportedError,
    ServingStoreError,
    champion_repository,
    repository_metadata,
)

MODEL = "content-safety-store-test"


@pytest.fixture(scope="module")
def shared_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One sqlite store per module (creating one costs about 2 s); each test uses its own model name."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


@pytest.fixture
def registry(mlflow_isolation, shared_uri: str) -> str:
    return configure(shared_uri)


def fake_repository(folder: Path, version: str, marker: str = "") -> Path:
    """A folder laid out like an exported repository (contents are not real models)."""
    (folder / TRITON_ENSEMBLE / version).mkdir(parents=True)
    (folder / TRITON_ENSEMBLE / "config.pbtxt").write_text(f'name: "{TRITON_ENSEMBLE}"\n# {marker}\n')
    (folder / TRITON_ENSEMBLE / version / "README").write_text("ensemble\n")
    metadata = {
        "model_name": MODEL,
        "model_version": version,
        "policies": ["hate"],
        "thresholds": {"hate": 0.5},
    }
    (folder / TRITON_POSTPROCESS / version).mkdir(parents=True)
    (folder / TRITON_POSTPROCESS / version / SERVING_METADATA_FILE).write_text(json.dumps(metadata))
    return folder


def champion(
    tmp_path: Path, model: str, repository_version: str | None, marker: str = "", promote: bool = True
) -> str:
    """Logs a run (with a fake repository unless `repository_version` is None), registers it, promotes it."""
    tags = {}
    with mlflow.start_run() as run:
        if repository_version is not None:  # logged as the export step logs it: files, manifest, its hash
            folder = fake_repository(tmp_path / f"export-{marker or 'x'}", repository_version, marker)
            mlflow.log_artifacts(str(folder), TRITON_REPOSITORY_ARTIFACT)
            manifest = tmp_path / f"manifest-{marker or 'x'}" / REPOSITORY_MANIFEST_FILE
            manifest.parent.mkdir()
            manifest.write_bytes(repository_manifest(folder))
            mlflow.log_artifact(str(manifest))
            tags[TAG_REPOSITORY_MANIFEST] = manifest_sha256(manifest.read_bytes())
    model_dir = tmp_path / f"model-{marker or 'x'}"
    model_dir.mkdir()
    (model_dir / "model_spec.json").write_text("{}")
    source = log_model_folder(run.info.run_id, model_dir)
    info = register_challenger(model, run.info.run_id, source, tags=tags)
    if promote:
        promote_version(model, info.version)
    return info.version


def test_downloads_the_champion_repository_into_the_serving_cache(registry, mlflow_isolation, tmp_path):
    model = f"{MODEL}-download"
    version = champion(tmp_path, model, "1", marker="first")
    assert version == "1"

    path = champion_repository(model, registry)

    assert path == (mlflow_isolation / "serving" / model / "1").resolve()
    assert "first" in (path / TRITON_ENSEMBLE / "config.pbtxt").read_text()
    assert (path / TRITON_ENSEMBLE / "1" / "README").is_file()
    assert repository_metadata(path)["model_version"] == "1"
    assert [p.name for p in path.parent.iterdir()] == ["1"]  # no staging folder left behind


def test_a_complete_copy_is_reused_without_downloading(registry, tmp_path, monkeypatch):
    model = f"{MODEL}-reuse"
    champion(tmp_path, model, "1")
    first = champion_repository(model, registry)
    stamp = (first / TRITON_ENSEMBLE / "config.pbtxt").stat().st_mtime_ns

    def refuse(*args, **kwargs):
        raise AssertionError("must not download again")

    monkeypatch.setattr(store, "_download", refuse)
    assert champion_repository(model, registry) == first
    assert (first / TRITON_ENSEMBLE / "config.pbtxt").stat().st_mtime_ns == stamp


def test_a_new_champion_gets_its_own_folder(registry, tmp_path):
    model = f"{MODEL}-new-champion"
    champion(tmp_path, model, "1", marker="one")
    first = champion_repository(model, registry)
    champion(tmp_path, model, "2", marker="two")
    second = champion_repository(model, registry)
    assert (first.name, second.name) == ("1", "2")
    assert "two" in (second / TRITON_ENSEMBLE / "config.pbtxt").read_text()
    # A challenger that was never promoted changes nothing.
    champion(tmp_path, model, "3", marker="three", promote=False)
    assert champion_repository(model, registry) == second


def test_a_damaged_cached_copy_is_replaced(registry, tmp_path):
    model = f"{MODEL}-damaged"
    champion(tmp_path, model, "1", marker="good")
    path = champion_repository(model, registry)
    (path / TRITON_ENSEMBLE / "config.pbtxt").unlink()  # e.g. a hand-edited or half-deleted cache
    assert champion_repository(model, registry) == path
    assert "good" in (path / TRITON_ENSEMBLE / "config.pbtxt").read_text()


def test_explicit_destination(registry, tmp_path):
    model = f"{MODEL}-dest"
    champion(tmp_path, model, "1")
    dest = tmp_path / "somewhere" / "repo"
    assert champion_repository(model, registry, dest=dest) == dest.resolve()
    assert (dest / TRITON_ENSEMBLE / "1").is_dir()
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    with pytest.raises(ServingStoreError, match="exists and is not the repository"):
        champion_repository(model, registry, dest=occupied)
    assert (occupied / "keep.txt").read_text() == "mine"


def test_no_champion_is_a_clear_error(registry, tmp_path):
    with pytest.raises(ChampionNotFoundError, match="no 'champion' version.*tns run training"):
        champion_repository(f"{MODEL}-missing", registry)
    model = f"{MODEL}-challenger-only"
    champion(tmp_path, model, "1", promote=False)
    with pytest.raises(ChampionNotFoundError, match=model):
        champion_repository(model, registry)


def test_champion_without_exported_repository_is_a_clear_error(registry, tmp_path):
    model = f"{MODEL}-not-exported"
    champion(tmp_path, model, None)
    with pytest.raises(
        RepositoryNotExportedError, match=f"no exported Triton repository.*'{TRITON_REPOSITORY_ARTIFACT}'"
    ):
        champion_repository(model, registry)


def test_repository_of_another_version_is_refused(registry, tmp_path, mlflow_isolation):
    model = f"{MODEL}-wrong-version"
    champion(tmp_path, model, "7")  # registered as version 1, exported as 7
    with pytest.raises(ServingStoreError, match="not a model repository for version 1"):
        champion_repository(model, registry)
    assert not (mlflow_isolation / "serving" / model / "1").exists()
    assert list((mlflow_isolation / "serving" / model).iterdir()) == []


def test_repository_metadata_refuses_other_folders(tmp_path):
    with pytest.raises(ServingStoreError, match="not a Triton model repository"):
        repository_metadata(tmp_path)


def test_a_version_without_a_manifest_tag_is_refused(registry, mlflow_isolation, tmp_path):
    version = champion(tmp_path, f"{MODEL}-untagged", "1", marker="untagged")
    from core.registry.mlflow_registry import _client

    _client().delete_model_version_tag(f"{MODEL}-untagged", version, TAG_REPOSITORY_MANIFEST)
    with pytest.raises(
        store.RepositoryIntegrityError, match="exported before repositories carried a manifest"
    ):
        champion_repository(f"{MODEL}-untagged", registry)
