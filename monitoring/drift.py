"""The drift check: compares a current window of inference logs with a reference, signal by signal.

The signals (text, image and modality descriptors, embeddings, prediction drift, flagged rates, performance) come
from `monitoring.drift_signals`; `compare_windows` runs them, ranks them by severity (drifted first), judges the
window and picks examples: the current rows that show the top drifted signals best.

Large windows are sampled (`max_sample_rows`, seeded; `read_logs` already keeps a uniform sample of that many
rows) for the distribution tests and embeddings; the row counts and flag rates use every row (`WindowCounts`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.config.drift import DriftConfig
from monitoring.drift_signals import (
    GROUP_MODALITY,
    Signal,
    WindowCounts,
    embedding_signals,
    evidently_signals,
    flag_rate_signals,
    jsonable,
    mix_matched,
    performance_signals,
)
from monitoring.schema import IMAGE_EMBEDDING_PREFIX, SCORE_PREFIX, TEXT_EMBEDDING_PREFIX, embedding_columns

STATUS_DRIFT = "drift"
STATUS_NO_DRIFT = "no_drift"
STATUS_INSUFFICIENT = "insufficient_data"


@dataclass
class DriftResult:
    """The outcome of a drift check."""

    status: str
    signals: list[Signal]
    reference_rows: int
    current_rows: int
    sampled: dict[str, int]
    policies: list[str]
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    snapshot: Any = None  # the Evidently snapshot of the tabular and prediction drift

    @property
    def drift_detected(self) -> bool:
        return self.status == STATUS_DRIFT

    @property
    def drifted(self) -> list[Signal]:
        return [signal for signal in self.signals if signal.drifted]


def _sample(frame, limit: int, seed: int):
    return frame.sample(n=limit, random_state=seed) if len(frame) > limit else frame


# Examples ---------------------------------------------------------------------------------------------------------
EXAMPLE_COLUMNS = (
    "timestamp",
    "request_id",
    "item",
    "text",
    "text_sha256",
    "text_language",
    "text_length",
    "image_format",
    "image_width",
    "image_height",
    "action",
)


def _examples(signal: Signal, reference, current, policies: list[str], limit: int) -> list[dict[str, Any]]:
    """The current rows that show a drifted signal best."""
    if signal.kind == "embedding":
        columns = embedding_columns(
            TEXT_EMBEDDING_PREFIX if signal.name.startswith("text") else IMAGE_EMBEDDING_PREFIX
        )
        ref = reference[columns].dropna().to_numpy()
        cur = current[columns].dropna()
        if ref.size == 0 or cur.empty:
            return []
        center, spread = ref.mean(axis=0), ref.std(axis=0) + 1e-6
        distance = np.sqrt((((cur.to_numpy() - center) / spread) ** 2).sum(axis=1))
        rows = cur.index[np.argsort(-distance)[:limit]]
    elif signal.kind in ("prediction", "flag_rate", "performance"):
        policy = signal.group.split(":", 1)[1]
        rows = current[SCORE_PREFIX + policy].sort_values(ascending=False).index[:limit]
    elif signal.kind == "numeric":
        ref_values = reference[signal.name].dropna().astype(float)
        cur_values = current[signal.name].dropna().astype(float)
        if ref_values.empty or cur_values.empty:
            return []
        median = float(ref_values.median())
        rows = (cur_values - median).abs().sort_values(ascending=False).index[:limit]
    else:  # categorical: rows of the category that gained the most share
        ref_share = reference[signal.name].astype(str).value_counts(normalize=True)
        cur_share = current[signal.name].astype(str).value_counts(normalize=True)
        gained = (cur_share - ref_share.reindex(cur_share.index).fillna(0)).sort_values(ascending=False)
        if gained.empty:
            return []
        rows = current.index[current[signal.name].astype(str) == gained.index[0]][:limit]
    examples = []
    for row in rows:
        record = current.loc[row]
        example = {c: jsonable(record[c]) for c in EXAMPLE_COLUMNS if c in current.columns}
        if "timestamp" in example:
            example["timestamp"] = str(record["timestamp"])
        example["scores"] = {p: round(float(record[SCORE_PREFIX + p]), 4) for p in policies}
        examples.append(example)
    return examples


# The check ----------------------------------------------------------------------------------------------------------
def compare_windows(
    reference,
    current,
    policies: list[str],
    config: DriftConfig | None = None,
    counts: tuple[WindowCounts, WindowCounts] | None = None,
) -> DriftResult:
    """Compares two windows (flat frames from `monitoring.log_reader.read_logs`).

    Args:
        reference: The reference window (every row, or a uniform sample of it).
        current: The current window (likewise).
        policies: Policy names (score columns `score_<policy>`).
        config: Thresholds and limits.
        counts: The exact (reference, current) figures when the frames are samples (default: the frames').

    Returns:
        The result: status, signals ranked by severity (drifted first), examples for the top drifted signals.
    """
    config = config or DriftConfig()
    ref_counts, cur_counts = counts or (
        WindowCounts.of(reference, policies),
        WindowCounts.of(current, policies),
    )
    if cur_counts.rows < config.min_rows or ref_counts.rows < config.min_rows:
        reasons = [
            f"{name} window has {rows} rows, fewer than the {config.min_rows} a verdict needs"
            for name, rows in (("current", cur_counts.rows), ("reference", ref_counts.rows))
            if rows < config.min_rows
        ]
        return DriftResult(
            status=STATUS_INSUFFICIENT,
            signals=[],
            reference_rows=ref_counts.rows,
            current_rows=cur_counts.rows,
            sampled={},
            policies=policies,
            reasons=reasons,
        )
    ref_sample = _sample(reference, config.max_sample_rows, config.seed)
    cur_sample = _sample(current, config.max_sample_rows, config.seed + 1)
    signals, snapshot = evidently_signals(ref_sample, cur_sample, policies, config)
    signals += embedding_signals(ref_sample, cur_sample, config)
    signals += flag_rate_signals(ref_counts, cur_counts, policies, config)
    if any(s.drifted for s in signals if s.group == GROUP_MODALITY):
        # A new modality mix moves every policy's score distribution by itself (image-only posts score
        # differently): judge the scores against a reference with the current mix, so that prediction drift
        # means "the model answers differently for the same kind of post".
        matched = mix_matched(ref_sample, cur_sample, config.seed)
        signals = [s for s in signals if s.kind not in ("prediction", "flag_rate")]
        adjusted, _ = evidently_signals(
            _sample(matched, config.max_sample_rows, config.seed),
            cur_sample,
            policies,
            config,
            frozenset({"prediction"}),
        )
        adjusted += flag_rate_signals(WindowCounts.of(matched, policies), cur_counts, policies, config)
        for signal in adjusted:
            signal.note = "reference re-weighted to the current modality mix"
        signals += adjusted
    signals += performance_signals(reference, current, policies, config)
    signals.sort(key=lambda s: (s.drifted, s.severity), reverse=True)
    drifted = [s for s in signals if s.drifted]
    examples = {
        s.name: _examples(s, ref_sample, cur_sample, policies, config.examples)
        for s in _top_per_group(drifted, 3)
    }
    reasons = [
        f"{s.name}: {s.method} {s.score:.3f} >= threshold {s.threshold:.3f} (severity {s.severity:.1f})"
        for s in drifted
    ] or ["no signal crossed its threshold"]
    return DriftResult(
        status=STATUS_DRIFT if drifted else STATUS_NO_DRIFT,
        signals=signals,
        reference_rows=ref_counts.rows,
        current_rows=cur_counts.rows,
        sampled={"reference": len(ref_sample), "current": len(cur_sample)},
        policies=policies,
        examples=examples,
        reasons=reasons,
        snapshot=snapshot,
    )


def _top_per_group(signals: list[Signal], groups: int) -> list[Signal]:
    """The strongest signal of each of the first `groups` groups, in rank order."""
    chosen: dict[str, Signal] = {}
    for signal in signals:
        if signal.group not in chosen:
            chosen[signal.group] = signal
        if len(chosen) == groups:
            break
    return list(chosen.values())


def window_id(reference_identity: str, current_identity: str) -> str:
    """A stable id of a (reference, current) pair: the same windows give the same id."""
    return hashlib.sha256(f"{reference_identity}\n{current_identity}".encode()).hexdigest()[:16]
