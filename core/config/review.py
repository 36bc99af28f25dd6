"""The review rules: how `tns review sample` splits a labeling budget between its strata.

A typed dataclass with defaults, help text and validation, loadable from YAML (`configs/review_rules.yaml`
documents every key). `monitoring/review.py` applies it to a window of inference logs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config.fields import ConfigError, coerce_field, known_fields, read_yaml_file

SHARE_FIELDS = ("gold_share", "uncertainty_share", "drift_share")
UNCERTAINTY_THRESHOLD = (
    "threshold"  # decision uncertainty: nearest the served threshold (where the flag flips)
)
UNCERTAINTY_LABEL = "label"  # label uncertainty: nearest a calibrated probability of 0.5
UNCERTAINTY_CENTERS = (UNCERTAINTY_THRESHOLD, UNCERTAINTY_LABEL)


@dataclass(frozen=True)
class ReviewRules:
    """Shares of a review batch; the uniform random stratum gets what the other strata leave."""

    gold_share: float = field(
        default=0.05,
        metadata={"help": "Share of the budget spent on gold items of known label (with --gold)."},
    )
    uncertainty_share: float = field(
        default=0.45,
        metadata={"help": "Share spent on items whose score is nearest a policy's served threshold."},
    )
    drift_share: float = field(
        default=0.2,
        metadata={
            "help": "Share spent on items of the segments a drift summary named (with --drift-summary)."
        },
    )
    uncertainty_around: str = field(
        default=UNCERTAINTY_THRESHOLD,
        metadata={
            "help": "'threshold': items nearest each policy's served threshold (the decisions closest to "
            "flipping); 'label': items nearest a calibrated probability of 0.5 (the labels least certain)."
        },
    )
    policy_quotas: dict[str, float] = field(
        default_factory=dict,
        metadata={
            "help": "Relative weight of each policy in the uncertainty stratum (default: equal, so the rarest "
            "policy gets as many items as the most frequent)."
        },
    )
    max_image_bytes: int = field(
        default=1_000_000,
        metadata={
            "help": "Largest image embedded in a task as a data URI; larger ones are replaced by a note."
        },
    )

    def __post_init__(self) -> None:
        for name in SHARE_FIELDS:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:  # also rejects NaN
                raise ConfigError(f"{name} must be in [0, 1], got {value}")
        if self.uniform_share <= 0.0:
            raise ConfigError(
                f"gold_share + uncertainty_share + drift_share must leave a uniform share (> 0): they sum to "
                f"{sum(getattr(self, n) for n in SHARE_FIELDS):g}; the uniform random items are what makes "
                "prevalence and performance estimates unbiased"
            )
        if self.uncertainty_around not in UNCERTAINTY_CENTERS:
            raise ConfigError(
                f"uncertainty_around must be one of {list(UNCERTAINTY_CENTERS)}, got {self.uncertainty_around!r}"
            )
        for policy, weight in self.policy_quotas.items():
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
                raise ConfigError(f"policy_quotas.{policy} must be a number, got {weight!r}")
            if weight < 0:
                raise ConfigError(f"policy_quotas.{policy} must be >= 0, got {weight}")
        if self.max_image_bytes < 1:
            raise ConfigError(f"max_image_bytes must be at least 1, got {self.max_image_bytes}")

    @property
    def uniform_share(self) -> float:
        """The share left to the uniform random stratum."""
        return round(1.0 - sum(getattr(self, name) for name in SHARE_FIELDS), 12)

    def quota_weight(self, policy: str) -> float:
        """A policy's weight in the uncertainty stratum (1.0 unless `policy_quotas` names it)."""
        return float(self.policy_quotas.get(policy, 1.0))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ReviewRules:
        """Builds the rules from a (possibly partial) mapping; unknown keys and wrong types are errors."""
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise ConfigError(f"review rules must be a mapping, got {type(data).__name__}")
        fields = known_fields(cls, data, "review rules")
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            if name == "policy_quotas":
                if not isinstance(value, dict):
                    raise ConfigError(f"policy_quotas must be a mapping of policy to weight, got {value!r}")
                kwargs[name] = {str(policy): weight for policy, weight in value.items()}
            else:
                kwargs[name] = coerce_field(name, fields[name], value)
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, path: str | Path) -> ReviewRules:
        """Reads a review rules file (an empty file gives the defaults)."""
        return cls.from_dict(read_yaml_file(path, "review rules"))

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "uniform_share": self.uniform_share}
