"""Metrics on small hand-computed examples, and against scikit-learn on random ones."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from core.evaluation import metrics

LABELS = [0, 0, 1, 1]
SCORES = [0.1, 0.4, 0.35, 0.8]


def _noisy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    s = np.clip(rng.normal(0.4 + 0.25 * y, 0.2), 0, 1)
    return y, s


# ROC-AUC -----------------------------------------------------------------------------------------------
def test_roc_auc_perfect_inverted_and_hand_computed():
    assert metrics.roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert metrics.roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]) == 0.0
    # Positive 0.35 beats 0.1, loses to 0.4; positive 0.8 beats both: 3 of 4 pairs.
    assert metrics.roc_auc(LABELS, SCORES) == pytest.approx(0.75)


def test_roc_auc_counts_ties_as_half():
    assert metrics.roc_auc([0, 1], [0.5, 0.5]) == 0.5
    assert metrics.roc_auc([0, 1, 1], [0.5, 0.5, 0.9]) == pytest.approx(0.75)


def test_roc_auc_single_class_or_empty_is_none():
    assert metrics.roc_auc([1, 1, 1], [0.1, 0.5, 0.9]) is None
    assert metrics.roc_auc([0, 0], [0.1, 0.5]) is None
    assert metrics.roc_auc([], []) is None


def test_ranking_metrics_match_sklearn_with_ties():
    rng = np.random.default_rng(3)
    for n in (5, 37, 500):
        for _ in range(20):
            y = rng.integers(0, 2, n)
            if y.min() == y.max():
                continue
            s = np.round(rng.random(n), 1)  # many ties
            assert metrics.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
            assert metrics.pr_auc(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_inputs_are_validated():
    with pytest.raises(ValueError, match="differ in length"):
        metrics.roc_auc([0, 1], [0.1])
    with pytest.raises(ValueError, match="0 or 1"):
        metrics.roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="finite"):
        metrics.roc_auc([0, 1], [0.1, float("nan")])


# Bootstrap ---------------------------------------------------------------------------------------------
def test_bootstrap_contains_point_estimate_and_is_deterministic():
    y, s = _noisy(400, 0)
    interval = metrics.bootstrap_roc_auc(y, s, samples=200, seed=7)
    assert interval is not None
    low, high = interval
    assert low < metrics.roc_auc(y, s) < high
    assert 0.0 <= low <= high <= 1.0
    assert metrics.bootstrap_roc_auc(y, s, samples=200, seed=7) == interval
    assert metrics.bootstrap_roc_auc(y, s, samples=200, seed=8) != interval


def test_bootstrap_narrows_with_more_rows():
    small = metrics.bootstrap_roc_auc(*_noisy(100, 1), samples=300, seed=0)
    large = metrics.bootstrap_roc_auc(*_noisy(3000, 1), samples=300, seed=0)
    assert small is not None and large is not None
    assert large[1] - large[0] < (small[1] - small[0]) / 2


def test_bootstrap_perfect_separation_is_degenerate_at_one():
    assert metrics.bootstrap_roc_auc([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], 50, 0) == (1.0, 1.0)


def test_bootstrap_skips_single_class_resamples_and_handles_single_class_data():
    # One positive in 5 rows: about a third of resamples miss it and are skipped, not counted as NaN.
    interval = metrics.bootstrap_roc_auc([0, 0, 0, 0, 1], [0.1, 0.2, 0.3, 0.4, 0.9], samples=100, seed=0)
    assert interval == (1.0, 1.0)
    assert metrics.bootstrap_roc_auc([1, 1, 1], [0.1, 0.2, 0.3], 50, 0) is None


def test_bootstrap_is_fast():
    y, s = _noisy(1000, 2)
    start = time.perf_counter()
    metrics.bootstrap_roc_auc(y, s, samples=200, seed=0)
    assert time.perf_counter() - start < 0.5


# PR-AUC ------------------------------------------------------------------------------------------------
def test_pr_auc_hand_computed_and_degenerate():
    # Descending: 0.8 (pos) P=1 R=.5; 0.4 (neg) P=.5; 0.35 (pos) P=2/3 R=1 -> .5*1 + .5*2/3.
    assert metrics.pr_auc(LABELS, SCORES) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert metrics.pr_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert metrics.pr_auc([0, 0], [0.1, 0.2]) is None
    assert metrics.pr_auc([1, 1], [0.1, 0.2]) is None


# Threshold ---------------------------------------------------------------------------------------------
CRAFTED_SCORES = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
CRAFTED_LABELS = [1, 1, 0, 1, 0, 0]
# Precision at each threshold (score >= t): .9 -> 1, .8 -> 1, .7 -> 2/3, .6 -> 3/4, .5 -> 3/5, .4 -> 1/2.


@pytest.mark.parametrize(
    ("target", "threshold", "precision", "recall"),
    [
        (0.75, 0.6, 0.75, 1.0),
        (0.9, 0.8, 1.0, 2 / 3),
        (1.0, 0.8, 1.0, 2 / 3),
        (0.5, 0.4, 0.5, 1.0),
        (0.0, 0.4, 0.5, 1.0),
    ],
)
def test_threshold_for_precision_picks_smallest_qualifying(target, threshold, precision, recall):
    choice = metrics.threshold_for_precision(CRAFTED_LABELS, CRAFTED_SCORES, target)
    assert choice.reached
    assert choice.threshold == threshold
    assert choice.precision == pytest.approx(precision)
    assert choice.recall == pytest.approx(recall)


def test_threshold_for_precision_unreachable_returns_best_precision():
    # Precision: .9 -> 0, .8 -> 1/2, .7 -> 1/3, .6 -> 1/2; best 1/2, the smaller threshold wins.
    choice = metrics.threshold_for_precision([0, 1, 0, 1], [0.9, 0.8, 0.7, 0.6], 0.9)
    assert choice == metrics.ThresholdChoice(threshold=0.6, precision=0.5, recall=1.0, reached=False)


def test_threshold_for_precision_without_positives_and_empty():
    choice = metrics.threshold_for_precision([0, 0, 0], [0.2, 0.7, 0.5], 0.9)
    assert choice == metrics.ThresholdChoice(threshold=0.7, precision=0.0, recall=0.0, reached=False)
    with pytest.raises(ValueError):
        metrics.threshold_for_precision([], [], 0.9)


def test_threshold_with_tied_scores_flags_whole_tie_group():
    # At 0.5 both tied rows are predicted positive: precision 2/3, so 0.9 target needs threshold 0.9.
    choice = metrics.threshold_for_precision([1, 1, 0], [0.9, 0.5, 0.5], 0.9)
    assert choice.threshold == 0.9 and choice.recall == 0.5


# Rates, confusion matrix ---------------------------------------------------------------------------------
def test_rates_and_confusion_matrix_at_threshold():
    rates = metrics.rates_at_threshold(CRAFTED_LABELS, CRAFTED_SCORES, 0.6)
    assert rates == {
        "precision": 0.75,
        "recall": 1.0,
        "fpr": pytest.approx(1 / 3),
        "tp": 3,
        "fp": 1,
        "tn": 2,
        "fn": 0,
    }
    assert metrics.confusion_matrix_at(CRAFTED_LABELS, CRAFTED_SCORES, 0.6) == [[2, 1], [0, 3]]
    # score == threshold counts as positive
    assert metrics.confusion_matrix_at([1], [0.5], 0.5) == [[0, 0], [0, 1]]


def test_rates_with_empty_denominators_are_zero():
    rates = metrics.rates_at_threshold([0, 1], [0.1, 0.2], 0.99)
    assert rates["precision"] == 0.0 and rates["recall"] == 0.0 and rates["fpr"] == 0.0
    assert metrics.rates_at_threshold([0, 0], [0.1, 0.9], 0.5)["recall"] == 0.0


# Calibration -------------------------------------------------------------------------------------------
def test_ece_hand_computed():
    # 2 bins: [.2,.4] mean .3 vs labels .5 -> .2 * 2/4; [.6,.8] mean .7 vs labels 1 -> .3 * 2/4.
    assert metrics.expected_calibration_error([0, 1, 1, 1], [0.2, 0.4, 0.6, 0.8], bins=2) == pytest.approx(
        0.25
    )
    assert metrics.expected_calibration_error([1, 0, 0, 0], [0.25] * 4, bins=4) == pytest.approx(0.0)
    # 1.0 falls in the last bin, 0.0 in the first: perfectly confident and right.
    assert metrics.expected_calibration_error([0, 1], [0.0, 1.0], bins=10) == 0.0
    assert metrics.expected_calibration_error([0, 1], [1.0, 0.0], bins=10) == 1.0


def test_ece_rejects_bad_arguments():
    with pytest.raises(ValueError):
        metrics.expected_calibration_error([0], [0.5], bins=0)
    with pytest.raises(ValueError):
        metrics.expected_calibration_error([], [], bins=10)


# ROC curve ---------------------------------------------------------------------------------------------
def test_roc_curve_points_match_sklearn_and_are_finite():
    fpr, tpr, thresholds = metrics.roc_curve_points(LABELS, SCORES)
    ref_fpr, ref_tpr, ref_thr = roc_curve(LABELS, SCORES, drop_intermediate=False)
    assert fpr == pytest.approx(ref_fpr.tolist())
    assert tpr == pytest.approx(ref_tpr.tolist())
    assert thresholds[1:] == pytest.approx(ref_thr[1:].tolist())
    assert thresholds[0] == 1.0
    assert all(math.isfinite(t) and 0.0 <= t <= 1.0 for t in thresholds)


def test_roc_curve_points_downsampled_keep_ends():
    y, s = _noisy(2000, 4)
    fpr, tpr, thresholds = metrics.roc_curve_points(y, s, max_points=101)
    assert len(fpr) == len(tpr) == len(thresholds) <= 101
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert fpr == sorted(fpr) and tpr == sorted(tpr)
    assert thresholds == sorted(thresholds, reverse=True)


def test_roc_curve_points_single_class_is_empty():
    assert metrics.roc_curve_points([1, 1], [0.2, 0.3]) == ([], [], [])
