"""The drift check: compares a current window of inference logs with a reference, signal by signal.

Signals, each with a score, the threshold it is judged against and a severity (how many thresholds away it is,
so that signals of different kinds can be ranked together):

* **text** and **image** descriptors (length, words, non-letter and upper-case shares, URLs, emoji, language;
  width, height, encoded size, format) through Evidently's `ValueDrift` (normed Wasserstein distance for numbers,
  Jensen-Shannon distance for categories), each over the rows that have that modality;
* **modality mix** (`text_present`, `image_present`) the same way;
* **embeddings** (`text_embedding`, `image_embedding`): Evidently's model-based embedding drift (a classifier
  tries to tell current from reference rows; ROC-AUC above the threshold is drift);
* **prediction drift** `score_<policy>`: `ValueDrift` of each policy's score;
* **flagged rate** `flag_rate_<policy>`: the change of the share flagged, significant by a two-proportion z-test;
* **performance** `performance_<policy>`: where delayed labels exist in both windows, the drop of ROC-AUC.

Large windows are sampled (`max_sample_rows`, seeded; `read_logs` already keeps a uniform sample of that many
rows) for the distribution tests and embeddings; the row counts and flag rates use every row (`WindowCounts`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from monitoring.log_records import flag_counts
from monitoring.schema import (
    DEFAULT_ROW_BUDGET,
    FLAG_PREFIX,
    IMAGE_EMBEDDING_PREFIX,
    IMAGE_NUMERIC_COLUMNS,
    LABEL_PREFIX,
    SCORE_PREFIX,
    TEXT_EMBEDDING_PREFIX,
    TEXT_NUMERIC_COLUMNS,
    embedding_columns,
)

STATUS_DRIFT = "drift"
STATUS_NO_DRIFT = "no_drift"
STATUS_INSUFFICIENT = "insufficient_data"
GROUP_TEXT = "text"
GROUP_IMAGE = "image"
GROUP_MODALITY = "modality"
SEVERITY_CAP = 50.0  # a distance against a constant reference is astronomically large; rank it as "very"


@dataclass(frozen=True)
class DriftConfig:
    """Thresholds and limits of the drift check.

    Attributes:
        numeric_threshold: Normed Wasserstein distance above which a numeric feature or score has drifted.
        categorical_threshold: Jensen-Shannon distance above which a categorical feature has drifted.
        embedding_auc_threshold: Domain-classifier ROC-AUC above which an embedding has drifted.
        flag_rate_change: Absolute change of a policy's flagged share that counts as drift...
        flag_rate_alpha: ...when a two-proportion z-test also rejects "no change" at this level.
        significance_alpha: A distance above its threshold is drift only when a two-sample test (KS for
            numbers, chi-square for categories) also rejects "same distribution" at this level: small windows
            have noisy distances, large windows have significant but tiny differences; both must hold.
        performance_drop: Drop of a policy's ROC-AUC on labeled rows that counts as drift.
        min_rows: Fewer current (or reference) rows than this is "insufficient data", not a verdict.
        min_labeled: Labeled rows (with both classes) per window needed to judge performance.
        max_sample_rows: Rows per window used for distribution tests and embeddings (a seeded sample above
            it); also the row budget `tns drift` reads each window with.
        examples: Typical drifted examples shown per top signal.
        seed: Seed of the sampling and of the embedding classifier.
    """

    numeric_threshold: float = 0.1
    categorical_threshold: float = 0.1
    embedding_auc_threshold: float = 0.55
    flag_rate_change: float = 0.05
    flag_rate_alpha: float = 0.001
    significance_alpha: float = 0.001
    performance_drop: float = 0.05
    min_rows: int = 200
    min_labeled: int = 50
    max_sample_rows: int = DEFAULT_ROW_BUDGET
    examples: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("numeric_threshold", "categorical_threshold", "flag_rate_change", "performance_drop"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"drift.{name} must be in (0, 1], got {getattr(self, name)}")
        if not 0.5 < self.embedding_auc_threshold < 1:
            raise ValueError(
                f"drift.embedding_auc_threshold must be in (0.5, 1), got {self.embedding_auc_threshold}"
            )
        for name in ("flag_rate_alpha", "significance_alpha"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"drift.{name} must be in (0, 1), got {getattr(self, name)}")
        for name in ("min_rows", "min_labeled", "max_sample_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"drift.{name} must be at least 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class WindowCounts:
    """Exact figures of a whole window, for when the frame compared is a sample of it.

    Attributes:
        rows: Served rows in the window.
        flags: Per policy, (rows flagged, rows with a flag).
    """

    rows: int
    flags: dict[str, tuple[int, int]]

    @classmethod
    def of(cls, frame, policies: list[str]) -> WindowCounts:
        """The figures of a frame that holds the whole window."""
        flags = {}
        for policy in policies:
            column = FLAG_PREFIX + policy
            if column in frame.columns:
                flags[policy] = flag_counts(frame[column].to_numpy(dtype=float))
        return cls(rows=len(frame), flags=flags)


@dataclass
class Signal:
    """One compared quantity and the verdict on it."""

    name: str
    group: str
    kind: str  # numeric, categorical, embedding, prediction, flag_rate, performance
    method: str
    score: float
    threshold: float
    drifted: bool
    severity: float
    reference_value: Any = None
    current_value: Any = None
    rows: dict[str, int] = field(default_factory=dict)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {key: _jsonable(value) for key, value in asdict(self).items()}


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


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else round(value, 6)
    return value


def _severity(score: float, threshold: float, baseline: float = 0.0) -> float:
    if not math.isfinite(score):
        return SEVERITY_CAP
    return float(min(max(score - baseline, 0.0) / (threshold - baseline), SEVERITY_CAP))


def _sample(frame, limit: int, seed: int):
    return frame.sample(n=limit, random_state=seed) if len(frame) > limit else frame


# Tabular and prediction drift through Evidently ---------------------------------------------------------------
def _tabular_specs(policies: list[str]) -> list[tuple[str, str, str, str]]:
    """(column, group, kind, subset) for every Evidently-checked column; subset names the rows it is over."""
    specs = [(c, GROUP_TEXT, "numeric", "text") for c in TEXT_NUMERIC_COLUMNS]
    specs.append(("text_language", GROUP_TEXT, "categorical", "text"))
    specs += [(c, GROUP_IMAGE, "numeric", "image") for c in IMAGE_NUMERIC_COLUMNS]
    specs.append(("image_format", GROUP_IMAGE, "categorical", "image"))
    specs += [
        ("text_present", GROUP_MODALITY, "categorical", "all"),
        ("image_present", GROUP_MODALITY, "categorical", "all"),
    ]
    specs += [(SCORE_PREFIX + p, f"prediction:{p}", "prediction", "all") for p in policies]
    return specs


def _subset(frame, subset: str):
    if subset == "text":
        return frame.loc[frame["text_present"].astype(bool)]
    if subset == "image":
        return frame.loc[frame["image_present"].astype(bool)]
    return frame


def _evidently_signals(
    reference, current, policies: list[str], config: DriftConfig, kinds: frozenset[str] | None = None
) -> tuple[list[Signal], Any]:
    """ValueDrift per column, run as one Evidently report per row subset; returns the signals and the snapshot
    of the all-rows report (kept in the Evidently workspace). `kinds` limits the columns to those kinds."""
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    specs = [
        s
        for s in _tabular_specs(policies)
        if s[0] in reference.columns and s[0] in current.columns and (kinds is None or s[2] in kinds)
    ]
    signals: list[Signal] = []
    snapshots = {}
    for subset in ("all", "text", "image"):
        chosen = [s for s in specs if s[3] == subset]
        ref, cur = _subset(reference, subset), _subset(current, subset)
        if not chosen:
            continue
        if len(ref) < 2 or len(cur) < 2:  # e.g. no images at all in one window: the modality mix says so
            continue
        numeric = [c for c, _, kind, _ in chosen if kind in ("numeric", "prediction")]
        categorical = [c for c, _, kind, _ in chosen if kind == "categorical"]

        def prepared(frame, numeric=numeric, categorical=categorical):
            data = pd.DataFrame({c: pd.to_numeric(frame[c], errors="coerce").astype(float) for c in numeric})
            for c in categorical:
                data[c] = _categories(frame[c]).to_numpy()
            return data

        definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
        metrics = [
            ValueDrift(
                column=c,
                method="wasserstein" if kind in ("numeric", "prediction") else "jensenshannon",
                threshold=config.numeric_threshold
                if kind in ("numeric", "prediction")
                else config.categorical_threshold,
            )
            for c, _, kind, _ in chosen
        ]
        snapshot = Report(metrics).run(
            current_data=Dataset.from_pandas(prepared(cur), data_definition=definition),
            reference_data=Dataset.from_pandas(prepared(ref), data_definition=definition),
        )
        snapshots[subset] = snapshot
        values = {m["config"]["column"]: m for m in snapshot.dict()["metrics"]}
        for column, group, kind, _ in chosen:
            metric = values[column]
            score, threshold = float(metric["value"]), float(metric["config"]["threshold"])
            reference_value, current_value = _summary_values(ref[column], cur[column], kind)
            p_value = _p_value(ref[column], cur[column], kind)
            significant = p_value < config.significance_alpha
            severity = _severity(score, threshold)
            signals.append(
                Signal(
                    name=column,
                    group=group,
                    kind=kind,
                    method=f"{METHOD_NAMES.get(str(metric['config']['method']), metric['config']['method'])} "
                    f"({'KS' if kind != 'categorical' else 'chi-square'} p={p_value:.2g})",
                    score=score,
                    threshold=threshold,
                    drifted=score >= threshold and significant,
                    severity=severity if significant else min(severity, 0.99),
                    reference_value=reference_value,
                    current_value=current_value,
                    rows={"reference": len(ref), "current": len(cur)},
                )
            )
    return signals, snapshots.get("all")


METHOD_NAMES = {"wasserstein": "normed Wasserstein distance", "jensenshannon": "Jensen-Shannon distance"}


def _categories(values):
    """A categorical column as strings, missing values as the category "missing" (as every check counts them)."""
    return values.astype(object).where(values.notna(), "missing").astype(str)


def _p_value(reference, current, kind: str) -> float:
    """Two-sample test p-value: Kolmogorov-Smirnov for numbers, chi-square on the category counts otherwise."""
    from scipy.stats import chi2_contingency, ks_2samp

    if kind != "categorical":
        ref = reference.astype(float).dropna().to_numpy()
        cur = current.astype(float).dropna().to_numpy()
        if len(ref) == 0 or len(cur) == 0:
            return 1.0
        return float(ks_2samp(ref, cur).pvalue)
    ref, cur = _categories(reference).value_counts(), _categories(current).value_counts()
    categories = ref.index.union(cur.index)
    if len(categories) < 2:
        return 1.0
    table = np.vstack(
        [ref.reindex(categories).fillna(0).to_numpy(), cur.reindex(categories).fillna(0).to_numpy()]
    )
    return float(chi2_contingency(table)[1])


def _summary_values(reference, current, kind: str) -> tuple[Any, Any]:
    """What the report shows next to a signal: means for numbers, the top category shares for categories."""
    if kind in ("numeric", "prediction"):
        return float(np.nanmean(reference.astype(float))), float(np.nanmean(current.astype(float)))

    def shares(values) -> dict[str, float]:
        counts = _categories(values).value_counts(normalize=True)
        return {str(k): round(float(v), 4) for k, v in counts.head(4).items()}

    return shares(reference), shares(current)


def _auc_p_value(auc: float, n_reference: int, n_current: int) -> float:
    """One-sided p-value of a held-out ROC-AUC under "the windows are the same" (Mann-Whitney normal
    approximation): small windows give noisy AUCs, so an AUC above the threshold must also be significant."""
    from scipy.stats import norm

    if n_reference < 1 or n_current < 1:
        return 1.0
    spread = math.sqrt((n_reference + n_current + 1) / (12.0 * n_reference * n_current))
    return float(norm.sf((auc - 0.5) / spread))


# Embeddings ---------------------------------------------------------------------------------------------------
def _embedding_signals(reference, current, config: DriftConfig) -> list[Signal]:
    import pandas as pd
    from evidently.metrics.embeddings import ModelDriftMethod

    signals = []
    for name, prefix, group in (
        ("text_embedding", TEXT_EMBEDDING_PREFIX, GROUP_TEXT),
        ("image_embedding", IMAGE_EMBEDDING_PREFIX, GROUP_IMAGE),
    ):
        columns = embedding_columns(prefix)
        if not set(columns) <= set(reference.columns) or not set(columns) <= set(current.columns):
            continue
        ref = reference[columns].dropna()
        cur = current[columns].dropna()
        if len(ref) < 20 or len(cur) < 20:
            continue
        method = ModelDriftMethod(threshold=config.embedding_auc_threshold)
        # Evidently's method appends a target column to the frames it gets: give it copies.
        auc, _, _ = method(
            pd.DataFrame(cur.to_numpy(), columns=columns), pd.DataFrame(ref.to_numpy(), columns=columns)
        )
        auc = float(auc)
        shift = float(np.linalg.norm(cur.to_numpy().mean(axis=0) - ref.to_numpy().mean(axis=0)))
        p_value = _auc_p_value(auc, len(ref) // 2, len(cur) // 2)  # Evidently scores a held-out half
        significant = p_value < config.significance_alpha
        severity = _severity(auc, config.embedding_auc_threshold, baseline=0.5)
        signals.append(
            Signal(
                name=name,
                group=group,
                kind="embedding",
                method=f"domain classifier ROC-AUC (Evidently ModelDriftMethod, p={p_value:.2g})",
                score=auc,
                threshold=config.embedding_auc_threshold,
                drifted=auc >= config.embedding_auc_threshold and significant,
                severity=severity if significant else min(severity, 0.99),
                reference_value=None,
                current_value=round(shift, 4),
                rows={"reference": len(ref), "current": len(cur)},
                note="current value: distance between the windows' mean embeddings",
            )
        )
    return signals


def _mix_matched(reference, current, seed: int):
    """The reference resampled (with replacement, seeded) to the current window's modality mix."""
    import pandas as pd

    def stratum(frame):
        return frame["text_present"].astype(bool).astype(int) * 2 + frame["image_present"].astype(
            bool
        ).astype(int)

    ref_strata, cur_shares = stratum(reference), stratum(current).value_counts(normalize=True)
    parts = []
    for index, (key, share) in enumerate(cur_shares.items()):
        rows = reference.loc[ref_strata == key]
        if rows.empty:
            continue
        parts.append(
            rows.sample(n=max(1, round(share * len(reference))), replace=True, random_state=seed + index)
        )
    return pd.concat(parts, ignore_index=True) if parts else reference


# Rates and performance ------------------------------------------------------------------------------------------
def _flag_rate_signals(
    reference: WindowCounts, current: WindowCounts, policies: list[str], config: DriftConfig
) -> list[Signal]:
    from scipy.stats import norm

    signals = []
    for policy in policies:
        if policy not in reference.flags or policy not in current.flags:
            continue
        (ref_flagged, ref_rows), (cur_flagged, cur_rows) = reference.flags[policy], current.flags[policy]
        if not ref_rows or not cur_rows:
            continue
        p_ref, p_cur = ref_flagged / ref_rows, cur_flagged / cur_rows
        pooled = (ref_flagged + cur_flagged) / (ref_rows + cur_rows)
        spread = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / ref_rows + 1 / cur_rows))
        p_value = float(2 * norm.sf(abs(p_cur - p_ref) / spread))
        change = abs(p_cur - p_ref)
        significant = p_value < config.flag_rate_alpha
        severity = _severity(change, config.flag_rate_change)
        signals.append(
            Signal(
                name=f"flag_rate_{policy}",
                group=f"prediction:{policy}",
                kind="flag_rate",
                method=f"|change of flagged share| (two-proportion z-test p={p_value:.2g})",
                score=change,
                threshold=config.flag_rate_change,
                drifted=change >= config.flag_rate_change and significant,
                severity=severity if significant else min(severity, 0.99),
                reference_value=round(p_ref, 4),
                current_value=round(p_cur, 4),
                rows={"reference": ref_rows, "current": cur_rows},
            )
        )
    return signals


def policy_performance(frame, policy: str, min_labeled: int) -> dict[str, float] | None:
    """ROC-AUC, precision and recall of a policy on the labeled rows (None with too few or one class)."""
    from sklearn.metrics import roc_auc_score

    label, score, flag = LABEL_PREFIX + policy, SCORE_PREFIX + policy, FLAG_PREFIX + policy
    if label not in frame.columns:
        return None
    labeled = frame.loc[frame[label].notna(), [label, score, flag]]
    y = labeled[label].to_numpy(dtype=float)
    if len(labeled) < min_labeled or y.min() == y.max():
        return None
    flagged = labeled[flag].to_numpy(dtype=float) > 0.5
    positives = y > 0.5
    return {
        "roc_auc": float(roc_auc_score(y, labeled[score].to_numpy(dtype=float))),
        "precision": float((flagged & positives).sum() / max(flagged.sum(), 1)),
        "recall": float((flagged & positives).sum() / max(positives.sum(), 1)),
        "labeled": int(len(labeled)),
    }


def _performance_signals(reference, current, policies: list[str], config: DriftConfig) -> list[Signal]:
    signals = []
    for policy in policies:
        now = policy_performance(current, policy, config.min_labeled)
        before = policy_performance(reference, policy, config.min_labeled)
        if now is None or before is None:
            continue
        drop = before["roc_auc"] - now["roc_auc"]
        signals.append(
            Signal(
                name=f"performance_{policy}",
                group=f"performance:{policy}",
                kind="performance",
                method="drop of ROC-AUC on moderator-labeled rows",
                score=drop,
                threshold=config.performance_drop,
                drifted=drop >= config.performance_drop,
                severity=_severity(drop, config.performance_drop),
                reference_value={k: round(v, 4) for k, v in before.items()},
                current_value={k: round(v, 4) for k, v in now.items()},
                rows={"reference": before["labeled"], "current": now["labeled"]},
            )
        )
    return signals


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
        example = {c: _jsonable(record[c]) for c in EXAMPLE_COLUMNS if c in current.columns}
        if "timestamp" in example:
            example["timestamp"] = str(record["timestamp"])
        example["scores"] = {p: round(float(record[SCORE_PREFIX + p]), 4) for p in policies}
        examples.append(example)
    return examples


# The check ----------------------------------------------------------------------------------------------------------
def check_drift(
    reference,
    current,
    policies: list[str],
    config: DriftConfig | None = None,
    counts: tuple[WindowCounts, WindowCounts] | None = None,
) -> DriftResult:
    """Compares two windows (flat frames from `monitoring.logs.read_logs`).

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
    signals, snapshot = _evidently_signals(ref_sample, cur_sample, policies, config)
    signals += _embedding_signals(ref_sample, cur_sample, config)
    signals += _flag_rate_signals(ref_counts, cur_counts, policies, config)
    if any(s.drifted for s in signals if s.group == GROUP_MODALITY):
        # A new modality mix moves every policy's score distribution by itself (image-only posts score
        # differently): judge the scores against a reference with the current mix, so that prediction drift
        # means "the model answers differently for the same kind of post".
        matched = _mix_matched(ref_sample, cur_sample, config.seed)
        signals = [s for s in signals if s.kind not in ("prediction", "flag_rate")]
        adjusted, _ = _evidently_signals(
            _sample(matched, config.max_sample_rows, config.seed),
            cur_sample,
            policies,
            config,
            frozenset({"prediction"}),
        )
        adjusted += _flag_rate_signals(WindowCounts.of(matched, policies), cur_counts, policies, config)
        for signal in adjusted:
            signal.note = "reference re-weighted to the current modality mix"
        signals += adjusted
    signals += _performance_signals(reference, current, policies, config)
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
