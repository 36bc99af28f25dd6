"""The label-free performance estimate: expected precision, recall and flag rate from calibrated scores, the
calibration on the reference's labels, the check against labels that arrive, and the report's section."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.config.drift import DriftConfig
from core.config.fields import ConfigError
from monitoring.drift_report import render_report
from monitoring.performance_estimate import (
    RELIABLE,
    UNCHECKED,
    UNRELIABLE,
    estimate_performance,
    expected_counts,
    realized_counts,
)

THRESHOLD = 0.4


def _window(rows: int, seed: int, label_rate: float, truth=lambda p: p, policy: str = "spam") -> pd.DataFrame:
    """Scores drawn from a Beta mixture, flags at THRESHOLD, labels Bernoulli(truth(score)) on a share of rows."""
    rng = np.random.default_rng(seed)
    scores = np.where(rng.random(rows) < 0.2, rng.beta(6, 2, rows), rng.beta(1, 10, rows))
    labels = (rng.random(rows) < truth(scores)).astype(float)
    arrived = rng.random(rows) < label_rate
    return pd.DataFrame(
        {
            f"score_{policy}": scores,
            f"flag_{policy}": (scores >= THRESHOLD).astype(float),
            f"label_{policy}": np.where(arrived, labels, np.nan),
            "truth": labels,
        }
    )


def _realized(frame: pd.DataFrame, policy: str = "spam"):
    return realized_counts(frame["truth"].to_numpy(), frame[f"flag_{policy}"].to_numpy() >= 0.5)


def test_expected_counts_are_the_sums_of_calibrated_scores():
    scores, flags = np.array([0.9, 0.6, 0.3, 0.1]), np.array([True, True, False, False])
    counts = expected_counts(scores, flags)
    assert counts.true_positives == pytest.approx(1.5) and counts.false_positives == pytest.approx(0.5)
    assert counts.false_negatives == pytest.approx(0.4) and counts.flag_rate == 0.5
    assert counts.precision == pytest.approx(0.75) and counts.recall == pytest.approx(1.5 / 1.9)


def test_calibrated_scores_give_the_realized_precision_and_recall_and_agreeing_labels():
    reference, current = _window(4000, 1, 0.3), _window(4000, 2, 0.3)
    estimate = estimate_performance(reference, current, ["spam"], DriftConfig())
    (entry,) = estimate.policies
    realized = _realized(current)
    assert abs(entry.estimated["precision"] - realized.precision) < 0.03
    assert abs(entry.estimated["recall"] - realized.recall) < 0.03
    assert entry.estimated["flag_rate"] == pytest.approx(current["flag_spam"].mean(), abs=1e-4)
    assert 0 < entry.interval["precision"] < 0.05 and 0 < entry.interval["recall"] < 0.05
    assert entry.reliability == RELIABLE and entry.labeled["rows"] == current["label_spam"].notna().sum()
    assert entry.calibration.startswith("isotonic on ")
    assert estimate.unreliable == []


def test_the_reference_labels_correct_scores_that_are_not_calibrated():
    # Moderators call positive more often than the scores say (truth = sqrt(score)): the served scores
    # underestimate precision; the reference's labels calibrate it back.
    reference, current = _window(4000, 3, 0.4, np.sqrt), _window(4000, 4, 0.0, np.sqrt)
    realized = _realized(current)
    calibrated = estimate_performance(reference, current, ["spam"], DriftConfig()).policies[0]
    served = estimate_performance(
        reference, current, ["spam"], DriftConfig(estimate_calibration="served")
    ).policies[0]
    assert abs(served.estimated["precision"] - realized.precision) > 0.05
    assert abs(calibrated.estimated["precision"] - realized.precision) < 0.03
    assert served.calibration.startswith("served scores") and calibrated.reliability == UNCHECKED
    # the reference's own check compares the served scores with its labels, which disagree
    (check,) = estimate_performance(reference, current, ["spam"], DriftConfig()).reference
    assert check.reliability == UNRELIABLE


def test_labels_that_contradict_the_estimate_mark_it_unreliable():
    # Concept drift: the same scores, but a third of what was a violation is now allowed.
    reference = _window(4000, 5, 0.3)
    current = _window(4000, 6, 0.3, truth=lambda p: np.where(p >= THRESHOLD, p * 0.6, p))
    (entry,) = estimate_performance(reference, current, ["spam"], DriftConfig()).policies
    assert entry.reliability == UNRELIABLE and "precision estimated" in entry.reason
    assert abs(entry.labeled["z_flagged_positives"]) > 3.3


def test_too_few_labels_leave_the_estimate_unchecked_and_a_small_reference_keeps_served_scores():
    reference, current = _window(200, 7, 0.1), _window(2000, 8, 0.01)
    (entry,) = estimate_performance(reference, current, ["spam"], DriftConfig()).policies
    assert entry.reliability == UNCHECKED and "drift.min_labeled=50" in entry.reason
    assert "too few to calibrate on" in entry.calibration


def test_estimate_settings_are_validated():
    with pytest.raises(ConfigError, match="estimate_calibration"):
        DriftConfig(estimate_calibration="platt")
    with pytest.raises(ConfigError, match="estimate_tolerance"):
        DriftConfig(estimate_tolerance=0)


def test_the_report_shows_the_estimate_its_assumptions_and_an_unreliable_warning_escaped():
    policy = "<b>spam</b>"
    reference = _window(3000, 9, 0.3, policy=policy)
    current = _window(3000, 10, 0.3, truth=lambda p: np.where(p >= THRESHOLD, p * 0.5, p), policy=policy)
    estimate = estimate_performance(reference, current, [policy], DriftConfig()).to_dict()
    assert estimate["unreliable_policies"] == [policy]
    summary = {"status": "no_drift", "performance_estimate": json.loads(json.dumps(estimate))}
    html = render_report(summary)
    assert "Estimated performance before labels arrive" in html and "covariate shift" in html
    assert "concept drift" in html and "The estimate is unreliable for &lt;b&gt;spam&lt;/b&gt;" in html
    assert "<b>spam</b>" not in html


def test_the_drift_check_summary_carries_the_estimate(tmp_path: Path):
    from monitoring.check import DriftRequest, run_drift_check
    from tests.monitoring.records import records, write

    reference = write(tmp_path / "reference", records(400, seed=5, label_rate=0.5))
    current = write(tmp_path / "current", records(400, seed=6))
    outcome = run_drift_check(DriftRequest(reference, current, out_dir=tmp_path / "out", save_snapshot=False))
    estimate = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))[
        "performance_estimate"
    ]
    assert set(estimate["policies"]) == set(outcome.summary["policies"])
    spam = estimate["policies"]["spam"]
    assert spam["estimated"]["rows"] == 400 and spam["reliability"] == UNCHECKED
    assert estimate["reference"]["spam"]["labeled"]["rows"] > 100
    assert "Estimated performance before labels arrive" in (tmp_path / "out" / "report.html").read_text()
