"""The monitoring pipeline: compiled structure, and real runs with the KFP local runner (drift, then trigger)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core.common.constants import COMPONENT_IMAGE, TRIGGER_DECISION_FILE
from core.common.env import COMPILED_PIPELINES_DIR
from tests.monitoring.records import records, write


def _spec() -> dict:
    return next(yaml.safe_load_all((COMPILED_PIPELINES_DIR / "monitoring.yaml").read_text()))


def test_trigger_runs_only_inside_the_drift_branch():
    spec = _spec()
    root = spec["root"]["dag"]["tasks"]
    assert set(root) == {"check-drift", "condition-1"}
    condition = root["condition-1"]
    assert (
        condition["triggerPolicy"]["condition"]
        == "inputs.parameter_values['pipelinechannel--check-drift-Output'] == 'drift'"
    )
    branch = spec["components"]["comp-condition-1"]["dag"]["tasks"]
    assert set(branch) == {"trigger-retraining"}
    summary = branch["trigger-retraining"]["inputs"]["artifacts"]["summary"]["componentInputArtifact"]
    assert summary == "pipelinechannel--check-drift-summary"
    executors = spec["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {COMPONENT_IMAGE}
    outputs = spec["components"]["comp-check-drift"]["outputDefinitions"]["artifacts"]
    assert outputs["report"]["artifactType"]["schemaTitle"] == "system.HTML"
    assert outputs["metrics"]["artifactType"]["schemaTitle"] == "system.Metrics"
    for name, parameter in spec["root"]["inputDefinitions"]["parameters"].items():
        assert "defaultValue" in parameter and parameter.get("description"), name


def test_compiling_the_monitoring_pipeline_imports_no_evidently(tmp_path: Path):
    code = (
        "import sys; from pipelines.compile import compile_pipeline; from pipelines.monitoring import "
        f"monitoring_pipeline; compile_pipeline(monitoring_pipeline, __import__('pathlib').Path({str(tmp_path / 'm.yaml')!r}));"
        "print('evidently' in sys.modules, 'torch' in sys.modules, 'sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "False"]


def _run_local(tmp_path: Path, current: Path, reference: Path, policy: dict) -> Path:
    from kfp import local

    from pipelines.monitoring import PIPELINE_NAME, monitoring_pipeline

    root = tmp_path / "kfp"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    monitoring_pipeline(
        reference_uri=str(reference),
        current_uri=str(current),
        drift_config_json="{}",
        retrain_rules_json=json.dumps(policy),
        ledger_uri=str(tmp_path / "decisions.jsonl"),
    )
    (run_dir,) = root.glob(f"{PIPELINE_NAME}-*")
    return run_dir


@pytest.mark.slow
def test_local_run_on_drift_records_a_dry_run_decision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TNS_HOME", str(tmp_path / "home"))
    reference = write(tmp_path / "reference", records(600, seed=1))
    current = write(tmp_path / "current", records(600, seed=2, spam_rate=0.35))
    run_dir = _run_local(tmp_path, current, reference, {"dry_run": True, "min_rows": 100})
    summary = json.loads((run_dir / "check-drift" / "summary" / "summary.json").read_text())
    assert summary["status"] == "drift" and summary["top_group"] == "prediction:spam"
    assert "Drift report" in (run_dir / "check-drift" / "report").read_text()
    decision = json.loads((run_dir / "trigger-retraining" / "decision" / TRIGGER_DECISION_FILE).read_text())
    assert decision["outcome"] == "dry_run" and decision["window_id"] == summary["window"]["id"]
    ledger = [json.loads(line) for line in (tmp_path / "decisions.jsonl").read_text().splitlines()]
    assert [entry["outcome"] for entry in ledger] == ["dry_run"]


@pytest.mark.slow
def test_local_run_without_drift_skips_the_trigger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TNS_HOME", str(tmp_path / "home"))
    reference = write(tmp_path / "reference", records(600, seed=3))
    current = write(tmp_path / "current", records(600, seed=4))
    run_dir = _run_local(tmp_path, current, reference, {"dry_run": True, "min_rows": 100})
    summary = json.loads((run_dir / "check-drift" / "summary" / "summary.json").read_text())
    assert summary["status"] == "no_drift"
    assert not (run_dir / "trigger-retraining").exists()
    assert not (tmp_path / "decisions.jsonl").exists()
