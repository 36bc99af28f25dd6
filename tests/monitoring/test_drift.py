"""The drift check on synthetic log windows: verdicts, ranking, insufficient data, outputs and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.config.drift import DriftConfig
from monitoring.check import DriftRequest, run_drift_check
from monitoring.drift import STATUS_DRIFT, STATUS_INSUFFICIENT, STATUS_NO_DRIFT, compare_windows
from monitoring.log_reader import read_logs
from tests.monitoring.records import records, write
from tns.main import main

ROWS = 800


def _frames(tmp_path: Path, **current_knobs):
    reference = read_logs(write(tmp_path / "reference", records(ROWS, seed=11)))
    current = read_logs(write(tmp_path / "current", records(ROWS, seed=12, **current_knobs)))
    return reference, current


@pytest.mark.parametrize(
    ("knobs", "group", "top_names"),
    [
        ({"text_shift": 0.6}, "text", {"text_embedding"}),
        (
            {"image_size": (128, 96), "image_format": "JPEG"},
            "image",
            {"image_width", "image_height", "image_bytes"},
        ),
        ({"spam_rate": 0.3}, "prediction:spam", {"score_spam"}),
    ],
    ids=["text", "image", "spam-surge"],
)
def test_injected_drift_is_detected_and_ranked_first(tmp_path: Path, knobs, group, top_names):
    reference, current = _frames(tmp_path, **knobs)
    result = compare_windows(reference.frame, current.frame, reference.policies)
    assert result.status == STATUS_DRIFT
    assert result.signals[0].group == group and result.signals[0].name in top_names
    assert result.signals[0].drifted and result.signals[0].severity > 1
    assert result.examples[result.signals[0].name]  # typical examples for the top signal
    assert all(s.drifted for s in result.signals[: len(result.drifted)])  # drifted first


def test_a_new_modality_mix_is_ranked_above_the_score_shift_it_causes(tmp_path: Path):
    reference, current = _frames(tmp_path, image_only_rate=0.5)
    result = compare_windows(reference.frame, current.frame, reference.policies)
    assert result.status == STATUS_DRIFT and result.signals[0].group == "modality"
    (sexual,) = [s for s in result.signals if s.name == "score_sexual"]
    assert sexual.note == "reference re-weighted to the current modality mix" and not sexual.drifted
    # Without the re-weighting the sexual scores differ clearly: the mix explains it.
    before, after = reference.frame["score_sexual"].mean(), current.frame["score_sexual"].mean()
    assert after > before + 0.08


def test_same_distribution_is_not_drift(tmp_path: Path):
    reference, current = _frames(tmp_path)
    result = compare_windows(reference.frame, current.frame, reference.policies)
    assert result.status == STATUS_NO_DRIFT, [s.name for s in result.drifted]
    assert result.reasons == ["no signal crossed its threshold"]
    kinds = {s.kind for s in result.signals}
    assert kinds >= {"numeric", "categorical", "embedding", "prediction", "flag_rate"}


def test_too_few_rows_is_insufficient_data(tmp_path: Path):
    reference = read_logs(write(tmp_path / "r", records(300, seed=1)))
    current = read_logs(write(tmp_path / "c", records(50, seed=2, spam_rate=0.9)))
    result = compare_windows(reference.frame, current.frame, reference.policies, DriftConfig(min_rows=100))
    assert result.status == STATUS_INSUFFICIENT and not result.signals
    assert result.reasons == ["current window has 50 rows, fewer than the 100 a verdict needs"]


def test_labeled_performance_drop_is_a_signal(tmp_path: Path):
    reference = read_logs(write(tmp_path / "r", records(ROWS, seed=3, label_rate=0.5)))
    rows = records(ROWS, seed=4, label_rate=0.5)
    for row in rows:  # moderators now disagree with the model on spam: its ROC-AUC collapses
        if row["labels"]:
            row["labels"]["spam"] = 1 - row["labels"]["spam"]
    current = read_logs(write(tmp_path / "c", rows))
    result = compare_windows(reference.frame, current.frame, reference.policies)
    (signal,) = [s for s in result.signals if s.name == "performance_spam"]
    assert signal.drifted and signal.reference_value["roc_auc"] > 0.7 > 0.3 > signal.current_value["roc_auc"]
    assert "performance_hate" in {s.name for s in result.signals}


def test_check_writes_summary_report_and_snapshot(tmp_path: Path):
    reference = write(tmp_path / "reference", records(ROWS, seed=5))
    current = write(tmp_path / "current", records(ROWS, seed=6, spam_rate=0.3))
    out = tmp_path / "out"
    outcome = run_drift_check(DriftRequest(reference, current, out_dir=out, workspace=tmp_path / "ws"))
    assert outcome.exit_code == 10
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["status"] == "drift" and summary["top_group"] == "prediction:spam"
    assert summary["model"] == {
        "name": "content-safety",
        "version": "3",
        "alias": None,
        "versions_in_window": ["3"],
    }
    assert summary["window"]["id"] and summary["current"]["rows"] == ROWS
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "score_spam" in html and "Drift report" in html and "<script" not in html
    assert not list(out.glob("*.partial"))
    from evidently.ui.workspace import Workspace

    workspace = Workspace.create(str(tmp_path / "ws"))
    (project,) = workspace.search_project("content-safety drift")
    assert len(workspace.list_runs(project.id)) == 1
    # The same windows again: the same window id.
    again = run_drift_check(DriftRequest(reference, current, out_dir=tmp_path / "out2", save_snapshot=False))
    assert again.summary["window"]["id"] == summary["window"]["id"]


def test_cli_exit_codes(tmp_path: Path, capsys):
    reference = write(tmp_path / "reference", records(ROWS, seed=7))
    same = write(tmp_path / "same", records(ROWS, seed=8))
    drifted = write(tmp_path / "drifted", records(ROWS, seed=9, text_shift=0.8))
    common = ["--reference", str(reference), "--no-snapshot"]
    assert main(["drift", *common, "--current", str(same), "--out", str(tmp_path / "a")]) == 0
    assert main(["drift", *common, "--current", str(drifted), "--out", str(tmp_path / "b")]) == 10
    assert "DRIFT" in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["drift", *common, "--current", str(empty), "--out", str(tmp_path / "c")]) == 0
    assert "INSUFFICIENT_DATA" in capsys.readouterr().out
    bad = write(tmp_path / "bad", [{**r, "schema_version": 9} for r in records(5, seed=1)])
    assert main(["drift", *common, "--current", str(bad)]) == 1
    assert "log schema version 9" in capsys.readouterr().err
    assert main(["drift", *common, "--current", str(tmp_path / "missing")]) == 1
    assert main(["drift", *common, "--current", str(same), "--set", "nonsense=1"]) == 2
