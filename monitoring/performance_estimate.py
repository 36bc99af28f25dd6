"""Performance estimated before labels arrive: per policy, expected precision, recall and flag rate at the served
threshold, from the calibrated scores alone (confidence-based performance estimation, as NannyML's CBPE does it
for binary models, applied to each policy's own sigmoid).

For a row with calibrated score p (the probability that it violates the policy) and served decision f (flagged
or not), the expected true positives of a window are sum(f * p), the expected false positives sum(f * (1 - p))
and the expected misses sum((1 - f) * p); precision and recall follow. The sampling interval is the spread
those counts would have if the labels were drawn from the scores (normal approximation; delta method for
recall).

As in CBPE, the scores are first calibrated on the reference window's labeled rows (isotonic regression of the
label on the served score, per policy; `drift.estimate_calibration: served` keeps the served scores): the served
scores were calibrated against the training labels, which may not be what moderators decide on traffic (label
noise in the training data, a reviewing guideline that differs). The reference's own check compares the served
scores with its labels, which is what that step corrects.

Assumption: the scores stay calibrated on the current window, i.e. P(label | content) is what the model learned
(no drift, or covariate shift: the content mix moves, the meaning does not). Under concept drift (a policy is
redefined, a phrase changes meaning) the estimate is wrong and nothing in the unlabeled window can tell. When
labels arrive, the check compares the estimate on the labeled rows with what those labels realize: any
selection of rows that depends only on the content (uniform delayed labels, review-queue strata) keeps the
estimate unbiased on that selection, so a difference larger than both `drift.estimate_tolerance` and the
sampling noise (`drift.estimate_alpha`, two-sided) marks the estimate unreliable for that policy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from core.config.drift import CALIBRATION_SERVED, DriftConfig
from monitoring.schema import FLAG_PREFIX, LABEL_PREFIX, SCORE_PREFIX

RELIABLE = "reliable"
UNRELIABLE = "unreliable"
UNCHECKED = "unchecked"
ASSUMPTIONS = (
    "Scores are calibrated probabilities (Platt-scaled per policy at training) and stay calibrated on this "
    "window: the estimate holds without drift and under covariate shift (what is posted changes, what it means "
    "does not). It does not hold under concept drift (a policy redefined, content whose meaning changed): "
    "then it is wrong, and only labels can show it."
)


@dataclass(frozen=True)
class Counts:
    """Expected (or realized) confusion counts at the served threshold."""

    true_positives: float
    false_positives: float
    false_negatives: float
    rows: int

    @property
    def precision(self) -> float | None:
        flagged = self.true_positives + self.false_positives
        return self.true_positives / flagged if flagged > 0 else None

    @property
    def recall(self) -> float | None:
        positives = self.true_positives + self.false_negatives
        return self.true_positives / positives if positives > 0 else None

    @property
    def flag_rate(self) -> float | None:
        return (self.true_positives + self.false_positives) / self.rows if self.rows else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": _round(self.precision),
            "recall": _round(self.recall),
            "flag_rate": _round(self.flag_rate),
            "positives": round(self.true_positives + self.false_negatives, 2),
            "flagged": round(self.true_positives + self.false_positives, 2),
            "rows": self.rows,
        }


@dataclass
class PolicyEstimate:
    """One policy's estimate on a window and, when labels arrived, its check against them.

    Attributes:
        policy: The policy.
        estimated: Expected precision, recall, flag rate, positives on every scored row of the window.
        interval: Half-widths of the ~95% sampling intervals of the estimated precision and recall.
        calibration: How the scores were mapped to probabilities (served as is, or fitted on the reference).
        labeled: Estimate and realized figures on the labeled rows, and the z-scores of their differences.
        reliability: `reliable`, `unreliable` (labels disagree beyond tolerance and noise) or `unchecked`.
        reason: Why, in one sentence.
    """

    policy: str
    estimated: dict[str, Any]
    interval: dict[str, float | None]
    calibration: str = "served scores"
    labeled: dict[str, Any] | None = None
    reliability: str = UNCHECKED
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PerformanceEstimate:
    """The estimate of every policy on the current window (and the same check on the reference)."""

    policies: list[PolicyEstimate]
    reference: list[PolicyEstimate] = field(default_factory=list)
    assumptions: str = ASSUMPTIONS

    @property
    def unreliable(self) -> list[str]:
        return [p.policy for p in self.policies if p.reliability == UNRELIABLE]

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "confidence-based performance estimation (CBPE) per policy, at the served threshold",
            "assumptions": self.assumptions,
            "unreliable_policies": self.unreliable,
            "policies": {p.policy: p.to_dict() for p in self.policies},
            "reference": {p.policy: p.to_dict() for p in self.reference},
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def expected_counts(scores: np.ndarray, flags: np.ndarray) -> Counts:
    """Expected confusion counts of rows with calibrated `scores` and served `flags` (booleans)."""
    return Counts(
        true_positives=float(scores[flags].sum()),
        false_positives=float((1.0 - scores[flags]).sum()),
        false_negatives=float(scores[~flags].sum()),
        rows=len(scores),
    )


def realized_counts(labels: np.ndarray, flags: np.ndarray) -> Counts:
    """Confusion counts that the 0/1 `labels` realize for the served `flags`."""
    positives = labels > 0.5
    return Counts(
        true_positives=float((positives & flags).sum()),
        false_positives=float((~positives & flags).sum()),
        false_negatives=float((positives & ~flags).sum()),
        rows=len(labels),
    )


def _intervals(scores: np.ndarray, flags: np.ndarray) -> dict[str, float | None]:
    """~95% half-widths of precision and recall if the labels were Bernoulli(score) draws."""
    variance = scores * (1.0 - scores)
    flagged = int(flags.sum())
    tp, fn = float(scores[flags].sum()), float(scores[~flags].sum())
    var_tp, var_fn = float(variance[flags].sum()), float(variance[~flags].sum())
    precision = 1.96 * math.sqrt(var_tp) / flagged if flagged else None
    recall = 1.96 * math.sqrt(fn**2 * var_tp + tp**2 * var_fn) / (tp + fn) ** 2 if tp + fn > 0 else None
    return {"precision": _round(precision), "recall": _round(recall)}


def _z(observed: float, expected: float, variance: float) -> float:
    if variance <= 0:
        return 0.0 if math.isclose(observed, expected, abs_tol=0.5) else math.inf
    return (observed - expected) / math.sqrt(variance)


def _check(
    scores: np.ndarray, flags: np.ndarray, labels: np.ndarray, config: DriftConfig
) -> tuple[dict[str, Any], str, str]:
    """Estimate vs realized on labeled rows: figures, reliability, reason."""
    from scipy.stats import norm

    estimated, realized = expected_counts(scores, flags), realized_counts(labels, flags)
    variance = scores * (1.0 - scores)
    z_flagged = _z(realized.true_positives, estimated.true_positives, float(variance[flags].sum()))
    z_missed = _z(realized.false_negatives, estimated.false_negatives, float(variance[~flags].sum()))
    figures = {
        "rows": len(labels),
        "estimated": estimated.to_dict(),
        "realized": realized.to_dict(),
        "z_flagged_positives": round(z_flagged, 2) if math.isfinite(z_flagged) else None,
        "z_missed_positives": round(z_missed, 2) if math.isfinite(z_missed) else None,
    }
    if len(labels) < config.min_labeled:
        return (
            figures,
            UNCHECKED,
            f"{len(labels)} labeled rows, fewer than drift.min_labeled={config.min_labeled}",
        )
    critical = float(norm.ppf(1.0 - config.estimate_alpha / 2.0))
    findings = []
    for metric, z, support in (
        ("precision", z_flagged, estimated.true_positives + estimated.false_positives),
        ("recall", z_missed, realized.true_positives + realized.false_negatives),
    ):
        estimate, actual = getattr(estimated, metric), getattr(realized, metric)
        if estimate is None or actual is None or support < config.estimate_min_count:
            continue
        gap = abs(estimate - actual)
        if gap > config.estimate_tolerance and abs(z) > critical:
            findings.append(f"{metric} estimated {estimate:.3f}, realized {actual:.3f} (|z| {abs(z):.1f})")
    if findings:
        return (
            figures,
            UNRELIABLE,
            "labels disagree with the estimate: "
            + "; ".join(findings)
            + " on the labeled rows; the scores no longer mean what they did (concept drift, or a calibration "
            "that does not hold here): trust the labels, not the estimate",
        )
    return (
        figures,
        RELIABLE,
        f"the {len(labels)} labeled rows agree with the estimate within drift.estimate_tolerance="
        f"{config.estimate_tolerance} or the sampling noise",
    )


def _scored(frame, policy: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(scores, flags, labels with NaN where none arrived) of a window's scored rows for a policy."""
    score_column, flag_column = SCORE_PREFIX + policy, FLAG_PREFIX + policy
    if score_column not in frame.columns or flag_column not in frame.columns:
        return None
    scores = frame[score_column].to_numpy(dtype=float)
    flags = frame[flag_column].to_numpy(dtype=float)
    scored = ~np.isnan(scores) & ~np.isnan(flags)
    if not scored.any():
        return None
    label_column = LABEL_PREFIX + policy
    labels = (
        frame[label_column].to_numpy(dtype=float)[scored]
        if label_column in frame.columns
        else np.full(int(scored.sum()), np.nan)
    )
    return np.clip(scores[scored], 0.0, 1.0), flags[scored] >= 0.5, labels


def fit_calibration(reference, policy: str, config: DriftConfig) -> tuple[Callable | None, str]:
    """The map from served score to probability fitted on the reference's labeled rows, and how it was made
    (None: the served scores are used, with the reason)."""
    if config.estimate_calibration == CALIBRATION_SERVED:
        return None, "served scores (drift.estimate_calibration=served)"
    rows = _scored(reference, policy)
    if rows is None:
        return None, "served scores (the reference has no scored row)"
    scores, _, labels = rows
    known = ~np.isnan(labels)
    positives = int((labels[known] > 0.5).sum())
    if (
        known.sum() < config.min_labeled
        or min(positives, int(known.sum()) - positives) < config.estimate_min_count
    ):
        return None, (
            f"served scores (the reference has {int(known.sum())} labeled rows, {positives} positive: too few "
            f"to calibrate on; drift.min_labeled={config.min_labeled}, drift.estimate_min_count="
            f"{config.estimate_min_count})"
        )
    from sklearn.isotonic import IsotonicRegression

    model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    model.fit(scores[known], (labels[known] > 0.5).astype(float))
    return model.predict, f"isotonic on {int(known.sum())} labeled reference rows ({positives} positive)"


def estimate_policy(
    frame, policy: str, config: DriftConfig, calibration: Callable | None = None, calibrated_by: str = ""
) -> PolicyEstimate | None:
    """The estimate of one policy on a window's frame (None when the window has no scored row for it).

    Args:
        frame: The window's log frame (scores, flags, labels where they arrived).
        policy: The policy.
        config: Tolerances of the check against labels.
        calibration: Map from served score to probability (None: the served scores).
        calibrated_by: How `calibration` was made, recorded with the estimate.
    """
    rows = _scored(frame, policy)
    if rows is None:
        return None
    served, flags, labels = rows
    scores = np.clip(calibration(served), 0.0, 1.0) if calibration is not None else served
    estimate = PolicyEstimate(
        policy=policy,
        estimated=expected_counts(scores, flags).to_dict(),
        interval=_intervals(scores, flags),
        calibration=calibrated_by or "served scores",
        reason="no labeled row yet: the estimate rests on its assumptions alone",
    )
    known = ~np.isnan(labels)
    if known.any():
        estimate.labeled, estimate.reliability, estimate.reason = _check(
            scores[known], flags[known], labels[known], config
        )
    return estimate


def estimate_performance(reference, current, policies: list[str], config: DriftConfig) -> PerformanceEstimate:
    """Every policy's estimate on the current window (scores calibrated on the reference's labels where it has
    enough), and the served scores checked against the reference's own labels."""
    current_estimates, reference_checks = [], []
    for policy in policies:
        calibration, calibrated_by = fit_calibration(reference, policy, config)
        if (estimate := estimate_policy(current, policy, config, calibration, calibrated_by)) is not None:
            current_estimates.append(estimate)
        if (check := estimate_policy(reference, policy, config)) is not None:
            reference_checks.append(check)
    return PerformanceEstimate(policies=current_estimates, reference=reference_checks)
