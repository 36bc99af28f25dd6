"""Export and infra-validation steps: what the KFP components call, one function each.

Both steps run after the model was registered as `challenger`. A failure tags that registered version with the
stage and the reason, drops its `challenger` alias, removes what the step had written, and raises, so the
pipeline stops before the promote step and `champion` stays where it was.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from core.common.constants import (
    CPU_QUANTIZATION_INT8,
    EXPORT_REPORT_FILE,
    GOLDEN_DIR,
    INFRA_VALIDATION_FILE,
    ONNX_INT8_MODEL_FILE,
    ONNX_MODEL_FILE,
    REPOSITORY_DIR,
    REPOSITORY_MANIFEST_FILE,
    TAG_REPOSITORY_MANIFEST,
    TRITON_REPOSITORY_ARTIFACT,
)
from core.common.integrity import (
    IntegrityError,
    file_sha256,
    manifest_sha256,
    remove_bytecode,
    repository_manifest,
    verify_repository,
)
from core.config.run import RunConfig

DEFAULT_THRESHOLD = 0.5


def _clear(folder: Path) -> None:
    """Empties an output folder (the KFP artifact path itself stays)."""
    if folder.is_dir():
        for child in folder.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()


def export_model_dir(
    model_dir: str | Path,
    dataset_dir: str | Path,
    splits_dir: str | Path,
    evaluation: dict[str, Any],
    config: RunConfig,
    version: str,
    out_dir: str | Path,
    run_id: str = "",
) -> dict[str, Any]:
    """Exports a saved model to ONNX, checks parity on a golden batch, and writes the Triton repository.

    Args:
        model_dir: The trained model folder.
        dataset_dir: The ingested dataset.
        splits_dir: Its split assignment (the golden batch comes from the test split).
        evaluation: The evaluation record (operating thresholds per policy).
        config: Run configuration (`export`, `serving`, `model_name`).
        version: The registered-model version (the repository's version folders).
        out_dir: Receives `model_repository/`, `golden/` and `export_report.json`.
        run_id: MLflow run of the model (recorded in the repository's metadata).

    Returns:
        The export report.

    Raises:
        ExportError: When export or the parity check fails (nothing is left in `out_dir`).
    """
    from core.data.split import read_split_frame
    from core.evaluation.evaluate import thresholds_of
    from core.export.golden import select_golden
    from core.export.onnx_export import (
        ExportError,
        check_parity,
        export_onnx,
        reference_probabilities,
    )
    from core.export.quantize import measure_int8, quantize_int8
    from serving.repository import ServedModel, write_model_repository

    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = config.export
    try:
        frame = read_split_frame(dataset_dir, splits_dir)
        golden = select_golden(dataset_dir, frame, list(config.policies), settings.golden_items)
        golden.probabilities = reference_probabilities(model_dir, golden)
        with tempfile.TemporaryDirectory(prefix="tns-export-") as scratch:
            onnx_path = export_onnx(model_dir, Path(scratch) / ONNX_MODEL_FILE, settings.opset)
            parity = check_parity(
                model_dir, onnx_path, golden, list(settings.parity_batch_sizes), settings.parity_tolerance
            )
            if not parity.passed:
                raise ExportError(f"parity check failed: {parity.describe()}")
            chosen = thresholds_of(evaluation)
            thresholds = {p: float(chosen.get(p, DEFAULT_THRESHOLD)) for p in config.policies}
            int8_path, quantization = None, None
            if settings.cpu_quantization == CPU_QUANTIZATION_INT8:
                int8_path = quantize_int8(onnx_path, Path(scratch) / ONNX_INT8_MODEL_FILE)
                quantization = measure_int8(
                    model_dir, dataset_dir, frame, golden.ids, onnx_path, int8_path, thresholds, config
                )
                if not quantization.passed:
                    raise ExportError(f"int8 CPU classifier refused: {quantization.describe()}")
            served = ServedModel(config.model_name, int(version), list(config.policies), thresholds, run_id)
            repository = write_model_repository(
                out_dir / REPOSITORY_DIR, model_dir, onnx_path, served, config.serving, int8_path
            )
            onnx_bytes = onnx_path.stat().st_size
            onnx_sha256 = file_sha256(onnx_path)
            manifest = repository_manifest(repository)
            (out_dir / REPOSITORY_MANIFEST_FILE).write_bytes(manifest)
        golden.save(out_dir / GOLDEN_DIR)
    except Exception as error:
        _clear(out_dir)
        if isinstance(error, ExportError):
            raise
        raise ExportError(f"export of version {version} failed: {type(error).__name__}: {error}") from error
    report = {
        "model_name": config.model_name,
        "version": str(version),
        "repository": str(repository),
        "onnx_opset": settings.opset,
        "onnx_bytes": onnx_bytes,
        "onnx_sha256": onnx_sha256,
        "repository_manifest_sha256": manifest_sha256(manifest),
        "parity": parity.to_dict(),
        "cpu_quantization": settings.cpu_quantization,
        "int8": quantization.to_dict() if quantization else None,
        "thresholds": thresholds,
        "thresholds_defaulted": sorted(p for p in config.policies if p not in chosen),
        "golden_items": len(golden),
        "seconds": round(time.perf_counter() - started, 2),
    }
    (out_dir / EXPORT_REPORT_FILE).write_text(json.dumps(report, indent=1), encoding="utf-8")
    return report


def export_step(
    model_dir: str | Path,
    dataset_dir: str | Path,
    splits_dir: str | Path,
    evaluation_dir: str | Path,
    config: RunConfig,
    version: str,
    out_dir: str | Path,
    run_id: str,
    tracking_uri: str = "",
) -> dict[str, Any]:
    """`export_model_dir`, then logs the repository and report to the MLflow run and tags the version.

    On failure the version is tagged BLOCKED at stage `export` and loses its `challenger` alias.
    """
    from mlflow import MlflowClient

    from core.common.constants import EVALUATION_FILE
    from core.registry.mlflow_registry import configure, mark_version_failed, set_version_tags

    configure(tracking_uri)
    try:
        evaluation = json.loads((Path(evaluation_dir) / EVALUATION_FILE).read_text(encoding="utf-8"))
        report = export_model_dir(
            model_dir, dataset_dir, splits_dir, evaluation, config, version, out_dir, run_id
        )
    except Exception as error:
        mark_version_failed(config.model_name, version, "export", str(error))
        raise
    client = MlflowClient()
    client.log_artifacts(run_id, report["repository"], TRITON_REPOSITORY_ARTIFACT)
    client.log_artifact(run_id, str(Path(out_dir) / REPOSITORY_MANIFEST_FILE))
    client.log_dict(run_id, report, f"export/{EXPORT_REPORT_FILE}")
    client.log_metric(run_id, "export_parity_max_abs_diff", report["parity"]["max_abs_diff"])
    if report["int8"]:
        client.log_metric(run_id, "export_int8_min_agreement", min(report["int8"]["agreement"].values()))
    set_version_tags(
        config.model_name,
        version,
        {
            "tns.export.onnx_opset": report["onnx_opset"],
            "tns.export.onnx_sha256": report["onnx_sha256"],
            TAG_REPOSITORY_MANIFEST: report["repository_manifest_sha256"],
            "tns.export.parity_max_abs_diff": f"{report['parity']['max_abs_diff']:.3e}",
            "tns.export.cpu_quantization": report["cpu_quantization"],
        },
    )
    return report


def infra_validation_step(
    export_dir: str | Path,
    config: RunConfig,
    version: str,
    run_id: str,
    out_dir: str | Path,
    tracking_uri: str = "",
    model_config_name: str | None = None,
) -> dict[str, Any]:
    """Serves the exported repository in a real tritonserver and checks its answers against PyTorch.

    Args:
        export_dir: The export step's output (repository and golden batch).
        config: Run configuration (`export.parity_tolerance`, `serving.max_batch_size`, `model_name`).
        version: The registered-model version under validation.
        run_id: MLflow run to log the report to.
        out_dir: Receives `infra_validation.json` and the server log.
        tracking_uri: MLflow tracking URI ('' = default).
        model_config_name: 'cpu' or None (production config.pbtxt); default: 'cpu' unless a GPU is visible.

    Returns:
        The report (as a dict, with `passed` true).

    Raises:
        InfraValidationError: When the server did not load the repository or answered differently; the
            version is tagged BLOCKED at stage `infra_validation`.
    """
    from mlflow import MlflowClient

    from core.export.golden import GoldenSet
    from core.registry.mlflow_registry import (
        configure,
        mark_version_failed,
        set_version_tags,
        version_tags,
    )
    from serving.infra_validation import InfraValidationError, default_model_config_name, infra_validate

    configure(tracking_uri)
    export_dir, out_dir = Path(export_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:  # before any of the repository's code runs in a server (bytecode a server left: removed, never run)
        remove_bytecode(export_dir / REPOSITORY_DIR)
        verify_repository(
            export_dir / REPOSITORY_DIR,
            (export_dir / REPOSITORY_MANIFEST_FILE).read_bytes(),
            version_tags(config.model_name, version).get(TAG_REPOSITORY_MANIFEST),
        )
    except (IntegrityError, OSError) as error:
        mark_version_failed(config.model_name, version, "infra_validation", f"integrity: {error}")
        raise InfraValidationError(
            f"infra validation of version {version} refused the repository: {error}"
        ) from error
    try:
        report = infra_validate(
            export_dir / REPOSITORY_DIR,
            GoldenSet.load(export_dir / GOLDEN_DIR),
            version,
            config.export.parity_tolerance,
            model_config_name=model_config_name
            if model_config_name is not None
            else default_model_config_name(),
            max_batch_size=config.serving.max_batch_size,
            log_file=out_dir / "tritonserver.log",
        )
    except Exception as error:  # the server or the golden batch could not even be used
        mark_version_failed(
            config.model_name, version, "infra_validation", f"{type(error).__name__}: {error}"
        )
        raise InfraValidationError(f"infra validation of version {version} failed: {error}") from error
    record = report.to_dict()
    (out_dir / INFRA_VALIDATION_FILE).write_text(json.dumps(record, indent=1), encoding="utf-8")
    client = MlflowClient()
    client.log_dict(run_id, record, f"export/{INFRA_VALIDATION_FILE}")
    if not report.passed:
        mark_version_failed(config.model_name, version, "infra_validation", report.reason)
        raise InfraValidationError(f"infra validation of version {version} failed: {report.reason}")
    metrics = {
        "infra_load_seconds": report.load_seconds or 0.0,
        "infra_max_abs_diff": report.max_abs_diff or 0.0,
    }
    for protocol, values in report.latency_ms.items():
        metrics[f"infra_{protocol}_p50_ms"] = values["p50"]
        metrics[f"infra_{protocol}_p99_ms"] = values["p99"]
    for name, value in metrics.items():
        client.log_metric(run_id, name, value)
    set_version_tags(config.model_name, version, {"tns.infra_validation": "PASSED"})
    return record


def read_infra_validation(folder: str | Path) -> dict[str, Any]:
    """The infra validation record written by `infra_validation_step`."""
    return json.loads((Path(folder) / INFRA_VALIDATION_FILE).read_text(encoding="utf-8"))
