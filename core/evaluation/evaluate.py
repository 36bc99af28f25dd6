"""Evaluation of a scored test split: per-policy metrics, slices, modality ablation.

Input is a score table (one row per test item) with `id`, `modality`, optional `language`, and per policy
`label_<p>` (0 or 1, NaN where the item is not annotated for that policy), `score_<p>` (fusion probability),
`score_no_image_<p>` and `score_no_text_<p>` (the same model with one modality removed; NaN where the item
lacks the other modality). Every metric of a policy, slices and ablation included, is computed on the rows
annotated for that policy. A validation score table with the
same columns (ablations not needed) is used only to choose each policy's operating threshold, so the test
numbers at that threshold are honest. The result is a JSON-able dict, see `evaluate_scores`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from core.common.constants import COL_ID, COL_LANGUAGE, COL_MODALITY, MODALITIES, MODALITY_BOTH
from core.config.run import EvaluationConfig, per_policy
from core.evaluation import metrics

ABLATION_REMOVED: tuple[str, ...] = ("image", "text")
UNKNOWN_LANGUAGE = "unknown"
SLICE_COLUMNS: tuple[str, ...] = (COL_MODALITY, COL_LANGUAGE)


def label_column(policy: str) -> str:
    """Name of the 0/1 label column of `policy` in a score table."""
    return f"label_{policy}"


def score_column(policy: str) -> str:
    """Name of the fusion-probability column of `policy` in a score table."""
    return f"score_{policy}"


def uncalibrated_column(policy: str) -> str:
    """Name of the optional column of `policy`'s probability before calibration (for ECE before/after)."""
    return f"uncalibrated_score_{policy}"


def ablation_column(policy: str, removed: str) -> str:
    """Name of the column holding `policy`'s probability with one modality removed.

    Args:
        policy: Policy name.
        removed: The modality taken away from the input, "image" or "text".

    Returns:
        `score_no_<removed>_<policy>`.

    Raises:
        ValueError: When `removed` is not "image" or "text".
    """
    if removed not in ABLATION_REMOVED:
        raise ValueError(f"removed must be one of {ABLATION_REMOVED}, got {removed!r}")
    return f"score_no_{removed}_{policy}"


def required_columns(policies: Sequence[str], ablations: bool = True) -> list[str]:
    """Columns a score table must have (`language` is optional).

    Args:
        policies: Policy names.
        ablations: Whether the ablation columns are required (test split) or not (validation split).

    Returns:
        Column names, in a stable order.
    """
    columns = [COL_ID, COL_MODALITY]
    for policy in policies:
        columns += [label_column(policy), score_column(policy)]
        if ablations:
            columns += [ablation_column(policy, removed) for removed in ABLATION_REMOVED]
    return columns


def check_score_table(
    frame: pd.DataFrame, policies: Sequence[str], ablations: bool = True, name: str = ""
) -> None:
    """Raises ValueError naming every missing column, or when the table has no rows.

    Args:
        frame: Score table.
        policies: Policy names.
        ablations: Whether ablation columns are required.
        name: Name of the table in messages ("test", "validation").
    """
    label = f"{name} score table" if name else "score table"
    missing = [c for c in required_columns(policies, ablations) if c not in frame.columns]
    if missing:
        raise ValueError(f"{label} lacks column(s) {missing}")
    if len(frame) == 0:
        raise ValueError(f"{label} has no rows")


def _labels(frame: pd.DataFrame, policy: str) -> np.ndarray:
    """0/1 labels with NaN where the row is not annotated for `policy`."""
    raw = frame[label_column(policy)]
    values = _scores(frame, label_column(policy))
    bad = int((raw.notna().to_numpy() & ~np.isin(values, (0.0, 1.0))).sum())
    if bad:
        raise ValueError(f"{label_column(policy)} has {bad} value(s) that are neither 0, 1 nor missing")
    return values


def _scores(frame: pd.DataFrame, column: str) -> np.ndarray:
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _fusion_scores(frame: pd.DataFrame, policy: str, name: str) -> np.ndarray:
    values = _scores(frame, score_column(policy))
    missing = int((~np.isfinite(values)).sum())
    if missing:
        raise ValueError(f"{name} {score_column(policy)} has {missing} missing or non-finite value(s)")
    return values


def _mean(values: Sequence[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def _annotated(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = ~np.isnan(y)
    return y[keep], s[keep]


def _policy_metrics(
    y: np.ndarray,
    s: np.ndarray,
    val_y: np.ndarray,
    val_s: np.ndarray,
    target: float,
    config: EvaluationConfig,
    raw: np.ndarray | None = None,
) -> dict[str, Any]:
    ece_before = None
    if raw is not None and (~np.isnan(y)).any():
        ece_before = metrics.expected_calibration_error(*_annotated(y, raw), config.calibration_bins)
    y, s = _annotated(y, s)
    val_y, val_s = _annotated(val_y, val_s)
    if y.size == 0 or val_y.size == 0:  # validation refuses such data; a hand-made table may still get here
        empty = {key: None for key in _POLICY_KEYS}
        return {**empty, "positives": int(y.sum()), "rows": int(y.size), "target_precision": float(target)}
    choice = metrics.threshold_for_precision(val_y, val_s, target)
    rates = metrics.rates_at_threshold(y, s, choice.threshold)
    interval = metrics.bootstrap_roc_auc(y, s, config.bootstrap_samples, config.seed)
    fpr, tpr, thresholds = metrics.roc_curve_points(y, s)
    return {
        "roc_auc": metrics.roc_auc(y, s),
        "roc_auc_ci": list(interval) if interval is not None else None,
        "pr_auc": metrics.pr_auc(y, s),
        "positives": int(y.sum()),
        "rows": int(y.size),
        "threshold": choice.threshold,
        "target_precision": float(target),
        "threshold_reached_on_validation": choice.reached,
        "validation_precision": choice.precision,
        "validation_recall": choice.recall,
        "test_precision": rates["precision"],
        "test_recall": rates["recall"],
        "test_fpr": rates["fpr"],
        "ece": metrics.expected_calibration_error(y, s, config.calibration_bins),
        "ece_uncalibrated": ece_before,
        "confusion_matrix": metrics.confusion_matrix_at(y, s, choice.threshold),
        "roc_curve": {"fpr": fpr, "tpr": tpr, "thresholds": thresholds},
        "pr_curve": dict(zip(("precision", "recall"), metrics.pr_curve_points(y, s), strict=True)),
        "reliability": metrics.reliability_bins(y, s, config.calibration_bins),
        "histogram": metrics.score_histogram(y, s),
    }


_POLICY_KEYS = (
    "roc_auc", "roc_auc_ci", "pr_auc", "threshold", "threshold_reached_on_validation", "validation_precision",
    "validation_recall", "test_precision", "test_recall", "test_fpr", "ece", "ece_uncalibrated",
    "confusion_matrix", "roc_curve", "pr_curve", "reliability", "histogram",
)  # fmt: skip


def _slice_entry(
    labels: dict[str, np.ndarray],
    scores: dict[str, np.ndarray],
    mask: np.ndarray,
    min_rows: int,
    thresholds: dict[str, float | None],
) -> dict[str, Any]:
    """Metrics of one slice; `fpr` and `recall` are at each policy's operating threshold (None without negatives,
    respectively positives, in the slice): the per-group false-positive rate is the usual bias check."""
    rows = int(mask.sum())
    policies: dict[str, dict[str, Any]] = {}
    single_class: list[str] = []
    few_annotated: list[str] = []
    too_small = rows < min_rows
    for policy, y_all in labels.items():
        y, s = _annotated(y_all[mask], scores[policy][mask])
        counts = {"positives": int(y.sum()), "annotated": int(y.size)}
        if too_small or y.size < min_rows:
            if not too_small:
                few_annotated.append(policy)
            policies[policy] = {"roc_auc": None, "pr_auc": None, "fpr": None, "recall": None, **counts}
            continue
        auc = metrics.roc_auc(y, s)
        if auc is None:
            single_class.append(policy)
        fpr = recall = None
        if thresholds.get(policy) is not None:
            rates = metrics.rates_at_threshold(y, s, thresholds[policy])
            fpr = rates["fpr"] if counts["positives"] < y.size else None
            recall = rates["recall"] if counts["positives"] else None
        policies[policy] = {
            "roc_auc": auc,
            "pr_auc": metrics.pr_auc(y, s),
            "fpr": fpr,
            "recall": recall,
            **counts,
        }
    note = None
    if too_small:
        note = f"{rows} row(s) < min_slice_rows {min_rows}: metrics not reported"
    else:
        notes = []
        if few_annotated:
            notes.append(f"fewer than {min_rows} annotated rows for: {', '.join(few_annotated)}")
        if single_class:
            notes.append(f"single class (metrics undefined) for: {', '.join(single_class)}")
        note = "; ".join(notes) or None
    return {
        "rows": rows,
        "policies": policies,
        "macro_roc_auc": _mean([entry["roc_auc"] for entry in policies.values()]),
        "note": note,
    }


def _slice_values(frame: pd.DataFrame, column: str) -> tuple[np.ndarray, list[str]]:
    """The slice value of each row (as str) and the distinct values in report order."""
    if column == COL_LANGUAGE:
        raw = frame[column]
        values = raw.astype(object).where(raw.notna(), UNKNOWN_LANGUAGE).astype(str)
        values = values.where(values.str.strip() != "", UNKNOWN_LANGUAGE)
        distinct = sorted(set(values), key=lambda v: (v == UNKNOWN_LANGUAGE, v))
    else:
        values = frame[column].astype(object).where(frame[column].notna(), "missing").astype(str)
        present = set(values)
        distinct = [m for m in MODALITIES if m in present] + sorted(present - set(MODALITIES))
    return values.to_numpy(), distinct


def _ablation(
    frame: pd.DataFrame,
    policies: Sequence[str],
    labels: dict[str, np.ndarray],
    scores: dict[str, np.ndarray],
    min_rows: int,
) -> dict[str, Any]:
    multimodal = (frame[COL_MODALITY].astype(object) == MODALITY_BOTH).to_numpy()
    no_text = {p: _scores(frame, ablation_column(p, "text")) for p in policies}
    no_image = {p: _scores(frame, ablation_column(p, "image")) for p in policies}
    complete = multimodal.copy()
    for policy in policies:
        complete &= np.isfinite(no_text[policy]) & np.isfinite(no_image[policy])
    rows = int(complete.sum())
    notes = []
    left_out = int(multimodal.sum()) - rows
    if left_out:
        notes.append(f"{left_out} text+image row(s) without ablation scores were left out")
    too_small = rows < min_rows
    if too_small:
        notes.append(f"{rows} text+image row(s) < min_slice_rows {min_rows}: metrics not reported")
    result: dict[str, dict[str, float | None]] = {}
    for policy in policies:
        if too_small:
            result[policy] = {"fusion": None, "text_removed": None, "image_removed": None}
            continue
        rows_of_policy = complete & ~np.isnan(labels[policy])
        y = labels[policy][rows_of_policy]
        result[policy] = {
            "fusion": metrics.roc_auc(y, scores[policy][rows_of_policy]),
            "text_removed": metrics.roc_auc(y, no_text[policy][rows_of_policy]),
            "image_removed": metrics.roc_auc(y, no_image[policy][rows_of_policy]),
        }
    single = [p for p, entry in result.items() if not too_small and entry["fusion"] is None]
    if single:
        notes.append(f"single class (metrics undefined) for: {', '.join(single)}")
    return {
        "rows": rows,
        "fusion_macro_roc_auc": _mean([e["fusion"] for e in result.values()]),
        "text_removed_macro_roc_auc": _mean([e["text_removed"] for e in result.values()]),
        "image_removed_macro_roc_auc": _mean([e["image_removed"] for e in result.values()]),
        "policies": result,
        "note": "; ".join(notes) or None,
    }


def evaluate_scores(
    test: pd.DataFrame, validation: pd.DataFrame, policies: list[str], config: EvaluationConfig
) -> dict[str, Any]:
    """Evaluates a scored test split; thresholds are chosen on the scored validation split.

    Args:
        test: Test score table (with ablation columns).
        validation: Validation score table (ablation columns not needed).
        policies: Policies to evaluate, in the model's output order.
        config: Target precision per policy, bootstrap samples, calibration bins, smallest slice, seed.

    Returns:
        A JSON-able dict::

            {"policies": {p: {"roc_auc", "roc_auc_ci": [lo, hi] | None, "pr_auc", "positives", "rows" (annotated),
                              "threshold", "target_precision", "threshold_reached_on_validation",
                              "validation_precision", "validation_recall", "test_precision", "test_recall",
                              "test_fpr", "ece", "ece_uncalibrated" (None without the uncalibrated column),
                              "confusion_matrix": [[tn, fp], [fn, tp]], "roc_curve": {"fpr", "tpr",
                              "thresholds"}, "pr_curve": {"precision", "recall"}, "reliability": {"score",
                              "positive_rate", "rows"} per bin, "histogram": {"edges", "positives",
                              "negatives"}}},
             "macro": {"roc_auc", "pr_auc", "ece"},
             "slices": {"modality" | "language" | each of `config.slice_columns`: {value: {"rows",
                        "policies": {p: {"roc_auc", "pr_auc", "fpr", "recall" (at the threshold), "positives",
                        "annotated"}}, "macro_roc_auc", "note"}}} ({} for a column the table lacks),
             "ablation": {"rows", "fusion_macro_roc_auc", "text_removed_macro_roc_auc",
                          "image_removed_macro_roc_auc", "policies": {p: {"fusion", "text_removed",
                          "image_removed"}}, "note"}}

        Undefined metrics (a single class, no annotated rows) are None; macro values average the defined ones.

    Raises:
        ValueError: When a table lacks columns or rows, or holds labels other than 0/1/missing, or missing fusion
            scores.
    """
    if not policies:
        raise ValueError("policies must name at least one policy")
    check_score_table(test, policies, ablations=True, name="test")
    check_score_table(validation, policies, ablations=False, name="validation")
    test = test.reset_index(drop=True)
    labels = {p: _labels(test, p) for p in policies}
    scores = {p: _fusion_scores(test, p, "test") for p in policies}

    per_policy_results: dict[str, dict[str, Any]] = {}
    for policy in policies:
        val_y = _labels(validation, policy)
        val_s = _fusion_scores(validation, policy, "validation")
        target = per_policy(config.target_precision, policy)
        raw_column = uncalibrated_column(policy)
        raw = test[raw_column].to_numpy(dtype=float) if raw_column in test.columns else None
        per_policy_results[policy] = _policy_metrics(
            labels[policy], scores[policy], val_y, val_s, target, config, raw
        )

    thresholds = {p: per_policy_results[p]["threshold"] for p in policies}
    slices: dict[str, dict[str, Any]] = {}
    for column in dict.fromkeys([*SLICE_COLUMNS, *config.slice_columns]):
        if column not in test.columns:
            slices[column] = {}
            continue
        values, distinct = _slice_values(test, column)
        slices[column] = {
            value: _slice_entry(labels, scores, values == value, config.min_slice_rows, thresholds)
            for value in distinct
        }

    return {
        "policies": per_policy_results,
        "macro": {
            key: _mean([per_policy_results[p][key] for p in policies]) for key in ("roc_auc", "pr_auc", "ece")
        },
        "slices": slices,
        "ablation": _ablation(test, policies, labels, scores, config.min_slice_rows),
    }


def thresholds_of(evaluation: dict[str, Any]) -> dict[str, float]:
    """Operating threshold per policy, chosen on validation at the target precision."""
    return {
        p: float(v["threshold"]) for p, v in evaluation["policies"].items() if v.get("threshold") is not None
    }
