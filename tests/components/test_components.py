"""KFP components called through `.python_func` with real local artifacts, in pipeline order.

ingest -> validate -> split -> train -> evaluate -> policy_metrics -> gate -> register, then a second gate with
high floors (compared against the new champion) -> record_rejection. MLflow runs on sqlite in a temporary
folder; the tiny random-init BERT keeps training to a few seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Markdown, Metrics, Model
from mlflow import MlflowClient

from components.data.component import ingest_data, split_data
from components.evaluation.component import evaluate_model, gate_model, policy_metrics
from components.export.component import export_model, infra_validate
from components.registry.component import promote_model, record_rejection, register_model
from components.training.component import train_model
from components.validation.component import validate_data
from core.common.constants import (
    ALIAS_CHALLENGER,
    ALIAS_CHAMPION,
    BLESSED,
    DATASET_FINGERPRINT,
    DATASET_TABLE,
    EVALUATION_FILE,
    EXPORT_REPORT_FILE,
    GATE_DECISION_FILE,
    INFRA_VALIDATION_FILE,
    MODALITIES,
    MODEL_SPEC,
    MODEL_WEIGHTS,
    NOT_BLESSED,
    ONNX_INT8_MODEL_FILE,
    ONNX_MODEL_FILE,
    REPOSITORY_DIR,
    SPLITS,
    SPLITS_TABLE,
    TEST_SCORES_FILE,
    TRITON_CLASSIFIER,
    TRITON_CPU_CONFIG,
    TRITON_ENSEMBLE,
    TRITON_POSTPROCESS,
    TRITON_PREPROCESS,
    TRITON_REPOSITORY_ARTIFACT,
)
from core.config.run import RunConfig
from core.data.ingest import read_fingerprint, read_preparation
from core.data.lineage import DataLineage
from core.export.onnx_export import ExportError
from core.registry.mlflow_registry import get_alias
from core.validation.outcome import DataValidationError
from serving.infra_validation import InfraValidationError
from tests.fault_injection import broken_onnxruntime_backends

GIT_COMMIT = "0123abcd"
POLICIES = list(RunConfig().policies)


def _config(text_encoder: Path, **gate) -> dict:
    return {
        "train": {
            "text_encoder": str(text_encoder),
            "image_encoder": "cnn",
            "epochs": 1,
            "image_size": 16,
            "hidden_dim": 16,
            "lexical_buckets": 4096,
        },
        "evaluation": {"bootstrap_samples": 10},
        "gate": {
            "min_roc_auc": {"default": gate.get("roc", 0.0)},
            "min_pr_auc": {"default": gate.get("pr", 0.0)},
        },
    }


def _artifact(kind, root: Path, name: str, suffix: str = ""):
    """A local output artifact whose path is root/name[suffix] (kfp maps a plain local uri to the path)."""
    root.mkdir(parents=True, exist_ok=True)
    artifact = kind(name=name, uri=str(root / f"{name}{suffix}"), metadata={})
    assert artifact.path == str(root / f"{name}{suffix}")
    return artifact


# Shared pipeline state ------------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def workspace(tmp_path_factory: pytest.TempPathFactory):
    """Module-wide TNS_HOME and tracking URI; MLflow's process-global URI is reset afterwards."""
    root = tmp_path_factory.mktemp("components")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TNS_HOME", str(root / "home"))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("TNS_FAILURE_FILE", raising=False)
        yield {"root": root, "uri": f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"}
        mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def ingested(workspace, tiny_raw_dataset, tiny_text_encoder):
    dataset = _artifact(Dataset, workspace["root"] / "ingest", "dataset")
    config_json = ingest_data.python_func(
        data_uri=str(tiny_raw_dataset),
        config_json=json.dumps(_config(tiny_text_encoder)),
        policies=[],
        dataset=dataset,
    )
    return dataset, config_json


@pytest.fixture(scope="module")
def split(workspace, ingested):
    dataset, config_json = ingested
    splits = _artifact(Dataset, workspace["root"] / "split", "splits")
    split_data.python_func(dataset=dataset, config_json=config_json, splits=splits)
    return splits


@pytest.fixture(scope="module")
def trained(workspace, ingested, split):
    dataset, config_json = ingested
    model = _artifact(Model, workspace["root"] / "train", "model")
    metrics = _artifact(Metrics, workspace["root"] / "train", "metrics")
    outputs = train_model.python_func(
        dataset=dataset,
        splits=split,
        config_json=config_json,
        mlflow_tracking_uri=workspace["uri"],
        git_commit=GIT_COMMIT,
        model=model,
        metrics=metrics,
    )
    return model, metrics, outputs.mlflow_run_id


def _evaluate(workspace, ingested, split, trained, name: str, config_json: str) -> tuple[dict, object]:
    """Runs the evaluate component into `<root>/<name>`; returns its artifacts and outputs."""
    dataset, _ = ingested
    model, _, run_id = trained
    root = workspace["root"] / name
    artifacts = {
        "evaluation": _artifact(Artifact, root, "evaluation"),
        "metrics": _artifact(Metrics, root, "metrics"),
        "report": _artifact(HTML, root, "report", ".html"),
        "model_card": _artifact(Markdown, root, "model_card", ".md"),
    }
    outputs = evaluate_model.python_func(
        dataset=dataset,
        splits=split,
        model=model,
        config_json=config_json,
        mlflow_run_id=run_id,
        mlflow_tracking_uri=workspace["uri"],
        git_commit=GIT_COMMIT,
        **artifacts,
    )
    return artifacts, outputs


@pytest.fixture(scope="module")
def evaluated(workspace, ingested, split, trained):
    return _evaluate(workspace, ingested, split, trained, "evaluate", ingested[1])


def _gate(workspace, ingested, split, evaluated, name: str, config_json: str, **force):
    dataset, _ = ingested
    root = workspace["root"] / name
    decision = _artifact(Artifact, root, "decision")
    summary = _artifact(Markdown, root, "summary", ".md")
    verdict = gate_model.python_func(
        evaluation=evaluated[0]["evaluation"],
        dataset=dataset,
        splits=split,
        config_json=config_json,
        mlflow_tracking_uri=workspace["uri"],
        force_promote=force.get("force_promote", False),
        force_reason=force.get("force_reason", ""),
        decision=decision,
        summary=summary,
    )
    return verdict, decision, summary


@pytest.fixture(scope="module")
def gated(workspace, ingested, split, evaluated):
    return _gate(workspace, ingested, split, evaluated, "gate", ingested[1])


@pytest.fixture(scope="module")
def registered(workspace, ingested, split, trained, gated):
    dataset, config_json = ingested
    _, decision, _ = gated
    summary = _artifact(Markdown, workspace["root"] / "register", "summary", ".md")
    version = register_model.python_func(
        decision=decision,
        dataset=dataset,
        splits=split,
        config_json=config_json,
        mlflow_run_id=trained[2],
        mlflow_tracking_uri=workspace["uri"],
        git_commit=GIT_COMMIT,
        summary=summary,
    )
    return version, summary


def _export(
    workspace, ingested, split, trained, evaluated, version: str, config_json: str, name: str = "export"
):
    dataset, _ = ingested
    root = workspace["root"] / name
    export = _artifact(Model, root, "export")
    parity = _artifact(Metrics, root, "parity")
    repository = export_model.python_func(
        model=trained[0],
        evaluation=evaluated[0]["evaluation"],
        dataset=dataset,
        splits=split,
        config_json=config_json,
        model_version=version,
        mlflow_run_id=trained[2],
        mlflow_tracking_uri=workspace["uri"],
        export=export,
        parity=parity,
    )
    return repository, export, parity


@pytest.fixture(scope="module")
def exported(workspace, ingested, split, trained, evaluated, registered):
    return _export(workspace, ingested, split, trained, evaluated, registered[0], ingested[1])


def _infra_validate(workspace, ingested, trained, export, version: str, name: str = "infra"):
    root = workspace["root"] / name
    artifacts = {
        "validation": _artifact(Artifact, root, "validation"),
        "latency": _artifact(Metrics, root, "latency"),
        "report": _artifact(Markdown, root, "report", ".md"),
    }
    verdict = infra_validate.python_func(
        export=export,
        config_json=ingested[1],
        model_version=version,
        mlflow_run_id=trained[2],
        mlflow_tracking_uri=workspace["uri"],
        **artifacts,
    )
    return verdict, artifacts


@pytest.fixture(scope="module")
def infra_validated(workspace, ingested, trained, registered, exported):
    return _infra_validate(workspace, ingested, trained, exported[1], registered[0])


@pytest.fixture(scope="module")
def promoted(workspace, ingested, gated, registered, infra_validated):
    summary = _artifact(Markdown, workspace["root"] / "promote", "summary", ".md")
    version = promote_model.python_func(
        validation=infra_validated[1]["validation"],
        decision=gated[1],
        config_json=ingested[1],
        model_version=registered[0],
        mlflow_tracking_uri=workspace["uri"],
        summary=summary,
    )
    return version, summary


@pytest.fixture(scope="module")
def strict_config(ingested, tiny_text_encoder) -> str:
    return json.dumps(_config(tiny_text_encoder, roc=0.999, pr=1.0))


@pytest.fixture(scope="module")
def rejected(workspace, ingested, split, evaluated, promoted, strict_config):
    """A second gate with floors no model reaches, after version 1 became champion."""
    return _gate(workspace, ingested, split, evaluated, "gate_strict", strict_config)


# Ingest ---------------------------------------------------------------------------------------------------
def test_ingest_writes_the_dataset_and_metadata(ingested, tiny_raw_dataset, tiny_text_encoder):
    dataset, config_json = ingested
    folder = Path(dataset.path)
    assert (folder / DATASET_TABLE).is_file()
    assert (folder / DATASET_FINGERPRINT).is_file()
    assert any((folder / "images").rglob("*.png"))
    fingerprint = read_fingerprint(folder)
    # The generated data repeats one item (same text and image): ingest collapses the copy.
    assert (dataset.metadata["rows_read"], dataset.metadata["rows"]) == (240, 239)
    assert read_preparation(folder).copies_dropped == 1
    assert dataset.metadata["fingerprint"] == fingerprint["fingerprint"]
    assert dataset.metadata["source"] == str(tiny_raw_dataset.resolve())
    assert dataset.metadata["policies"] == POLICIES
    assert config_json == RunConfig.from_dict(_config(tiny_text_encoder)).to_json()


def test_ingest_embedded_default_dataset(tmp_path: Path):
    dataset = _artifact(Dataset, tmp_path, "dataset")
    config_json = ingest_data.python_func(data_uri="", config_json="{}", policies=[], dataset=dataset)
    assert RunConfig.from_json(config_json) == RunConfig()
    assert (dataset.metadata["rows_read"], dataset.metadata["rows"]) == (4000, 3954)  # 46 copies collapsed
    assert dataset.metadata["policies"] == POLICIES
    assert "embedded default dataset" in dataset.metadata["source"]
    table = pd.read_parquet(Path(dataset.path) / DATASET_TABLE)
    assert set(POLICIES) <= set(table.columns)


def test_ingest_policy_override(tmp_path: Path, tiny_raw_dataset: Path):
    dataset = _artifact(Dataset, tmp_path, "dataset")
    config_json = ingest_data.python_func(
        data_uri=str(tiny_raw_dataset), config_json="{}", policies=["spam", "hate"], dataset=dataset
    )
    assert RunConfig.from_json(config_json).policies == ["spam", "hate"]
    assert dataset.metadata["policies"] == ["spam", "hate"]
    assert read_fingerprint(dataset.path)["policies"] == ["spam", "hate"]


def test_ingest_embedded_default_with_a_policy_subset(tmp_path: Path):
    dataset = _artifact(Dataset, tmp_path, "dataset")
    config_json = ingest_data.python_func(
        data_uri="", config_json="{}", policies=["hate", "spam"], dataset=dataset
    )
    assert RunConfig.from_json(config_json).policies == ["hate", "spam"]
    assert (dataset.metadata["rows_read"], dataset.metadata["rows"]) == (4000, 3954)  # 46 copies collapsed


def test_ingest_failure_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    failure = tmp_path / "failure.json"
    monkeypatch.setenv("TNS_FAILURE_FILE", str(failure))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no manifest"):
        ingest_data.python_func(
            data_uri=str(tmp_path / "empty"),
            config_json="{}",
            policies=[],
            dataset=_artifact(Dataset, tmp_path, "d"),
        )
    record = json.loads(failure.read_text(encoding="utf-8"))
    assert record["step"] == "ingest"
    assert record["type"] == "DatasetFormatError"


# Validate -------------------------------------------------------------------------------------------------
def test_validate_passes_and_writes_reports(workspace, ingested):
    dataset, config_json = ingested
    root = workspace["root"] / "validate"
    report, summary = _artifact(HTML, root, "report", ".html"), _artifact(Markdown, root, "summary", ".md")
    validate_data.python_func(dataset=dataset, config_json=config_json, report=report, summary=summary)
    html = Path(report.path).read_text(encoding="utf-8")
    assert "<html" in html.lower() and "row_count" in html
    assert "image_file_found" in Path(summary.path).read_text(encoding="utf-8")
    assert summary.metadata["rows"] == 239
    assert isinstance(summary.metadata["warnings"], int)


@pytest.fixture
def broken_raw_dataset(tmp_path: Path, tiny_raw_dataset: Path) -> Path:
    """The tiny dataset with one image reference pointing at a file that does not exist."""
    folder = tmp_path / "broken"
    shutil.copytree(tiny_raw_dataset, folder)
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    target = next(row for row in rows if row["image"])
    target["image"] = "images/does-not-exist.png"
    (folder / "manifest.jsonl").write_text(
        "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8"
    )
    return folder


def test_validate_failure_raises_writes_the_report_and_the_failure_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broken_raw_dataset: Path
):
    failure = tmp_path / "failure.json"
    monkeypatch.setenv("TNS_FAILURE_FILE", str(failure))
    dataset = _artifact(Dataset, tmp_path / "ingest", "dataset")
    config_json = ingest_data.python_func(
        data_uri=str(broken_raw_dataset), config_json="{}", policies=[], dataset=dataset
    )
    assert not failure.exists()  # ingest is lenient: it records, validation judges
    report = _artifact(HTML, tmp_path / "validate", "report", ".html")
    summary = _artifact(Markdown, tmp_path / "validate", "summary", ".md")
    with pytest.raises(DataValidationError, match="image_file_found") as caught:
        validate_data.python_func(dataset=dataset, config_json=config_json, report=report, summary=summary)
    assert [c.check for c in caught.value.outcome.failures()] == ["image_file_found"]
    html = Path(report.path).read_text(encoding="utf-8")
    assert "image_file_found" in html and "does-not-exist.png" in html
    record = json.loads(failure.read_text(encoding="utf-8"))
    assert record["step"] == "validate"
    assert record["type"] == "DataValidationError"
    assert "image_file_found" in record["error"]
    assert "1 of 239 rows" in record["error"] and "how to go on:" in record["error"]


# Split and train ------------------------------------------------------------------------------------------
def test_split_writes_the_table_and_counts(split):
    table = pd.read_parquet(Path(split.path) / SPLITS_TABLE)
    assert len(table) == 239
    assert {k: split.metadata[k] for k in SPLITS} == table["split"].value_counts().to_dict()
    assert sum(split.metadata[k] for k in SPLITS) == 239
    assert split.metadata["test"] > 0 and split.metadata["validation"] > 0


def test_train_writes_the_model_and_logs_metrics(workspace, ingested, trained, tiny_text_encoder):
    dataset, _ = ingested
    model, metrics, run_id = trained
    folder = Path(model.path)
    assert (folder / MODEL_WEIGHTS).is_file() and (folder / MODEL_SPEC).is_file()
    assert (folder / "training_summary.json").is_file()
    assert model.metadata == {"mlflow_run_id": run_id, "device": "cpu", "framework": "pytorch"}
    assert metrics.metadata["epochs_run"] == 1.0
    assert metrics.metadata["steps"] >= 1.0
    assert metrics.metadata["best_epoch"] == 1.0
    assert {"seconds", "train_samples_per_second"} <= set(metrics.metadata)

    mlflow.set_tracking_uri(workspace["uri"])
    run = MlflowClient().get_run(run_id)
    assert run.data.tags["tns.git_commit"] == GIT_COMMIT
    assert run.data.tags["tns.dataset_fingerprint"] == dataset.metadata["fingerprint"]
    assert run.data.tags["tns.policies"] == ",".join(POLICIES)
    assert run.data.params["train.epochs"] == "1"
    assert run.data.params["train.text_encoder"] == str(tiny_text_encoder)
    assert "validation_loss" in run.data.metrics
    logged = {f.path for f in MlflowClient().list_artifacts(run_id, "model")}
    assert f"model/{MODEL_WEIGHTS}" in logged and f"model/{MODEL_SPEC}" in logged


def _train_two_workers(workspace, ingested, split, folder: str, **train):
    """The train component with train.workers 2 (torchrun in the step) and `train` overrides: (model, outputs)."""
    dataset, config_json = ingested
    config = json.loads(config_json)
    config["train"].update(workers=2, **train)
    root = workspace["root"] / folder
    model = _artifact(Model, root, "model")
    outputs = train_model.python_func(
        dataset=dataset,
        splits=split,
        config_json=json.dumps(config),
        mlflow_tracking_uri=workspace["uri"],
        git_commit=GIT_COMMIT,
        model=model,
        metrics=_artifact(Metrics, root, "metrics"),
    )
    return model, outputs


def test_train_with_two_workers_runs_torchrun_and_rank_0_logs_each_epoch(workspace, ingested, split):
    model, outputs = _train_two_workers(workspace, ingested, split, "train_ddp", epochs=2, batch_size=16)
    folder = Path(model.path)
    assert (folder / MODEL_WEIGHTS).is_file() and (folder / MODEL_SPEC).is_file()
    summary = json.loads((folder / "training_summary.json").read_text(encoding="utf-8"))
    assert summary["world_size"] == 2 and summary["epochs_run"] == 2
    assert set(summary["calibration"]) == set(POLICIES)  # rank 0's summary
    mlflow.set_tracking_uri(workspace["uri"])
    client = MlflowClient()
    history = client.get_metric_history(outputs.mlflow_run_id, "validation_loss")
    assert sorted(m.step for m in history) == [1, 2]  # once per epoch: rank 0 alone logged
    assert client.get_run(outputs.mlflow_run_id).data.params["train.workers"] == "2"


def test_train_with_two_workers_fails_with_the_ranks_error(workspace, ingested, split):
    missing = str(workspace["root"] / "no_such_encoder")
    with pytest.raises(RuntimeError, match="(?s)2 processes.*no_such_encoder"):
        _train_two_workers(
            workspace, ingested, split, "train_ddp_failed", max_restarts=0, text_encoder=missing
        )
    assert not (workspace["root"] / "train_ddp_failed" / "model" / MODEL_WEIGHTS).exists()


# Evaluate and per-policy metrics --------------------------------------------------------------------------
def test_evaluate_writes_reports_and_metrics(workspace, trained, evaluated):
    artifacts, outputs = evaluated
    assert outputs.policies == sorted(POLICIES)
    folder = Path(artifacts["evaluation"].path)
    for name in (EVALUATION_FILE, TEST_SCORES_FILE, "model_card.json"):
        assert (folder / name).is_file(), name
    evaluation = json.loads((folder / EVALUATION_FILE).read_text(encoding="utf-8"))
    logged = artifacts["metrics"].metadata
    assert 0.0 <= logged["test_macro_roc_auc"] <= 1.0
    assert logged["test_macro_roc_auc"] == pytest.approx(evaluation["macro"]["roc_auc"])
    for policy in POLICIES:
        assert logged[f"test_roc_auc_{policy}"] == pytest.approx(evaluation["policies"][policy]["roc_auc"])
    assert "<html" in Path(artifacts["report"].path).read_text(encoding="utf-8").lower()
    assert GIT_COMMIT in Path(artifacts["model_card"].path).read_text(encoding="utf-8")

    mlflow.set_tracking_uri(workspace["uri"])
    run = MlflowClient().get_run(trained[2])
    assert run.data.metrics["test_macro_roc_auc"] == pytest.approx(logged["test_macro_roc_auc"])
    logged_files = {f.path for f in MlflowClient().list_artifacts(trained[2], "evaluation")}
    assert "evaluation/evaluation.json" in logged_files


def test_evaluate_of_a_streamed_run_reads_the_shards_and_scores_the_same(
    workspace, ingested, split, trained, evaluated
):
    config = json.loads(ingested[1])
    config["train"]["stream_above_rows"] = 0  # the run streams: evaluation reads the shards too
    artifacts, _ = _evaluate(workspace, ingested, split, trained, "evaluate_streamed", json.dumps(config))
    streamed = pd.read_parquet(Path(artifacts["evaluation"].path) / TEST_SCORES_FILE)
    from_files = pd.read_parquet(Path(evaluated[0]["evaluation"].path) / TEST_SCORES_FILE)
    pd.testing.assert_frame_equal(streamed, from_files, atol=1e-5, rtol=1e-4)
    assert artifacts["metrics"].metadata["test_macro_roc_auc"] == pytest.approx(
        evaluated[0]["metrics"].metadata["test_macro_roc_auc"], abs=1e-6
    )


def test_policy_metrics_publishes_roc_and_confusion_matrix(workspace, evaluated):
    artifacts, _ = evaluated
    evaluation = json.loads(
        (Path(artifacts["evaluation"].path) / EVALUATION_FILE).read_text(encoding="utf-8")
    )
    roc = _artifact(ClassificationMetrics, workspace["root"] / "policy_metrics", "roc")
    policy_metrics.python_func(evaluation=artifacts["evaluation"], policy="spam", roc=roc)
    values = evaluation["policies"]["spam"]
    assert roc.metadata["policy"] == "spam"
    assert roc.metadata["roc_auc"] == values["roc_auc"]
    assert roc.metadata["threshold"] == values["threshold"]
    assert len(roc.metadata["confidenceMetrics"]) == len(values["roc_curve"]["fpr"]) > 0
    matrix = roc.metadata["confusionMatrix"]
    assert [c["displayName"] for c in matrix["annotationSpecs"]] == ["not spam", "spam"]
    assert [row["row"] for row in matrix["rows"]] == values["confusion_matrix"]
    assert sum(sum(row["row"]) for row in matrix["rows"]) == values["rows"]


# Gate, register, reject -----------------------------------------------------------------------------------
def test_gate_blesses_a_first_model_with_low_floors(gated):
    verdict, decision, summary = gated
    assert verdict == BLESSED
    assert decision.metadata == {"decision": BLESSED, "forced": False}
    record = json.loads((Path(decision.path) / GATE_DECISION_FILE).read_text(encoding="utf-8"))
    assert record["decision"] == BLESSED
    assert record["compared_to_champion"] is False
    assert record["champion_evaluation"] is None
    assert len(record["reasons"]) == 2 * len(POLICIES)  # roc and pr floors, no regression checks
    assert Path(summary.path).read_text(encoding="utf-8").startswith(f"# Gate decision: {BLESSED}")


def test_register_creates_version_one_as_challenger(workspace, ingested, split, trained, registered):
    version, summary = registered
    assert version == "1"
    mlflow.set_tracking_uri(workspace["uri"])
    challenger = get_alias(RunConfig().model_name, ALIAS_CHALLENGER)
    assert challenger is not None and challenger.version == "1"
    assert challenger.run_id == trained[2]
    tags = MlflowClient().get_model_version(RunConfig().model_name, "1").tags
    assert tags["tns.dataset_fingerprint"] == ingested[0].metadata["fingerprint"]
    # The training data can be found again from the registry: the artifacts, checked against the fingerprint.
    lineage = DataLineage.from_tags(tags)
    assert lineage is not None and lineage.fingerprint == ingested[0].metadata["fingerprint"]
    dataset_dir, splits_dir = lineage.open()
    assert dataset_dir == Path(ingested[0].path).resolve() and splits_dir == Path(split.path).resolve()
    assert lineage.sources and lineage.sources[0] == read_fingerprint(dataset_dir)["source"]
    assert tags["tns.git_commit"] == GIT_COMMIT
    assert tags["tns.gate_decision"] == BLESSED
    text = Path(summary.path).read_text(encoding="utf-8")
    assert "version **1**" in text and "`challenger`" in text and trained[2] in text


# Export, infra validation, promotion ----------------------------------------------------------------------
def test_export_writes_the_repository_golden_batch_and_logs_to_mlflow(workspace, trained, exported):
    repository, export, parity = exported
    folder = Path(export.path)
    assert Path(repository) == folder / REPOSITORY_DIR
    for model in (TRITON_PREPROCESS, TRITON_CLASSIFIER, TRITON_POSTPROCESS, TRITON_ENSEMBLE):
        assert (folder / REPOSITORY_DIR / model / "config.pbtxt").is_file()
        assert (folder / REPOSITORY_DIR / model / "1").is_dir()  # version folder = registered version
    assert (folder / REPOSITORY_DIR / TRITON_CLASSIFIER / "1" / ONNX_MODEL_FILE).stat().st_size > 0
    report = json.loads((folder / EXPORT_REPORT_FILE).read_text(encoding="utf-8"))
    assert report["version"] == "1" and report["onnx_opset"] == 17
    assert report["parity"]["passed"] and 0 <= report["parity"]["max_abs_diff"] <= 1e-4
    assert set(report["parity"]["by_modality"]) == set(MODALITIES)
    assert parity.metadata["parity_max_abs_diff"] == report["parity"]["max_abs_diff"]
    assert export.metadata["version"] == "1"
    logged = {a.path for a in MlflowClient().list_artifacts(trained[2], TRITON_REPOSITORY_ARTIFACT)}
    assert {f"{TRITON_REPOSITORY_ARTIFACT}/{m}" for m in (TRITON_CLASSIFIER, TRITON_ENSEMBLE)} <= logged
    tags = MlflowClient().get_model_version(RunConfig().model_name, "1").tags
    assert tags["tns.export.onnx_sha256"] == report["onnx_sha256"]


def test_infra_validation_passes_and_records_latency(infra_validated):
    verdict, artifacts = infra_validated
    assert verdict == "PASSED"
    record = json.loads(
        (Path(artifacts["validation"].path) / INFRA_VALIDATION_FILE).read_text(encoding="utf-8")
    )
    assert record["passed"] and record["version"] == "1"
    names = [c["name"] for c in record["checks"]]
    for protocol in ("http", "grpc"):
        assert any(n.startswith(f"{protocol} single text-only") for n in names)
        assert any(n.startswith(f"{protocol} single image-only") for n in names)
        assert any(n.startswith(f"{protocol} batch") for n in names)
    assert record["max_abs_diff"] <= 1e-4
    metrics = artifacts["latency"].metadata
    assert metrics["load_seconds"] > 0 and metrics["grpc_p99_ms"] >= metrics["grpc_p50_ms"] > 0
    assert "PASSED" in Path(artifacts["report"].path).read_text(encoding="utf-8")


def test_promote_moves_champion_only_after_infra_validation(workspace, trained, promoted):
    version, summary = promoted
    assert version == "1"
    champion = get_alias(RunConfig().model_name, ALIAS_CHAMPION)
    assert champion.version == "1" and champion.run_id == trained[2]
    assert get_alias(RunConfig().model_name, ALIAS_CHALLENGER) is None
    assert "`champion`" in Path(summary.path).read_text(encoding="utf-8")


@pytest.fixture
def broken_backends(tmp_path: Path) -> Path:
    return broken_onnxruntime_backends(tmp_path / "backends")


def _second_challenger(workspace, ingested, split, trained, gated, name: str) -> str:
    """Registers the same model again as a new challenger version (champion stays at version 1)."""
    _, decision, _ = gated
    summary = _artifact(Markdown, workspace["root"] / name, "register_summary", ".md")
    return register_model.python_func(
        decision=decision,
        dataset=ingested[0],
        splits=split,
        config_json=ingested[1],
        mlflow_run_id=trained[2],
        mlflow_tracking_uri=workspace["uri"],
        git_commit=GIT_COMMIT,
        summary=summary,
    )


def test_failed_parity_blocks_promotion_and_leaves_no_export(
    workspace, ingested, split, trained, evaluated, gated, promoted, tmp_path, monkeypatch
):
    version = _second_challenger(workspace, ingested, split, trained, gated, "parity_failure")
    strict = json.loads(ingested[1])
    strict["export"] = {"parity_tolerance": 1e-12}  # no real export is that close to PyTorch
    monkeypatch.setenv("TNS_FAILURE_FILE", str(tmp_path / "failure.json"))
    with pytest.raises(
        ExportError, match=r"parity check failed: max \|PyTorch - onnxruntime\| = .* > tolerance"
    ):
        _export(workspace, ingested, split, trained, evaluated, version, json.dumps(strict), "parity_failure")
    assert list((workspace["root"] / "parity_failure" / "export").iterdir()) == []
    assert json.loads((tmp_path / "failure.json").read_text(encoding="utf-8"))["step"] == "export"
    assert get_alias(RunConfig().model_name, ALIAS_CHAMPION).version == "1"
    assert get_alias(RunConfig().model_name, ALIAS_CHALLENGER) is None
    tags = MlflowClient().get_model_version(RunConfig().model_name, version).tags
    assert tags["tns.promotion"] == "BLOCKED" and tags["tns.blocked_at"] == "export"
    assert "parity check failed" in tags["tns.blocked_reason"]


def test_int8_export_serves_the_quantized_classifier_on_cpu_and_infra_validates_it(
    workspace, ingested, split, trained, evaluated, gated, promoted
):
    """`export.cpu_quantization: int8`: the export measures the int8 classifier against fp32 on the test split
    and writes it beside the fp32 file; the CPU config serves it, and infra validation compares tritonserver's
    answers with in-process onnxruntime on that same file."""
    import onnx

    from serving.repository import parse

    version = _second_challenger(workspace, ingested, split, trained, gated, "int8")
    config = json.loads(ingested[1])
    config["export"] = {"cpu_quantization": "int8", "int8_min_agreement": 0.9, "int8_max_roc_auc_drop": 0.05}
    config_json = json.dumps(config)
    _, export, parity = _export(workspace, ingested, split, trained, evaluated, version, config_json, "int8")
    report = json.loads((Path(export.path) / EXPORT_REPORT_FILE).read_text(encoding="utf-8"))
    int8 = report["int8"]
    test_rows = split.metadata["test"]
    assert int8["passed"] and int8["items"] == test_rows
    assert set(int8["agreement"]) == set(POLICIES) and min(int8["agreement"].values()) >= 0.9
    assert 0 < int8["test_max_abs_diff"] < 0.1 and int8["golden_max_abs_diff"] <= int8["test_max_abs_diff"]
    assert parity.metadata["int8_min_agreement"] == min(int8["agreement"].values())
    classifier = Path(export.path) / REPOSITORY_DIR / TRITON_CLASSIFIER
    fp32_file, int8_file = classifier / version / ONNX_MODEL_FILE, classifier / version / ONNX_INT8_MODEL_FILE
    ops = {
        path.name: {node.op_type for node in onnx.load(str(path)).graph.node}
        for path in (fp32_file, int8_file)
    }
    assert "MatMulInteger" in ops[int8_file.name] and "MatMulInteger" not in ops[fp32_file.name]
    assert "Conv" in ops[int8_file.name] and "ConvInteger" not in ops[int8_file.name]  # images stay fp32
    cpu = parse((classifier / "configs" / f"{TRITON_CPU_CONFIG}.pbtxt").read_text(encoding="utf-8"))
    assert cpu.default_model_filename == ONNX_INT8_MODEL_FILE
    assert int(cpu.parameters["intra_op_thread_count"].string_value) >= 1
    gpu = parse((classifier / "config.pbtxt").read_text(encoding="utf-8"))
    assert gpu.default_model_filename == "" and not gpu.parameters  # GPU hosts serve fp32

    record = _infra_validate(workspace, ingested, trained, export, version, "int8_validate")[1]
    validated = json.loads(
        (Path(record["validation"].path) / INFRA_VALIDATION_FILE).read_text(encoding="utf-8")
    )
    assert validated["passed"] and validated["reference"] == f"onnxruntime {ONNX_INT8_MODEL_FILE}"
    assert validated["max_abs_diff"] <= 1e-4
    tags = MlflowClient().get_model_version(RunConfig().model_name, version).tags
    assert tags["tns.export.cpu_quantization"] == "int8" and tags["tns.infra_validation"] == "PASSED"


def test_failed_infra_validation_blocks_promotion(
    workspace, ingested, split, trained, evaluated, gated, promoted, broken_backends, monkeypatch
):
    version = _second_challenger(workspace, ingested, split, trained, gated, "infra_failure")
    _, export, _ = _export(
        workspace, ingested, split, trained, evaluated, version, ingested[1], "infra_failure"
    )
    monkeypatch.setenv("TNS_TRITON_BACKENDS", str(broken_backends))
    with pytest.raises(InfraValidationError, match="server ready"):
        _infra_validate(workspace, ingested, trained, export, version, "infra_failure_validate")
    assert get_alias(RunConfig().model_name, ALIAS_CHAMPION).version == "1"
    assert get_alias(RunConfig().model_name, ALIAS_CHALLENGER) is None
    tags = MlflowClient().get_model_version(RunConfig().model_name, version).tags
    assert tags["tns.promotion"] == "BLOCKED" and tags["tns.blocked_at"] == "infra_validation"
    assert "classifier" in tags["tns.blocked_reason"]


def test_strict_gate_compares_with_the_champion_and_rejects(rejected):
    verdict, decision, summary = rejected
    assert verdict == NOT_BLESSED
    assert decision.metadata["decision"] == NOT_BLESSED
    record = json.loads((Path(decision.path) / GATE_DECISION_FILE).read_text(encoding="utf-8"))
    assert record["compared_to_champion"] is True
    assert record["champion_version"] == "1"
    regression = [r for r in record["reasons"] if r["check"] == "non_regression"]
    assert len(regression) == len(POLICIES)
    # The champion is this very model, re-scored on the same test split: no regression.
    assert all(r["passed"] for r in regression)
    assert any(not r["passed"] and r["check"] == "floor" for r in record["reasons"])
    assert "FAIL" in Path(summary.path).read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("policies", "added", "dropped"),
    [(POLICIES[:2], [], POLICIES[2:]), (["brand_new"], ["brand_new"], POLICIES)],
    ids=["subset", "disjoint"],
)
def test_a_changed_policy_set_ends_in_a_decision(
    workspace, ingested, split, evaluated, promoted, tiny_text_encoder, policies, added, dropped
):
    """Finding: a challenger whose policies differ from the champion's ended in `ValueError: policies must
    name at least one policy` (disjoint sets), or was compared on the shared ones without a word (subset)."""
    config = json.dumps({**_config(tiny_text_encoder), "policies": policies})
    verdict, decision, summary = _gate(workspace, ingested, split, evaluated, f"gate_{policies[0]}", config)
    assert verdict == NOT_BLESSED
    record = json.loads((Path(decision.path) / GATE_DECISION_FILE).read_text(encoding="utf-8"))
    assert record["champion_version"] == "1" and record["compared_to_champion"] is True
    policy_set = {r["policy"]: r["passed"] for r in record["reasons"] if r["check"] == "policy_set"}
    assert policy_set == {**{p: True for p in added}, **{p: False for p in dropped}}
    compared = [r["policy"] for r in record["reasons"] if r["check"] == "non_regression"]
    assert compared == [p for p in policies if p in POLICIES]
    assert f"dropped {', '.join(dropped)}" in record["summary"]
    assert get_alias(RunConfig().model_name).version == "1"


def test_record_rejection_tags_the_run_and_moves_no_alias(workspace, trained, rejected):
    _, decision, _ = rejected
    run_id = trained[2]
    summary = record_rejection.python_func(
        decision=decision, mlflow_run_id=run_id, mlflow_tracking_uri=workspace["uri"]
    )
    assert summary.startswith(NOT_BLESSED)
    tags = MlflowClient().get_run(run_id).data.tags
    assert tags["tns.gate_decision"] == NOT_BLESSED
    assert "floor" in tags["tns.gate_failed_checks"]
    assert get_alias(RunConfig().model_name).version == "1"


def test_force_promote_without_reason_fails_the_gate(
    workspace, ingested, split, evaluated, strict_config, registered, tmp_path, monkeypatch
):
    failure = tmp_path / "failure.json"
    monkeypatch.setenv("TNS_FAILURE_FILE", str(failure))
    with pytest.raises(ValueError, match="force_reason"):
        _gate(workspace, ingested, split, evaluated, "gate_forced", strict_config, force_promote=True)
    record = json.loads(failure.read_text(encoding="utf-8"))
    assert record["step"] == "gate"


def test_nan_outputs_fail_parity(workspace, ingested, split, trained, tmp_path):
    """Finding: an export whose outputs are NaN passed parity (`max` and `>` ignore NaN). A model whose weights
    diverged to NaN gives NaN in PyTorch and in onnxruntime alike; the check must fail, naming the cause."""
    import numpy as np
    import torch
    from safetensors.torch import load_file, save_file

    from core.common.constants import MODEL_WEIGHTS
    from core.data.split import read_split_frame
    from core.export.golden import select_golden
    from core.export.onnx_export import check_parity, export_onnx, reference_probabilities

    model_dir = tmp_path / "diverged"
    shutil.copytree(trained[0].path, model_dir)
    weights = load_file(model_dir / MODEL_WEIGHTS)
    weights["calibration_bias"] = torch.full_like(weights["calibration_bias"], float("nan"))
    save_file(weights, model_dir / MODEL_WEIGHTS)
    frame = read_split_frame(ingested[0].path, split.path)
    golden = select_golden(ingested[0].path, frame, POLICIES, 6)
    golden.probabilities = reference_probabilities(model_dir, golden)
    assert np.isnan(golden.probabilities).all()
    onnx_path = export_onnx(model_dir, tmp_path / "model.onnx", opset=17)
    report = check_parity(model_dir, onnx_path, golden, [1, 4], 1e-4)
    assert not report.passed and report.max_abs_diff == float("inf")


@pytest.mark.parametrize("file", ["postprocess/1/model.py", "classifier/1/model.onnx"])
def test_infra_validation_refuses_a_tampered_repository(
    workspace, ingested, split, trained, gated, promoted, exported, tmp_path, file
):
    """Finding: a repository's code and weights were served unchecked; now a changed file stops the step
    before tritonserver starts, naming the file."""
    from serving.infra_validation import InfraValidationError

    version = _second_challenger(workspace, ingested, split, trained, gated, f"tampered_{Path(file).name}")
    tampered = _artifact(Model, tmp_path, "export")
    shutil.copytree(exported[1].path, tampered.path)
    with (Path(tampered.path) / REPOSITORY_DIR / file).open("ab") as handle:
        handle.write(b"\n")
    with pytest.raises(InfraValidationError, match=f"{file} does not match its SHA-256"):
        _infra_validate(workspace, ingested, trained, tampered, version, f"tampered_{Path(file).stem}")
    tags = MlflowClient().get_model_version(RunConfig().model_name, version).tags
    assert tags["tns.blocked_at"] == "infra_validation" and "integrity" in tags["tns.blocked_reason"]
    assert get_alias(RunConfig().model_name, ALIAS_CHAMPION).version == "1"
