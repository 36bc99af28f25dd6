"""Thresholds and limits of the drift check (`monitoring.drift.compare_windows`): what counts as drift, how many
rows a verdict needs and how many rows a window is read and compared with.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from core.config.fields import ConfigError
from core.config.loading import parse_value, split_override

CALIBRATION_REFERENCE = "reference"  # the label-free estimate calibrates the scores on the reference's labels
CALIBRATION_SERVED = "served"  # ... or takes the served scores as probabilities
DEFAULT_ROW_BUDGET = (
    200_000  # rows a read window keeps (a seeded uniform sample above it; counts use every row)
)


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
        estimate_tolerance: Difference between the label-free performance estimate and the performance that
            arrived labels realize (precision or recall at the served threshold) above which the estimate is
            unreliable...
        estimate_alpha: ...when the difference is also beyond the sampling noise at this level (two-sided).
        estimate_min_count: Flagged rows (for precision) or labeled positives (for recall) a comparison needs,
            and the positives (and negatives) a reference needs to calibrate the scores on.
        estimate_calibration: `reference` (calibrate the scores on the reference's labeled rows, as CBPE does,
            when it has enough) or `served` (use the served scores as probabilities).
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
    estimate_tolerance: float = 0.05
    estimate_alpha: float = 0.001
    estimate_min_count: int = 20
    estimate_calibration: str = CALIBRATION_REFERENCE
    max_sample_rows: int = DEFAULT_ROW_BUDGET
    examples: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        for name in (
            "numeric_threshold",
            "categorical_threshold",
            "flag_rate_change",
            "performance_drop",
            "estimate_tolerance",
        ):
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(f"drift.{name} must be in (0, 1], got {getattr(self, name)}")
        if not 0.5 < self.embedding_auc_threshold < 1:
            raise ConfigError(
                f"drift.embedding_auc_threshold must be in (0.5, 1), got {self.embedding_auc_threshold}"
            )
        for name in ("flag_rate_alpha", "significance_alpha", "estimate_alpha"):
            if not 0 < getattr(self, name) < 1:
                raise ConfigError(f"drift.{name} must be in (0, 1), got {getattr(self, name)}")
        if self.estimate_calibration not in (CALIBRATION_REFERENCE, CALIBRATION_SERVED):
            raise ConfigError(
                f"drift.estimate_calibration must be reference or served, got {self.estimate_calibration!r}"
            )
        for name in ("min_rows", "min_labeled", "estimate_min_count", "max_sample_rows"):
            if getattr(self, name) < 1:
                raise ConfigError(f"drift.{name} must be at least 1, got {getattr(self, name)}")

    def with_overrides(self, overrides: list[str] | tuple[str, ...]) -> DriftConfig:
        """A copy with `--set KEY=VALUE` overrides applied (`KEY` a field name, e.g. `min_rows=100`).

        Raises:
            ConfigError: An item that is not KEY=VALUE with a field as KEY, or a bad value.
        """
        names = {f.name for f in dataclasses.fields(self)}
        expected = "KEY=VALUE with a DriftConfig field as KEY"
        changes: dict[str, Any] = {}
        for item in overrides:
            key, text = split_override(item, expected)
            if key not in names:
                raise ConfigError(f"--set expects {expected}, got {item!r}")
            changes[key] = parse_value(text)
        try:
            return DriftConfig(**{**dataclasses.asdict(self), **changes})
        except (TypeError, ValueError) as error:
            raise ConfigError(str(error)) from None
