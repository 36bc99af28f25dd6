"""End-to-end runs of the training pipeline with real components: KFP local runner, Great Expectations,
MLflow on sqlite, real (small) training. Each test launches `tns run training` as a subprocess."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.common.constants import (
    ALIAS_CHAMPION,
    ALIAS_PREVIOUS,
    EXIT_FAILED,
    EXIT_NOT_BLESSED,
    EXIT_OK,
    EXIT_USAGE,
    ONNX_MODEL_FILE,
    TRITON_CLASSIFIER,
)
from core.data.generate import GenerateSpec, generate_dataset
from tests.fault_injection import broken_onnxruntime_backends
from tests.pipelines.helpers import model_versions, registry

pytestmark = pytest.mark.slow

FAST = [
    "--set",
    "train.epochs=12",
    "--set",
    "train.early_stopping_patience=12",
    "--set",
    "train.image_encoder=cnn",
    "--set",
    "train.lexical_buckets=65536",  # the branch is exercised; its default 2^20 rows only add artifact bytes
]
FAST += ["--set", "evaluation.bootstrap_samples=50"]
# Small data trains a weak model (macro ROC-AUC ~0.75); these tests are about the champion/challenger flow, so
# the absolute floors are switched off and only non-regression can fail.
NO_FLOORS = ["--set", "gate.min_roc_auc.default=0"]


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("small-data")
    generate_dataset(folder, GenerateSpec(rows=1200, seed=11))
    return folder


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-data")
    generate_dataset(folder, GenerateSpec(rows=500, seed=12))
    return folder


def _summary_value(output: str, label: str) -> str:
    summary = output[output.rindex("tns run training:") :]
    for line in summary.splitlines():
        if line.strip().startswith(label):
            return line.strip()
    raise AssertionError(f"no '{label}' line in output:\n{output[-3000:]}")


def test_blessed_then_degraded_not_blessed_then_forced(run_tns, tns_home, small_dataset):
    first = run_tns("run", "training", "--data", str(small_dataset), *FAST, *NO_FLOORS)
    assert first.returncode == EXIT_OK, first.output[-4000:]
    assert "tns run training: BLESSED" in first.output
    assert "no champion" in _summary_value(first.output, "decision")
    client = registry(tns_home)
    champion = client.get_model_version_by_alias("content-safety", ALIAS_CHAMPION)
    assert str(champion.version) == "1"
    assert champion.tags["tns.dataset_fingerprint"]
    run = client.get_run(champion.run_id)
    assert "test_macro_roc_auc" in run.data.metrics and "train_loss" in run.data.metrics
    assert run.data.tags["tns.dataset_fingerprint"] == champion.tags["tns.dataset_fingerprint"]
    # Promotion came after export and infra validation in a real tritonserver.
    assert champion.tags["tns.infra_validation"] == "PASSED"
    assert "infra_grpc_p50_ms" in run.data.metrics and run.data.metrics["export_parity_max_abs_diff"] <= 1e-4
    repository = Path(_summary_value(first.output, "export").split(maxsplit=1)[1])
    assert (repository / TRITON_CLASSIFIER / "1" / ONNX_MODEL_FILE).is_file()
    assert "parity max |PyTorch - onnxruntime|" in first.output
    assert "HTTP+gRPC answers within" in _summary_value(first.output, "triton")
    assert "-> champion (export infra-validated)" in _summary_value(first.output, "MLflow")

    degraded = run_tns(
        "run", "training", "--data", str(small_dataset), *FAST, *NO_FLOORS, "--set", "train.max_steps=1"
    )
    assert degraded.returncode == EXIT_NOT_BLESSED, degraded.output[-4000:]
    assert "tns run training: NOT_BLESSED" in degraded.output
    assert "re-scored on this test split" in _summary_value(degraded.output, "champion")
    assert "champion" in degraded.output and ": fail" in degraded.output
    assert model_versions(tns_home) == ["1"], "a NOT_BLESSED run must not create a version"
    assert str(client.get_model_version_by_alias("content-safety", ALIAS_CHAMPION).version) == "1"
    rejected = [
        r for r in client.search_runs([run.info.experiment_id]) if r.data.tags.get("tns.gate_decision")
    ]
    assert [r.data.tags["tns.gate_decision"] for r in rejected] == ["NOT_BLESSED"]
    assert "champion" in rejected[0].data.tags["tns.gate_failed_checks"]

    forced = run_tns(
        "run", "training", "--data", str(small_dataset), *FAST, *NO_FLOORS, "--set", "train.max_steps=1",
        "--force-promote", "--reason", "hotfix approved by policy team",
    )  # fmt: skip
    assert forced.returncode == EXIT_OK, forced.output[-4000:]
    assert "BLESSED (forced)" in forced.output
    assert model_versions(tns_home) == ["1", "2"]
    assert str(client.get_model_version_by_alias("content-safety", ALIAS_CHAMPION).version) == "2"
    assert str(client.get_model_version_by_alias("content-safety", ALIAS_PREVIOUS).version) == "1"
    forced_run = client.get_run(client.get_model_version("content-safety", "2").run_id)
    assert forced_run.data.tags["tns.forced_promotion"] == "true"
    assert forced_run.data.tags["tns.force_reason"] == "hotfix approved by policy team"
    assert forced_run.data.tags["tns.forced_by"]

    # The same (degraded, hence not regressing) model again, with an export that fails each check in turn:
    # the champion stays at version 2 and the blocked version says why.
    same = ["run", "training", "--data", str(small_dataset), *FAST, *NO_FLOORS, "--set", "train.max_steps=1"]
    parity = run_tns(*same, "--set", "export.parity_tolerance=1e-12")
    assert parity.returncode == EXIT_FAILED, parity.output[-4000:]
    assert "FAILED at step 'export'" in parity.output and "parity check failed" in parity.output
    assert "champion alias unchanged" in parity.output
    infra = run_tns(
        *same,
        extra_env={"TNS_TRITON_BACKENDS": str(broken_onnxruntime_backends(tns_home / "broken-backends"))},
    )
    assert infra.returncode == EXIT_FAILED, infra.output[-4000:]
    assert "FAILED at step 'infra_validate'" in infra.output and "classifier" in infra.output
    assert model_versions(tns_home) == ["1", "2", "3", "4"]
    assert str(client.get_model_version_by_alias("content-safety", ALIAS_CHAMPION).version) == "2"
    assert str(client.get_model_version_by_alias("content-safety", ALIAS_PREVIOUS).version) == "1"
    for version, stage in (("3", "export"), ("4", "infra_validation")):
        tags = client.get_model_version("content-safety", version).tags
        assert (tags["tns.promotion"], tags["tns.blocked_at"]) == ("BLOCKED", stage)


def _strip(folder: Path, out: Path, drop: str) -> Path:
    """Copies a dataset keeping only rows that have `drop`'s other modality, and removes `drop`."""
    import shutil

    out.mkdir(parents=True)
    keep = "image" if drop == "text" else "text"
    rows = []
    for line in (folder / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row.get(keep) is None:
            continue
        row.pop(drop)
        rows.append(row)
        if keep == "image":
            (out / "images").mkdir(exist_ok=True)
            shutil.copy(folder / row["image"], out / row["image"])
    (out / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return out


@pytest.mark.parametrize("drop", ["image", "text"])
def test_single_modality_dataset_runs_end_to_end(run_tns, tns_home, tiny_dataset, tmp_path, drop):
    data = _strip(tiny_dataset, tmp_path / f"no-{drop}", drop)
    # The text-only run trains with the defaults but the small cnn (no image to encode): the image-only run is
    # the slow-test run with every default, EfficientNet-Lite0 included.
    encoder = ["--set", "train.image_encoder=cnn"] if drop == "image" else []
    result = run_tns("run", "training", "--data", str(data), "--set", "train.epochs=3", *encoder, *NO_FLOORS)
    assert result.returncode == EXIT_OK, result.output[-4000:]
    assert model_versions(tns_home) == ["1"]
    run_dir = Path(_summary_value(result.output, "took").split("outputs in ")[1])
    evaluation = json.loads((run_dir / "evaluate-model" / "evaluation" / "evaluation.json").read_text())
    modality = "text-only" if drop == "image" else "image-only"
    assert evaluation["slices"]["modality"][modality]["rows"] > 0
    assert evaluation["ablation"]["rows"] == 0
    assert all(v["roc_auc"] is not None for v in evaluation["policies"].values())


def test_usage_errors_exit_2(run_tns):
    assert run_tns("run", "training", "--force-promote").returncode == EXIT_USAGE
    assert run_tns("run", "training", "--set", "train.nope=1").returncode == EXIT_USAGE
    assert run_tns("run", "training", "--config", "/does/not/exist.yaml").returncode == EXIT_USAGE
    assert run_tns("frobnicate").returncode == EXIT_USAGE


def test_missing_dataset_path_fails(run_tns, tmp_path):
    result = run_tns("run", "training", "--data", str(tmp_path / "nowhere"))
    assert result.returncode == EXIT_FAILED
    assert "does not exist" in result.output
