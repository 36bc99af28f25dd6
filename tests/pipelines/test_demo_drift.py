"""`make demo-drift` end to end: champion, served traffic with drift, drift check, review queue answered by
simulated moderators, retraining on the champion's data plus the reviewed labels, gate, and the old and new
champion on a held-back drifted sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.pipelines.helpers import registry

FAST = [
    "train.epochs=3",
    "train.early_stopping_patience=3",
    "evaluation.bootstrap_samples=30",
    "train.image_encoder=cnn",
    "train.lexical_buckets=65536",
]
NO_FLOORS = ["gate.min_roc_auc.default=0"]  # the FAST models are gated against the champion only
BUDGET = 60


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_demo_drift_closes_the_loop_review_retraining_gate_held_back(
    tns_home, monkeypatch: pytest.MonkeyPatch
):
    from tns.demo import main

    monkeypatch.setenv("TNS_HOME", str(tns_home))
    monkeypatch.setenv("TMPDIR", str(tns_home / "tmp"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    out = tns_home / "demo"
    sets = [a for o in FAST + NO_FLOORS for a in ("--set", o)]
    code = main(["--rows", "600", "--review-budget", str(BUDGET), "--out", str(out), *sets])
    assert code == 0
    summary = json.loads((out / "drift" / "summary.json").read_text(encoding="utf-8"))
    assert summary["status"] == "drift" and summary["top_group"] == "text"
    loop = json.loads((out / "loop.json").read_text(encoding="utf-8"))
    assert loop["drift"]["exit_code"] == 10 and loop["scenario"] == "new_slang"

    # The review batch was written, answered and imported into the window's log root.
    batch = json.loads((out / "review" / "batch" / "batch.json").read_text(encoding="utf-8"))
    assert len(batch["items"]) + len(batch["gold"]) == BUDGET and batch["gold"]
    labels_dir = (out / "current" / "logs" / "labels").resolve()
    review_file = labels_dir / f"review-{batch['batch_id']}.jsonl"
    reviewed = [json.loads(line) for line in review_file.read_text(encoding="utf-8").splitlines()]
    assert len(reviewed) == len(batch["items"]) == loop["review"]["labels_written"]
    assert {line["source"] for line in reviewed} == {"review"}
    assert loop["review"]["gold_disagreement"] == loop["review"]["simulated"]["gold_disagreement"]

    # The trigger fired on the built retraining dataset: the champion's data plus the delayed and review labels.
    trigger = json.loads((out / "drift" / "trigger_decision.json").read_text(encoding="utf-8"))
    assert trigger["outcome"] == "fired" and trigger["run_exit_code"] in (0, 3)
    data_uri = Path(trigger["data_uri"])
    assert data_uri.parent == (out / "retraining-data").resolve()
    lineage = json.loads((data_uri / "lineage.json").read_text(encoding="utf-8"))
    assert lineage["sources"][0] == lineage["base"]["uri"] and lineage["original_rows"] > 3000
    assert {str(review_file), str(labels_dir / "labels-8.jsonl")} <= set(lineage["sources"][1:])
    assert lineage["new_by_source"]["review"] > 0 and lineage["new_by_source"]["delayed"] > 0

    # The gate compared on both origins of the test split.
    gate_file = next(Path(trigger["run_output"]).rglob("gate_decision.json"))
    gate = json.loads(gate_file.read_text(encoding="utf-8"))
    slices = gate["origin_slices"]
    assert set(slices) == {"original", "new"} and slices["original"]["rows"] > 0 and slices["new"]["rows"] > 0
    assert loop["gate"]["decision"] == gate["decision"] and (gate["decision"] == "BLESSED") == (
        trigger["run_exit_code"] == 0
    )
    checks = {reason["check"] for reason in gate["reasons"]}
    assert "non_regression_original" in checks

    # Old and new champion on the same held-back items; the new one also as tritonserver serves it.
    held = loop["held_back"]
    before, after = held["before"], held["after"]
    assert before["rows"] == after["rows"] == 600 and before["items_digest"] == after["items_digest"]
    for figures in (before, after):
        known = [v for v in figures["roc_auc"].values() if v is not None]
        assert len(known) == 4 and figures["macro_roc_auc"] == pytest.approx(sum(known) / 4, abs=1e-4)
    assert held["delta_macro_roc_auc"] == pytest.approx(
        after["macro_roc_auc"] - before["macro_roc_auc"], abs=1e-4
    )
    if loop["promoted"]:
        assert after["model_version"] != before["model_version"]
        served = held["after_served"]
        assert served["items_digest"] == after["items_digest"]
        assert served["macro_roc_auc"] == pytest.approx(after["macro_roc_auc"], abs=2e-3)
    else:
        assert after == before and trigger["run_exit_code"] == 3

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
