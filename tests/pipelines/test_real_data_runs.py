"""A real, messy dataset end to end: Multilingual HateCheck annotated in blocks per review queue, with copies
across a fixed split, disagreeing copies, long texts, a BOM and CRLF line ends, templates as groups. One pipeline
run (small `train.max_steps`) must reach a gate decision under the default `data.missing_labels=mask`."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from core.common.constants import EXIT_NOT_BLESSED, EXIT_OK, GATE_DECISION_FILE, RUN_LOG_FILE, SPLITS_TABLE
from tests.hatecheck import GROUP_COLUMN, POLICIES, write_messy_dataset

pytestmark = pytest.mark.slow

FAST = ["--set", "train.max_steps=40", "--set", "evaluation.bootstrap_samples=50"]


def test_partially_labeled_messy_real_dataset_reaches_a_gate_decision(run_tns, tns_home, tmp_path):
    folder = tmp_path / "hatecheck"
    planted = write_messy_dataset(folder)
    result = run_tns(
        "run", "training", "--data", str(folder), "--policies", ",".join(POLICIES),
        "--set", f"split.group_column={GROUP_COLUMN}", "--set", "evaluation.slice_columns=[functionality]", *FAST,
    )  # fmt: skip
    assert result.returncode in (EXIT_OK, EXIT_NOT_BLESSED), result.output[-4000:]
    lines = result.output.splitlines()
    assert len(lines) < 80, result.output
    assert "KFP Executor" not in result.output and '"parameterValues"' not in result.output
    summary = result.output[result.output.rindex("tns run training:") :]
    assert f"{planted['copies']} copies of" in summary and "label conflict(s)" in summary
    assert "1 row(s) annotated for no policy dropped" in summary
    assert "text_length" in summary and "duplicate_items" in summary  # warnings, not refusals
    assert "slur: train" in summary and "(positives/annotated)" in summary

    run_dir = Path(summary.split("outputs in ")[1].split()[0])
    log = run_dir / RUN_LOG_FILE
    assert f"full log   {log}" in summary
    assert "Executing task" in log.read_text(encoding="utf-8")  # the runner's own output, kept whole

    dataset = pd.read_parquet(run_dir / "ingest-data" / "dataset" / "dataset.parquet")
    splits = pd.read_parquet(run_dir / "split-data" / "splits" / SPLITS_TABLE)
    frame = dataset.merge(splits, on="id", suffixes=("_fixed", ""))
    assert len(frame) == planted["rows"] - planted["copies"] - planted["unannotated"]
    assert frame.groupby("group")["split"].nunique().max() == 1  # no template straddles two splits
    assert not frame["id"].str.endswith("-resent").any()  # the test copies of train items were dropped

    evaluation = json.loads((run_dir / "evaluate-model" / "evaluation" / "evaluation.json").read_text())
    test = frame[frame["split"] == "test"]
    for policy in POLICIES:
        entry = evaluation["policies"][policy]
        assert entry["rows"] == int(test[policy].notna().sum()) < len(test)  # annotated rows only
        assert entry["positives"] == int((test[policy] == 1).sum())
        assert entry["roc_auc"] is not None
    functionality = evaluation["slices"]["functionality"]  # a dataset column carried to the score table
    assert set(functionality) == set(test["functionality"])
    assert sum(entry["rows"] for entry in functionality.values()) == len(test)
    card = (run_dir / "evaluate-model" / "report").read_text(encoding="utf-8")
    assert "Annotated rows and positives per policy and split" in card
    assert "By functionality" in card and "FPR hateful at threshold" in card
    decision = json.loads((run_dir / "gate-model" / "decision" / GATE_DECISION_FILE).read_text())
    assert decision["decision"] in ("BLESSED", "NOT_BLESSED")
