"""`make demo-drift` end to end: champion, served traffic with drift, drift check, local retraining, gate."""

from __future__ import annotations

import json

import pytest

from tests.pipelines.helpers import registry

FAST = [
    "train.epochs=3",
    "train.early_stopping_patience=3",
    "evaluation.bootstrap_samples=30",
    "train.image_encoder=cnn",
    "train.lexical_buckets=65536",
]
NO_FLOORS = ["gate.min_roc_auc.default=0"]  # the tiny retraining set is gated against the champion only


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_demo_drift_serves_detects_retrains_and_gates(tns_home, monkeypatch: pytest.MonkeyPatch):
    from tns.demo import main

    monkeypatch.setenv("TNS_HOME", str(tns_home))
    monkeypatch.setenv("TMPDIR", str(tns_home / "tmp"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    out = tns_home / "demo"
    code = main(["--rows", "600", "--out", str(out), *[a for o in FAST + NO_FLOORS for a in ("--set", o)]])
    assert code == 0
    summary = json.loads((out / "drift" / "summary.json").read_text(encoding="utf-8"))
    assert summary["status"] == "drift" and summary["top_group"] == "text"
    trigger = summary["trigger"]
    assert trigger["outcome"] == "fired" and trigger["run_exit_code"] in (0, 3)
    assert trigger["data_uri"] == str((out / "current" / "dataset").resolve())
    report = (out / "drift" / "report.html").read_text(encoding="utf-8")
    assert trigger["run_id"] in report  # the report names the run
    # The run names the report: its MLflow run carries the trigger's tags.
    client = registry(tns_home)
    runs = client.search_runs(
        [client.get_experiment_by_name("tns-training").experiment_id],
        filter_string="tags.`tns.trigger_report` != ''",
    )
    assert [r.data.tags["tns.trigger_report"] for r in runs] == [summary["report_html"]]
    # The simulated traffic went through the served model's client log: schema v1 records with embeddings.
    line = next((out / "current" / "logs").glob("date=*/*.jsonl")).read_text(encoding="utf-8").splitlines()[0]
    record = json.loads(line)
    assert record["schema_version"] == 1 and (record["text_embedding"] or record["image_embedding"])
