"""Binary classification metrics for one policy: ranking, operating threshold, calibration, curves.

Everything takes `labels` (0/1) and `scores` (probabilities in [0, 1]) as 1-D array-likes of equal length and
returns plain Python numbers, so results can go straight into JSON. Degenerate inputs are handled here rather
than by the caller: a metric that is undefined for the data (ROC-AUC with one class) is `None`, never NaN.

Ranking metrics are computed from sorted scores with ties averaged, which matches scikit-learn's
`roc_auc_score` and `average_precision_score`, and lets the bootstrap reuse one sort for all resamples.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

# Most resampled cells (resamples x rows) held in memory at once by the bootstrap.
_BOOTSTRAP_CHUNK_CELLS = 4_000_000


def _prepare(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validates and converts inputs to (bool labels, float scores) 1-D arrays."""
    y = np.asarray(labels, dtype=float)
    s = np.asarray(scores, dtype=float)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError(f"labels and scores must be one-dimensional, got shapes {y.shape} and {s.shape}")
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape[0]} != {s.shape[0]}")
    if not np.all((y == 0) | (y == 1)):
        bad = np.unique(y[~((y == 0) | (y == 1))])[:5]
        raise ValueError(f"labels must be 0 or 1, found {bad.tolist()}")
    if not np.all(np.isfinite(s)):
        bad_count = int(np.sum(~np.isfinite(s)))
        raise ValueError(f"scores must be finite, found {bad_count} NaN or infinite value(s)")
    return y.astype(bool), s


def _single_class(y: np.ndarray) -> bool:
    return y.size == 0 or bool(y.all()) or not bool(y.any())


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, with 0.0 for an empty denominator."""
    return float(numerator) / float(denominator) if denominator > 0 else 0.0


def _tie_groups(s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorts ascending and returns (order, group start offsets, distinct values) of equal-score groups."""
    order = np.argsort(s, kind="mergesort")
    sorted_scores = s[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    return order, starts, sorted_scores[starts]


def _auc_from_group_counts(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """ROC-AUC from per-tie-group positive/negative counts (groups ascending by score), along the last axis.

    AUC = P(score_pos > score_neg) + 0.5 P(tie), computed as sum_g pos_g * (negatives below g + neg_g / 2),
    normalised by n_pos * n_neg. Rows with a single class give NaN.
    """
    neg_below = np.cumsum(neg, axis=-1) - neg
    numerator = np.sum(pos * (neg_below + 0.5 * neg), axis=-1)
    denominator = pos.sum(axis=-1) * neg.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float | None:
    """Area under the ROC curve, with tied scores counted as half.

    Args:
        labels: 0/1 ground truth.
        scores: Predicted probabilities (any finite numbers work; only their order matters).

    Returns:
        The ROC-AUC in [0, 1], or None when fewer than two classes are present.
    """
    y, s = _prepare(labels, scores)
    if _single_class(y):
        return None
    order, starts, _ = _tie_groups(s)
    pos = np.add.reduceat(y[order].astype(float), starts)
    neg = np.add.reduceat((~y[order]).astype(float), starts)
    return float(_auc_from_group_counts(pos, neg))


def bootstrap_roc_auc(
    labels: ArrayLike, scores: ArrayLike, samples: int, seed: int
) -> tuple[float, float] | None:
    """95% percentile bootstrap interval of the ROC-AUC.

    Rows are resampled with replacement `samples` times; resamples that contain a single class are skipped.
    All resamples share one sort of the scores and are evaluated as weighted counts, so 200 resamples of a few
    thousand rows take milliseconds.

    Args:
        labels: 0/1 ground truth.
        scores: Predicted probabilities.
        samples: Number of resamples drawn.
        seed: Seed of the resampling generator (same seed and data give the same interval).

    Returns:
        (2.5th percentile, 97.5th percentile), or None when the data has a single class or no resample had
        both classes.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    y, s = _prepare(labels, scores)
    if _single_class(y):
        return None
    n = y.size
    order, starts, _ = _tie_groups(s)
    y_sorted = y[order]
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOTSTRAP_CHUNK_CELLS // n)
    values: list[np.ndarray] = []
    for first in range(0, samples, chunk):
        size = min(chunk, samples - first)
        # Positions into the sorted arrays; counts[b, i] = times sorted row i was drawn in resample b.
        draws = rng.integers(0, n, size=(size, n))
        flat = (draws + (np.arange(size) * n)[:, None]).reshape(-1)
        counts = np.bincount(flat, minlength=size * n).reshape(size, n).astype(float)
        pos = np.add.reduceat(counts * y_sorted, starts, axis=1)
        neg = np.add.reduceat(counts * ~y_sorted, starts, axis=1)
        values.append(_auc_from_group_counts(pos, neg))
    aucs = np.concatenate(values)
    aucs = aucs[np.isfinite(aucs)]
    if aucs.size == 0:
        return None
    low, high = np.percentile(aucs, [2.5, 97.5])
    return float(low), float(high)


def _descending_counts(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each distinct score t (descending): (t, true positives, false positives) of `score >= t`."""
    order = np.argsort(-s, kind="mergesort")
    sorted_scores = s[order]
    sorted_labels = y[order]
    # Last index of each run of equal scores: counts there include every row with score >= that value.
    ends = np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], True])
    tp = np.cumsum(sorted_labels)[ends].astype(float)
    fp = (ends + 1) - tp
    return sorted_scores[ends], tp, fp


def pr_auc(labels: ArrayLike, scores: ArrayLike) -> float | None:
    """Average precision: sum over thresholds of (recall step) x precision, as scikit-learn computes it.

    Args:
        labels: 0/1 ground truth.
        scores: Predicted probabilities.

    Returns:
        The average precision in [0, 1], or None when fewer than two classes are present (with no positives
        it is undefined, with no negatives it is trivially 1.0 and says nothing about the model).
    """
    y, s = _prepare(labels, scores)
    if _single_class(y):
        return None
    _, tp, fp = _descending_counts(y, s)
    precision = tp / (tp + fp)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


@dataclass
class ThresholdChoice:
    """An operating threshold and what it achieves on the data it was chosen on."""

    threshold: float
    precision: float
    recall: float
    reached: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def threshold_for_precision(labels: ArrayLike, scores: ArrayLike, target_precision: float) -> ThresholdChoice:
    """Chooses the smallest threshold whose precision reaches a target (predictions are `score >= threshold`).

    Candidate thresholds are the distinct scores. The smallest qualifying one flags the most items, so it has
    the highest recall among thresholds that meet the target. When no threshold reaches the target, the one
    with the best precision is returned (the smallest among equals) with `reached=False`; with no positives
    at all, the highest score is returned (precision and recall 0).

    Args:
        labels: 0/1 ground truth, normally of the validation split.
        scores: Predicted probabilities.
        target_precision: Precision to reach, in [0, 1].

    Returns:
        The chosen threshold with its precision and recall on these labels.

    Raises:
        ValueError: When the inputs are empty or malformed.
    """
    y, s = _prepare(labels, scores)
    if y.size == 0:
        raise ValueError("cannot choose a threshold from no rows")
    thresholds, tp, fp = _descending_counts(y, s)
    n_pos = tp[-1]
    if n_pos == 0:
        return ThresholdChoice(threshold=float(thresholds[0]), precision=0.0, recall=0.0, reached=False)
    precision = tp / (tp + fp)
    recall = tp / n_pos
    qualifying = np.flatnonzero(precision >= target_precision)
    if qualifying.size:
        index, reached = int(qualifying[-1]), True
    else:
        best = np.flatnonzero(precision == precision.max())
        index, reached = int(best[-1]), False
    return ThresholdChoice(
        threshold=float(thresholds[index]),
        precision=float(precision[index]),
        recall=float(recall[index]),
        reached=reached,
    )


def rates_at_threshold(labels: ArrayLike, scores: ArrayLike, threshold: float) -> dict[str, float | int]:
    """Precision, recall, false-positive rate and confusion counts of `score >= threshold`.

    A ratio with an empty denominator (no predicted positives, no positives, no negatives) is 0.0.

    Args:
        labels: 0/1 ground truth.
        scores: Predicted probabilities.
        threshold: Operating threshold.

    Returns:
        {"precision", "recall", "fpr", "tp", "fp", "tn", "fn"}.
    """
    y, s = _prepare(labels, scores)
    predicted = s >= threshold
    tp = int(np.sum(predicted & y))
    fp = int(np.sum(predicted & ~y))
    fn = int(np.sum(~predicted & y))
    tn = int(np.sum(~predicted & ~y))
    return {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "fpr": _ratio(fp, fp + tn),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def expected_calibration_error(labels: ArrayLike, scores: ArrayLike, bins: int) -> float:
    """Expected calibration error over equal-width probability bins, weighted by bin size.

    Bin b covers [b/bins, (b+1)/bins); a score of exactly 1.0 falls in the last bin. Scores are clipped to
    [0, 1]. ECE = sum_b (n_b / n) * |mean label in b - mean score in b|.

    Args:
        labels: 0/1 ground truth.
        scores: Predicted probabilities.
        bins: Number of bins (>= 1).

    Returns:
        The ECE in [0, 1].

    Raises:
        ValueError: When the inputs are empty or `bins` < 1.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    y, s = _prepare(labels, scores)
    if y.size == 0:
        raise ValueError("cannot compute a calibration error on no rows")
    s = np.clip(s, 0.0, 1.0)
    index = np.minimum((s * bins).astype(int), bins - 1)
    label_sum = np.bincount(index, weights=y.astype(float), minlength=bins)
    score_sum = np.bincount(index, weights=s, minlength=bins)
    # sum_b (n_b/n) |label_sum_b/n_b - score_sum_b/n_b| = sum_b |label_sum_b - score_sum_b| / n
    return float(np.sum(np.abs(label_sum - score_sum)) / y.size)


def reliability_bins(labels: ArrayLike, scores: ArrayLike, bins: int) -> dict[str, list]:
    """Per equal-width probability bin (the bins of `expected_calibration_error`): mean score, observed positive
    rate and row count; empty bins are left out. The points of a reliability diagram."""
    y, s = _prepare(labels, scores)
    s = np.clip(s, 0.0, 1.0)
    index = np.minimum((s * bins).astype(int), bins - 1)
    rows = np.bincount(index, minlength=bins)
    score_sum = np.bincount(index, weights=s, minlength=bins)
    label_sum = np.bincount(index, weights=y.astype(float), minlength=bins)
    kept = rows > 0
    return {
        "score": (score_sum[kept] / rows[kept]).tolist(),
        "positive_rate": (label_sum[kept] / rows[kept]).tolist(),
        "rows": rows[kept].astype(int).tolist(),
    }


def score_histogram(labels: ArrayLike, scores: ArrayLike, bins: int = 20) -> dict[str, list]:
    """Counts of positives' and negatives' scores over `bins` equal-width bins of [0, 1]."""
    y, s = _prepare(labels, scores)
    edges = np.linspace(0.0, 1.0, bins + 1)
    s = np.clip(s, 0.0, 1.0)
    return {
        "edges": edges.tolist(),
        "positives": np.histogram(s[y == 1], edges)[0].astype(int).tolist(),
        "negatives": np.histogram(s[y == 0], edges)[0].astype(int).tolist(),
    }


def pr_curve_points(
    labels: ArrayLike, scores: ArrayLike, max_points: int = 101
) -> tuple[list[float], list[float]]:
    """Precision-recall curve as (precision, recall) lists of at most `max_points` points, recall rising;
    two empty lists when fewer than two classes are present."""
    y, s = _prepare(labels, scores)
    if _single_class(y):
        return [], []
    _, tp, fp = _descending_counts(y, s)
    precision = tp / (tp + fp)
    recall = tp / tp[-1]
    if precision.size > max_points:
        keep = np.unique(np.round(np.linspace(0, precision.size - 1, max_points)).astype(int))
        precision, recall = precision[keep], recall[keep]
    return precision.tolist(), recall.tolist()


def roc_curve_points(
    labels: ArrayLike, scores: ArrayLike, max_points: int = 101
) -> tuple[list[float], list[float], list[float]]:
    """ROC curve as (fpr, tpr, thresholds) lists of at most `max_points` points, all finite.

    The curve starts at (0, 0) and ends at (1, 1); thresholds decrease along it and are clipped to [0, 1]
    (the starting point's "above every score" threshold becomes 1.0), because KFP's
    `ClassificationMetrics.log_roc_curve` rejects infinities. Long curves keep evenly spaced points, always
    including both ends.

    Args:
        labels: 0/1 ground truth.
        scores: Predicted probabilities.
        max_points: Most points returned (>= 2).

    Returns:
        (fpr, tpr, thresholds); three empty lists when fewer than two classes are present.
    """
    if max_points < 2:
        raise ValueError(f"max_points must be >= 2, got {max_points}")
    y, s = _prepare(labels, scores)
    if _single_class(y):
        return [], [], []
    thresholds, tp, fp = _descending_counts(y, s)
    fpr = np.r_[0.0, fp / fp[-1]]
    tpr = np.r_[0.0, tp / tp[-1]]
    cut = np.clip(np.r_[np.inf, thresholds], 0.0, 1.0)
    if fpr.size > max_points:
        keep = np.unique(np.round(np.linspace(0, fpr.size - 1, max_points)).astype(int))
        fpr, tpr, cut = fpr[keep], tpr[keep], cut[keep]
    return fpr.tolist(), tpr.tolist(), cut.tolist()


def confusion_matrix_at(labels: ArrayLike, scores: ArrayLike, threshold: float) -> list[list[int]]:
    """Confusion matrix of `score >= threshold` as [[tn, fp], [fn, tp]] (rows: truth 0/1, columns: predicted).

    Args:
        labels: 0/1 ground truth.
        scores: Predicted probabilities.
        threshold: Operating threshold.

    Returns:
        [[tn, fp], [fn, tp]] as Python ints.
    """
    rates = rates_at_threshold(labels, scores, threshold)
    return [[int(rates["tn"]), int(rates["fp"])], [int(rates["fn"]), int(rates["tp"])]]
