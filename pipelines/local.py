"""Running the training pipeline on this machine with the KFP local runner, and summarising the run.

All state goes under `$TNS_HOME` (default `.tns/`): `kfp/` (pipeline outputs), `mlflow/` (sqlite + artifacts),
`data/` (the generated default dataset) and `tmp/`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.common.failure import read_failure
from core.common.constants import (
    BLESSED,
    DATASET_FINGERPRINT,
    DATASET_MANIFEST_FILE,
    ENV_FAILURE_FILE,
    EVALUATION_FILE,
    EXIT_FAILED,
    EXIT_NOT_BLESSED,
    EXIT_OK,
    EXPORT_REPORT_FILE,
    GATE_DECISION_FILE,
    INFRA_VALIDATION_FILE,
    MODEL_CARD_FILE,
    RUN_LOG_FILE,
    SPLITS,
)
from core.common.env import tns_home
from core.config.loading import load_run_config
from core.config.run import RunConfig
from core.data.ingest import read_preparation


@dataclass
class TrainingRequest:
    """What `tns run training` was asked to do."""

    data: Path | None = None
    config_file: Path | None = None
    policies: str = ""
    overrides: list[str] = field(default_factory=list)
    force_promote: bool = False
    force_reason: str = ""
    trigger_report: str = ""  # drift report of a triggered retraining run (tagged on the MLflow run)
    data_window: str = ""  # data window (JSON) of a triggered retraining run
    verbose: bool = False  # stream the KFP local runner's own output instead of the step table


def load_config(request: TrainingRequest) -> RunConfig:
    """The configuration file (or defaults) with `--policies` and `--set` overrides applied."""
    return load_run_config(request.config_file, request.overrides, request.policies)


def default_dataset(home: Path) -> Path:
    """The embedded default dataset under `$TNS_HOME/data/default`, generated once (it is deterministic)."""
    from core.data.generate import generate_dataset

    folder = home / "data" / "default"
    if not (folder / DATASET_MANIFEST_FILE).is_file():
        print(f"generating the embedded default dataset in {folder} ...", flush=True)
        generate_dataset(folder)
    return folder


def git_commit() -> str:
    """The current commit of the working tree, or '' outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return ""
    return out.stdout.strip()


def _newest_run_dir(root: Path, name: str, after: float) -> Path | None:
    runs = [p for p in root.glob(f"{name}-*") if p.is_dir() and p.stat().st_mtime >= after - 1]
    return max(runs, key=lambda p: p.stat().st_mtime) if runs else None


def _task_names() -> dict[str, str]:
    """Local task folder names, which KFP derives from the component names."""
    from components.data.component import ingest_data
    from components.evaluation.component import evaluate_model, gate_model
    from components.export.component import export_model, infra_validate
    from components.registry.component import promote_model, register_model
    from components.training.component import train_model
    from components.validation.component import validate_data

    components = (
        ingest_data,
        validate_data,
        train_model,
        evaluate_model,
        gate_model,
        register_model,
        export_model,
        infra_validate,
        promote_model,
    )
    return {component.python_func.__name__: component.name for component in components}


def _task_output(run_dir: Path, task: str, output: str) -> Path | None:
    path = run_dir / task / output
    return path if path.exists() else None


def _executor_output(run_dir: Path, task: str) -> dict:
    """What a local task recorded in `executor_output.json` (empty when the task did not run)."""
    path = run_dir / task / "executor_output.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _task_metadata(run_dir: Path, task: str, artifact: str) -> dict | None:
    """The metadata a task recorded on one of its output artifacts."""
    entries = _executor_output(run_dir, task).get("artifacts", {}).get(artifact, {}).get("artifacts") or [{}]
    return entries[0].get("metadata")


def _task_parameter(run_dir: Path, task: str, name: str = "Output") -> Any:
    return _executor_output(run_dir, task).get("parameterValues", {}).get(name)


def run_training(request: TrainingRequest) -> int:
    """Runs the training pipeline locally and prints a summary.

    Returns:
        0 when blessed and registered, 3 when completed but not blessed, 1 when a step failed.
    """
    config = load_config(request)
    home = tns_home()
    for sub in ("kfp", "tmp", "mlflow"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    data = request.data.expanduser().resolve() if request.data else default_dataset(home)
    if not data.exists():
        print(f"tns: dataset {data} does not exist", file=sys.stderr)
        return EXIT_FAILED
    tracking_uri = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    failure_file = home / "tmp" / f"failure-{os.getpid()}-{time.time_ns()}.json"
    os.environ[ENV_FAILURE_FILE] = str(failure_file)
    os.environ.setdefault("TMPDIR", str(home / "tmp"))

    import warnings

    from kfp import local

    # Resource, accelerator, secret and display-name settings are for the cluster; the local runner says so
    # once per task, and the project image is this very environment.
    warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
    warnings.filterwarnings("ignore", message=".*custom or non-Python base image.*")

    from pipelines.training import PIPELINE_NAME, training_pipeline

    local.init(
        runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(home / "kfp"), raise_on_error=True
    )
    started = time.time()
    print(f"running {PIPELINE_NAME} on {data} (state in {home}) ...", flush=True)
    arguments = {
        "data_uri": str(data),
        "config_json": config.to_json(),
        "policies": list(config.policies),
        "force_promote": request.force_promote,
        "force_reason": request.force_reason,
        "mlflow_tracking_uri": tracking_uri,
        "git_commit": git_commit(),
        "trigger_report": request.trigger_report,
        "data_window": request.data_window,
    }
    log_file = home / "tmp" / f"run-{os.getpid()}-{time.time_ns()}.log"
    try:
        if request.verbose:
            training_pipeline(**arguments)
        else:
            from pipelines.progress import runner_output

            with log_file.open("w", encoding="utf-8") as log, runner_output(log, config.train.epochs):
                training_pipeline(**arguments)
    except Exception as error:  # the local runner raises RuntimeError naming the failed task
        failure = read_failure(failure_file)
        print("\n" + "=" * 78)
        if failure:
            print(f"FAILED at step '{failure['step']}' ({failure['type']}):\n{failure['error']}")
            if failure["step"] in {"export", "infra_validate"}:
                print(
                    "champion alias unchanged; the new version is tagged tns.promotion=BLOCKED with the reason"
                )
        else:
            print(f"FAILED: {error}")
        run_dir = _newest_run_dir(home / "kfp", PIPELINE_NAME, started)
        report = run_dir and _task_output(run_dir, _task_names()["validate_data"], "report")
        if report:
            print(f"validation report: {report}")
        if not request.verbose:
            print(f"full log: {_keep_log(log_file, run_dir)}")
        print("=" * 78)
        return EXIT_FAILED
    finally:
        failure_file.unlink(missing_ok=True)

    run_dir = _newest_run_dir(home / "kfp", PIPELINE_NAME, started)
    if run_dir is None:
        print("FAILED: the pipeline finished but its output folder was not found", file=sys.stderr)
        return EXIT_FAILED
    log = None if request.verbose else _keep_log(log_file, run_dir)
    summary = summarize(run_dir, time.time() - started, log)
    print(summary["text"])
    return EXIT_OK if summary["decision"] == BLESSED else EXIT_NOT_BLESSED


def _keep_log(log_file: Path, run_dir: Path | None) -> Path:
    """Moves the runner log into the run folder (where one exists); returns where it is."""
    if run_dir is None or not log_file.is_file():
        return log_file
    target = run_dir / RUN_LOG_FILE
    log_file.replace(target)
    return target


def summarize(run_dir: Path, seconds: float, log: Path | None = None) -> dict[str, Any]:
    """Builds the end-of-run summary from the run's artifacts."""
    task = _task_names()
    decision_dir = _task_output(run_dir, task["gate_model"], "decision")
    decision = json.loads((decision_dir / GATE_DECISION_FILE).read_text(encoding="utf-8"))
    evaluation_dir = _task_output(run_dir, task["evaluate_model"], "evaluation")
    evaluation = json.loads((evaluation_dir / EVALUATION_FILE).read_text(encoding="utf-8"))
    dataset_dir = run_dir / task["ingest_data"] / "dataset"
    fingerprint = json.loads((dataset_dir / DATASET_FINGERPRINT).read_text(encoding="utf-8"))
    preparation = read_preparation(dataset_dir)
    card_file = evaluation_dir / MODEL_CARD_FILE
    card = json.loads(card_file.read_text(encoding="utf-8")) if card_file.is_file() else {}
    warnings = (_task_metadata(run_dir, task["validate_data"], "summary") or {}).get("warning_checks") or []
    run_id = _task_parameter(run_dir, task["train_model"], "mlflow_run_id")
    version = _task_parameter(run_dir, task["register_model"])
    promoted = _task_parameter(run_dir, task["promote_model"])
    export_dir = _task_output(run_dir, task["export_model"], "export")
    export = json.loads((export_dir / EXPORT_REPORT_FILE).read_text(encoding="utf-8")) if export_dir else None
    validation_dir = _task_output(run_dir, task["infra_validate"], "validation")
    infra = (
        json.loads((validation_dir / INFRA_VALIDATION_FILE).read_text(encoding="utf-8"))
        if validation_dir
        else None
    )
    macro, ablation = evaluation["macro"], evaluation.get("ablation") or {}

    def fmt(value: Any) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    lines = [
        "",
        "=" * 78,
        f"tns run training: {decision['decision']}" + (" (forced)" if decision.get("forced") else ""),
    ]
    lines.append(
        f"  dataset      {fingerprint['source']} ({fingerprint['rows']} rows, fingerprint {fingerprint['fingerprint'][:12]})"
    )
    if preparation:
        lines.append(f"  data         {preparation.summary()}")
    if warnings:
        lines.append(
            f"  validation   {len(warnings)} warning(s): {', '.join(warnings)} (see the validation report)"
        )
    for number, (policy, counts) in enumerate((card.get("label_counts") or {}).items()):
        cells = ", ".join(
            f"{split} {counts[split]['positives']}/{counts[split]['annotated']}" for split in SPLITS
        )
        label = "labels" if number == 0 else ""
        lines.append(f"  {label:<12} {policy}: {cells} (positives/annotated)")
    lines.append(
        f"  test         macro ROC-AUC {fmt(macro['roc_auc'])}, PR-AUC {fmt(macro['pr_auc'])}, ECE {fmt(macro['ece'])}"
    )
    lines.append(
        f"  ablation     text+image rows: fusion {fmt(ablation.get('fusion_macro_roc_auc'))}, "
        f"text removed {fmt(ablation.get('text_removed_macro_roc_auc'))}, "
        f"image removed {fmt(ablation.get('image_removed_macro_roc_auc'))}"
    )
    for policy, values in evaluation["policies"].items():
        ci = values.get("roc_auc_ci") or [None, None]
        lines.append(
            f"  {policy:<12} ROC-AUC {fmt(values['roc_auc'])} [{fmt(ci[0])}, {fmt(ci[1])}]  "
            f"PR-AUC {fmt(values['pr_auc'])}  threshold {fmt(values['threshold'])}  "
            f"recall {fmt(values['test_recall'])} at FPR {fmt(values['test_fpr'])}"
        )
    champion = decision.get("champion_evaluation")
    if champion:
        lines.append(
            f"  champion     version {decision['champion_version']} re-scored on this test split: macro ROC-AUC "
            f"{fmt(champion['macro']['roc_auc'])} (challenger {fmt(macro['roc_auc'])})"
        )
    else:
        lines.append("  champion     none yet: absolute floors only")
    lines.append(f"  decision     {decision['summary']}")
    for reason in decision["reasons"]:
        if not reason["passed"]:
            lines.append(f"    - {reason['message']}")
    if export:
        parity = export["parity"]
        lines.append(
            f"  export       {export['repository']}\n"
            f"               version {export['version']}, ONNX opset {export['onnx_opset']}, "
            f"{export['onnx_bytes'] / 1e6:.1f} MB; parity max |PyTorch - onnxruntime| "
            f"{parity['max_abs_diff']:.1e} on {parity['items']} golden items at batch sizes "
            f"{', '.join(parity['by_batch_size'])}"
        )
        int8 = export.get("int8")
        if int8:
            lines.append(
                f"               int8 CPU classifier: decisions agree with fp32 on >= "
                f"{min(int8['agreement'].values()):.4f} of {int8['items']} test items per policy, largest "
                f"ROC-AUC drop {max(int8['roc_auc_drop'].values(), default=0.0):+.4f}"
            )
    if infra:
        latency = ", ".join(
            f"{protocol} p50 {v['p50']:.1f} ms / p99 {v['p99']:.1f} ms"
            for protocol, v in infra["latency_ms"].items()
        )
        lines.append(
            f"  triton       loaded in {infra['load_seconds']:.2f} s ({infra['model_config_name'] or 'GPU'} config); "
            f"HTTP+gRPC answers within {infra['max_abs_diff']:.1e} of {infra.get('reference', 'PyTorch')}\n"
            f"               latency {latency}"
        )
    registered = ", nothing registered"
    if version:
        registered = f", registered version {version}" + (
            " -> champion (export infra-validated)" if promoted else " (challenger, not promoted)"
        )
    lines.append(f"  MLflow       run {run_id}{registered}")
    lines.append(f"  reports      model card {_task_output(run_dir, task['evaluate_model'], 'report')}")
    lines.append(f"               validation {_task_output(run_dir, task['validate_data'], 'report')}")
    lines.append(f"               decision   {decision_dir / GATE_DECISION_FILE}")
    if log is not None:
        lines.append(f"               full log   {log}")
    lines.append(f"  took         {seconds:.0f} s; outputs in {run_dir}")
    lines.append("=" * 78)
    return {
        "text": "\n".join(lines),
        "decision": decision["decision"],
        "version": version,
        "promoted": promoted,
        "run_id": run_id,
        "repository": export["repository"] if export else None,
    }
