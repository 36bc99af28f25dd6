"""The drift signals: what a signal is and the producers that compare two windows, one kind of quantity each.

Every signal has a score, the threshold it is judged against and a severity (how many thresholds away it is,
so that signals of different kinds can be ranked together):

* **text** and **image** descriptors (length, words, non-letter and upper-case shares, URLs, emoji, language;
  width, height, encoded size, format) through Evidently's `ValueDrift` (normed Wasserstein distance for numbers,
  Jensen-Shannon distance for categories), each over the rows that have that modality (`evidently_signals`);
* **modality mix** (`text_present`, `image_present`) the same way;
* **embeddings** (`text_embedding`, `image_embedding`): Evidently's model-based embedding drift (a classifier
  tries to tell current from reference rows; ROC-AUC above the threshold is drift) (`embedding_signals`);
* **prediction drift** `score_<policy>`: `ValueDrift` of each policy's score (`evidently_signals`);
* **flagged rate** `flag_rate_<policy>`: the change of the share flagged, significant by a two-proportion z-test
  (`flag_rate_signals`, from the exact `WindowCounts`);
* **performance** `performance_<policy>`: where delayed labels exist in both windows, the drop of ROC-AUC
  (`performance_signals`).

`monitoring.drift.compare_windows` runs them all and ranks the signals.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from core.config.drift import DriftConfig
from monitoring.log_records import flag_counts
from monitoring.schema import (
    FLAG_PREFIX,
    IMAGE_EMBEDDING_PREFIX,
    IMAGE_NUMERIC_COLUMNS,
    LABEL_PREFIX,
    SCORE_PREFIX,
    TEXT_EMBEDDING_PREFIX,
    TEXT_NUMERIC_COLUMNS,
    embedding_columns,
)

GROUP_TEXT = "text"
GROUP_IMAGE = "image"
GROUP_MODALITY = "modality"
SEVERITY_CAP = 50.0  # a distance against a constant reference is astronomically large; rank it as "very"


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
        return {key: jsonable(value) for key, value in asdict(self).items()}


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else round(value, 6)
    return value


def _severity(score: float, threshold: float, baseline: float = 0.0) -> float:
    if not math.isfinite(score):
        return SEVERITY_CAP
    return float(min(max(score - baseline, 0.0) / (threshold - baseline), SEVERITY_CAP))


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


def evidently_signals(
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
def embedding_signals(reference, current, config: DriftConfig) -> list[Signal]:
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


def mix_matched(reference, current, seed: int):
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
def flag_rate_signals(
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


def performance_signals(reference, current, policies: list[str], config: DriftConfig) -> list[Signal]:
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
