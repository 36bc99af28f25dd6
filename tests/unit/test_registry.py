"""MLflow registry on a real sqlite store in a temporary folder: experiment, versions, aliases, downloads, tags."""

from __future__ import annotations

import contextlib
import getpass
import threading
import time
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from components.registry.executor import promote_step, record_rejection_step, register_step
from core.common.constants import (
    ALIAS_CHALLENGER,
    ALIAS_CHAMPION,
    ALIAS_PREVIOUS,
    BLESSED,
    MLFLOW_EXPERIMENT,
    NOT_BLESSED,
)
from core.config.run import RunConfig
from core.registry.mlflow_registry import (
    LOCK_SUFFIX,
    ModelVersionInfo,
    PromotionConflict,
    PromotionLockTimeout,
    configure,
    default_tracking_uri,
    download_model,
    flatten,
    get_alias,
    latest_versions,
    log_model_folder,
    mark_version_failed,
    promote_version,
    promotion_lock,
    record_forced_promotion,
    register_challenger,
)


@pytest.fixture(scope="module")
def shared_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One sqlite store for the tests that only add models (creating a store costs about 2 s)."""
    return f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}"


@pytest.fixture
def registry(mlflow_isolation, shared_uri: str) -> str:
    return configure(shared_uri)


def _model_folder(folder: Path, marker: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(b"weights:" + marker)
    (folder / "model_spec.json").write_text('{"policies": ["hate"]}', encoding="utf-8")
    (folder / "text_encoder").mkdir(exist_ok=True)
    (folder / "text_encoder" / "tokenizer.json").write_text("{}", encoding="utf-8")
    return folder


def _logged_run(folder: Path) -> tuple[str, str]:
    with mlflow.start_run() as run:
        mlflow.log_param("marker", folder.name)
    return run.info.run_id, log_model_folder(run.info.run_id, folder)


# Configuration --------------------------------------------------------------------------------------------
def test_configure_creates_the_experiment_and_artifact_folder(mlflow_isolation, tmp_path: Path):
    database = tmp_path / "nested" / "mlflow.db"
    uri = f"sqlite:///{database}"
    assert configure(uri) == uri
    assert database.is_file()
    experiment = mlflow.get_experiment_by_name(MLFLOW_EXPERIMENT)
    assert experiment is not None
    assert experiment.artifact_location == (database.parent / "artifacts").as_uri()
    assert mlflow.get_tracking_uri() == uri
    assert configure(uri) == uri  # idempotent: same experiment, no error
    assert mlflow.get_experiment_by_name(MLFLOW_EXPERIMENT).experiment_id == experiment.experiment_id
    with mlflow.start_run() as run:
        pass
    assert run.info.experiment_id == experiment.experiment_id


def test_default_tracking_uri_lives_under_tns_home(mlflow_isolation, monkeypatch: pytest.MonkeyPatch):
    home = mlflow_isolation
    assert default_tracking_uri() == f"sqlite:///{home.resolve() / 'mlflow' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert default_tracking_uri() == "http://127.0.0.1:5999"


def test_flatten_makes_dotted_string_params():
    flat = flatten(RunConfig().to_dict())
    assert flat["train.epochs"] == "40"
    assert flat["gate.min_roc_auc.default"] == "0.85"
    assert flat["policies"] == "['hate', 'violence', 'sexual', 'spam']"
    assert all(isinstance(v, str) for v in flat.values())
    assert len(flatten({"long": "x" * 2000})["long"]) == 500


# Versions and aliases -------------------------------------------------------------------------------------
def test_get_alias_of_a_missing_model_is_none(registry):
    assert get_alias("no-such-model") is None
    assert get_alias("no-such-model", ALIAS_PREVIOUS) is None
    assert latest_versions("no-such-model") == []


def test_challenger_becomes_champion_only_when_promoted_and_keeps_previous(registry, tmp_path: Path):
    name = "two-versions"
    run1, source1 = _logged_run(_model_folder(tmp_path / "m1", b"1"))
    run2, source2 = _logged_run(_model_folder(tmp_path / "m2", b"2"))
    assert source1.endswith("/model")

    first = register_challenger(name, run1, source1, {"tns.git_commit": "abc"}, description="first")
    assert first == ModelVersionInfo(name, "1", source1, run1)
    assert get_alias(name, ALIAS_CHALLENGER).version == "1"
    assert get_alias(name) is None  # registered, not promoted
    assert promote_version(name, "1") is None  # no champion was replaced
    assert get_alias(name).version == "1"
    assert get_alias(name, ALIAS_CHALLENGER) is None
    assert get_alias(name, ALIAS_PREVIOUS) is None

    second = register_challenger(name, run2, source2, {"tns.git_commit": "def"})
    assert second.version == "2"
    assert get_alias(name).version == "1"  # champion stays until promotion
    assert promote_version(name, "2").version == "1"
    champion, previous = get_alias(name, ALIAS_CHAMPION), get_alias(name, ALIAS_PREVIOUS)
    assert (champion.version, champion.run_id, champion.source) == ("2", run2, source2)
    assert (previous.version, previous.run_id, previous.source) == ("1", run1, source1)
    assert latest_versions(name) == ["1", "2"]

    version = MlflowClient().get_model_version(name, "2")
    assert version.tags["tns.git_commit"] == "def"
    assert MlflowClient().get_model_version(name, "1").description == "first"


def test_a_failed_export_blocks_promotion_and_leaves_champion(registry, tmp_path: Path):
    name = "blocked"
    run1, source1 = _logged_run(_model_folder(tmp_path / "m1", b"1"))
    run2, source2 = _logged_run(_model_folder(tmp_path / "m2", b"2"))
    register_challenger(name, run1, source1, {})
    promote_version(name, "1")
    register_challenger(name, run2, source2, {})
    mark_version_failed(name, "2", "infra_validation", "http batch: max |Triton - PyTorch| 3e-02 > 1e-04")
    assert get_alias(name).version == "1"
    assert get_alias(name, ALIAS_CHALLENGER) is None
    tags = MlflowClient().get_model_version(name, "2").tags
    assert tags["tns.promotion"] == "BLOCKED"
    assert tags["tns.blocked_at"] == "infra_validation"
    assert "3e-02 > 1e-04" in tags["tns.blocked_reason"]
    with pytest.raises(ValueError, match="infra validation did not pass"):
        promote_step(
            name, "2", {"passed": False, "reason": "server ready: model classifier failed"}, registry
        )
    assert get_alias(name).version == "1"
    promote_step(name, "2", {"passed": True}, registry)
    assert get_alias(name).version == "2" and get_alias(name, ALIAS_PREVIOUS).version == "1"
    assert MlflowClient().get_model_version(name, "2").tags["tns.infra_validation"] == "PASSED"


def test_download_model_gets_the_files_back(registry, tmp_path: Path):
    folder = _model_folder(tmp_path / "original", b"download-me")
    run_id, source = _logged_run(folder)
    info = register_challenger("downloadable", run_id, source, {})
    promote_version("downloadable", info.version)
    target = download_model(get_alias("downloadable"), tmp_path / "downloaded")
    assert target.is_dir()
    for relative in ("model.safetensors", "model_spec.json", "text_encoder/tokenizer.json"):
        assert (target / relative).read_bytes() == (folder / relative).read_bytes()
    assert info.version == "1"
    default_location = download_model(info)  # no destination: a fresh temporary folder
    assert (default_location / "model.safetensors").read_bytes() == b"weights:download-me"


def test_record_forced_promotion_sets_tags(registry, monkeypatch: pytest.MonkeyPatch):
    with mlflow.start_run() as run:
        pass
    monkeypatch.setenv("TNS_USER", "alice")
    record_forced_promotion(run.info.run_id, "hotfix for incident 42")
    tags = MlflowClient().get_run(run.info.run_id).data.tags
    assert tags["tns.forced_promotion"] == "true"
    assert tags["tns.forced_by"] == "alice"
    assert tags["tns.force_reason"] == "hotfix for incident 42"

    monkeypatch.delenv("TNS_USER")
    record_forced_promotion(run.info.run_id, "again")
    assert MlflowClient().get_run(run.info.run_id).data.tags["tns.forced_by"] == getpass.getuser()


# Register and reject steps --------------------------------------------------------------------------------
def _decision(decision: str, forced: bool = False) -> dict:
    return {
        "decision": decision,
        "forced": forced,
        "force_reason": "accepted risk" if forced else None,
        "summary": f"{decision} summary",
        "reasons": [
            {"check": "floor", "passed": True, "message": "roc_auc[hate] 0.900 >= floor 0.850: pass"},
            {"check": "floor", "passed": False, "message": "roc_auc[spam] 0.700 < floor 0.850: fail"},
        ],
    }


def test_register_step_refuses_a_model_that_is_not_blessed(registry, tmp_path: Path):
    run_id, _ = _logged_run(_model_folder(tmp_path / "m", b"x"))
    config = RunConfig(model_name="refused-model")
    with pytest.raises(ValueError, match="NOT_BLESSED"):
        register_step(run_id, _decision(NOT_BLESSED), config, {}, registry)
    assert latest_versions("refused-model") == []


def test_register_step_records_lineage_and_forced_promotion(registry, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TNS_USER", "bob")
    run_id, source = _logged_run(_model_folder(tmp_path / "m", b"forced"))
    config = RunConfig(model_name="forced-model")
    info = register_step(
        run_id,
        _decision(BLESSED, forced=True),
        config,
        {"dataset_fingerprint": "f00d", "git_commit": "c0"},
        registry,
    )
    assert info.version == "1"
    assert info.source == source
    assert get_alias("forced-model", ALIAS_CHALLENGER).version == "1"
    assert get_alias("forced-model") is None  # champion moves only after infra validation
    version = MlflowClient().get_model_version("forced-model", "1")
    assert version.tags["tns.dataset_fingerprint"] == "f00d"
    assert version.tags["tns.git_commit"] == "c0"
    assert version.tags["tns.run_id"] == run_id
    assert version.tags["tns.gate_decision"] == BLESSED
    assert version.tags["tns.forced"] == "true"
    assert version.description == "BLESSED summary"
    run_tags = MlflowClient().get_run(run_id).data.tags
    assert run_tags["tns.forced_by"] == "bob"
    assert run_tags["tns.force_reason"] == "accepted risk"


def test_record_rejection_tags_the_run_with_failed_checks_only(registry):
    with mlflow.start_run() as run:
        pass
    record_rejection_step(run.info.run_id, _decision(NOT_BLESSED), registry)
    tags = MlflowClient().get_run(run.info.run_id).data.tags
    assert tags["tns.gate_decision"] == NOT_BLESSED
    assert tags["tns.gate_failed_checks"] == "roc_auc[spam] 0.700 < floor 0.850: fail"
    assert "tns.forced_promotion" not in tags


def _three_versions(name: str, tmp_path: Path) -> None:
    """Version 1 champion; versions 2 and 3 registered after it (3 is the challenger now)."""
    for marker in (b"1", b"2", b"3"):
        run, source = _logged_run(_model_folder(tmp_path / marker.decode(), marker))
        register_challenger(name, run, source, {})
        if marker == b"1":
            promote_version(name, "1")


def test_two_concurrent_promotions_leave_champion_and_previous_consistent(registry, tmp_path: Path):
    """Finding: promotion had no compare-and-swap; two runs gated against the same champion both moved it, and
    the first one's version was lost from `previous`. Now exactly one wins: the one still `challenger`."""
    name = "concurrent"
    _three_versions(name, tmp_path)
    decision = {"decision": BLESSED, "champion_version": "1"}
    barrier, outcomes = threading.Barrier(2), {}

    def promote(version: str) -> None:
        barrier.wait()
        try:
            outcomes[version] = promote_step(name, version, {"passed": True}, registry, decision=decision)
        except PromotionConflict as error:
            outcomes[version] = error

    threads = [threading.Thread(target=promote, args=(v,)) for v in ("2", "3")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes["3"] == "1"
    # Refused whichever took the lock first: the champion moved, or version 2 was no longer the challenger.
    assert isinstance(outcomes["2"], PromotionConflict) and "not promoting version 2" in str(outcomes["2"])
    assert (get_alias(name).version, get_alias(name, ALIAS_PREVIOUS).version) == ("3", "1")
    assert get_alias(name, ALIAS_CHALLENGER) is None
    tags = MlflowClient().get_model_version(name, "2").tags
    assert tags["tns.promotion"] == "REFUSED" and tags["tns.refused_reason"] == str(outcomes["2"])
    assert promote_step(name, "3", {"passed": True}, registry, decision=decision) == "1"  # a retry: no change
    assert (get_alias(name).version, get_alias(name, ALIAS_PREVIOUS).version) == ("3", "1")


def test_a_stale_promotion_is_refused_with_both_versions_named(registry, tmp_path: Path):
    name = "stale"
    _three_versions(name, tmp_path)
    promote_step(name, "3", {"passed": True}, registry, decision={"champion_version": "1"})
    client = MlflowClient()
    client.set_registered_model_alias(name, ALIAS_CHALLENGER, "2")  # the slow run's version, still challenger
    with pytest.raises(
        PromotionConflict, match="against champion version 1, but the champion is now version 3"
    ):
        promote_step(name, "2", {"passed": True}, registry, decision={"champion_version": "1"})
    assert (get_alias(name).version, get_alias(name, ALIAS_PREVIOUS).version) == ("3", "1")
    with pytest.raises(PromotionConflict, match="champion none, but the champion is now version 3"):
        promote_step(name, "2", {"passed": True}, registry, decision={"champion_version": None})


def test_the_promotion_lock_excludes_and_expires(registry):
    """The lock on a real registry: concurrent read-modify-writes lose no update inside it (and do outside it,
    which shows the check can fail); a live lock makes a promoter wait and give up naming the holder; a lock
    past its lease is broken."""
    client = MlflowClient()
    client.create_registered_model("counter")

    def increments(locked: bool, workers: int = 5) -> int:
        client.set_registered_model_tag("counter", "n", "0")
        barrier = threading.Barrier(workers)

        def work() -> None:
            barrier.wait()
            with promotion_lock("counter", wait_s=60) if locked else contextlib.nullcontext():
                value = int(MlflowClient().get_registered_model("counter").tags["n"])
                time.sleep(0.05)
                MlflowClient().set_registered_model_tag("counter", "n", str(value + 1))

        threads = [threading.Thread(target=work) for _ in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return int(client.get_registered_model("counter").tags["n"])

    assert increments(locked=True) == 5
    assert increments(locked=False) < 5
    with promotion_lock("held") as lock, pytest.raises(PromotionLockTimeout, match=f"held by {lock.owner}"):  # noqa: SIM117
        with promotion_lock("held", wait_s=0.2):
            pass
    with promotion_lock("crashed", lease_s=0.01):
        time.sleep(0.05)
        with promotion_lock("crashed", wait_s=5):  # the first holder's lease ran out: broken, not waited for
            pass
    assert get_alias("held" + LOCK_SUFFIX) is None
    names = {m.name for m in client.search_registered_models()}
    assert not any(n.endswith(LOCK_SUFFIX) for n in names)
