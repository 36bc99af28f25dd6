"""The retrain rules: which drift signals start a retraining run, and the guardrails around it.

The rules are a typed dataclass with defaults, help text and validation, loadable from YAML
(`configs/retrain_rules.yaml` documents every key). `monitoring/trigger.py` applies them to a drift summary.
("Policy" in this project means a content policy, a label such as `hate`; these rules were once called the
"retrain policy", a spelling the CLI still accepts with a deprecation message.)
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.common.constants import DEFAULT_MODEL_NAME, LABEL_SOURCE_DELAYED, LABEL_SOURCE_REVIEW
from core.config.fields import ConfigError, build_dataclass, coerce_field, known_fields, read_yaml_file
from core.config.loading import load_run_config


@dataclass(frozen=True)
class SignalRule:
    """One kind of drift signal that counts towards firing.

    Without `min_severity` and `min_score`, a signal counts when the drift check marked it drifted
    (score above its own threshold). With either, only those bounds decide (both must hold when both are set).
    """

    signal: str = field(
        metadata={"help": "Signal name or glob pattern, e.g. 'text_embedding' or 'score_*'."},
    )
    min_severity: float | None = field(
        default=None,
        metadata={"help": "Count the signal when score/threshold >= this (1.0 = at its drift threshold)."},
    )
    min_score: float | None = field(
        default=None, metadata={"help": "Count the signal when its raw drift score >= this."}
    )

    def __post_init__(self) -> None:
        if not isinstance(self.signal, str) or not self.signal.strip():
            raise ConfigError(
                f"signals[].signal must be a non-empty signal name or pattern, got {self.signal!r}"
            )
        for name in ("min_severity", "min_score"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"signals[{self.signal}].{name} must be a finite number, got {value!r}")
            if value < 0:
                raise ConfigError(f"signals[{self.signal}].{name} must be >= 0, got {value}")

    def matches(self, signal: dict[str, Any]) -> bool:
        """Whether one signal of a drift summary (`name`, `score`, `severity`, `drifted`) counts under this rule."""
        if not fnmatch.fnmatchcase(str(signal.get("name", "")), self.signal):
            return False
        if self.min_severity is None and self.min_score is None:
            return bool(signal.get("drifted"))
        if self.min_severity is not None and not _at_least(signal.get("severity"), self.min_severity):
            return False
        return self.min_score is None or _at_least(signal.get("score"), self.min_score)

    def describe(self) -> str:
        """The rule in words, e.g. `score_* drifted` or `text_embedding severity >= 2`."""
        bounds = []
        if self.min_severity is not None:
            bounds.append(f"severity >= {self.min_severity:g}")
        if self.min_score is not None:
            bounds.append(f"score >= {self.min_score:g}")
        return f"{self.signal} {' and '.join(bounds) or 'drifted'}"


def _at_least(value: Any, bound: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= bound


def default_signal_rules() -> list[SignalRule]:
    """Model-facing signals: what the model sees (embeddings), what it answers (scores, flag rates), and how well
    it does where labels arrived. Descriptor drift (text length, language, image size) alone is reported by the
    drift check but does not retrain."""
    return [
        SignalRule("text_embedding"),
        SignalRule("image_embedding"),
        SignalRule("score_*"),
        SignalRule("flag_rate_*"),
        SignalRule("performance_*"),
    ]


DEFAULT_TRUSTED_LABEL_SOURCES = (LABEL_SOURCE_DELAYED, LABEL_SOURCE_REVIEW)


@dataclass
class RetrainingDataRules:
    """What a retraining run learns from when it keeps what the model knew: the champion's training data (found
    through its registry lineage) plus the newly labeled items of the window (`monitoring.retraining_data`)."""

    content_store_uri: str = field(
        default="",
        metadata={
            "help": "Content store holding the text and image bytes of logged items (a folder for the local "
            "store); set it to build the retraining dataset from the champion's data plus new labels. '' = "
            "not built (training_data_uri, else the pipeline's default dataset)."
        },
    )
    labels_uri: str = field(
        default="",
        metadata={
            "help": "Log root whose labels/ holds the delayed labels and review imports; '' = the current "
            "window's log root."
        },
    )
    trusted_label_sources: list[str] = field(
        default_factory=lambda: list(DEFAULT_TRUSTED_LABEL_SOURCES),
        metadata={
            "help": "Label `source` values that may enter training; labels from any other are dropped."
        },
    )
    max_new_share: float = field(
        default=0.5,
        metadata={
            "help": "Largest share of the retraining dataset the new rows may make up (a cap against label "
            "flooding); extra new rows are left out, chosen at random."
        },
    )
    max_gold_disagreement: float = field(
        default=0.2,
        metadata={
            "help": "Review-import labels of a batch whose gold items disagreed with their known labels more "
            "than this (share of gold answers) are left out, and so are review labels without a gold check."
        },
    )
    output_dir: str = field(
        default="",
        metadata={
            "help": "Where retraining datasets are written; '' = $TNS_HOME/monitoring/retraining-data."
        },
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.max_new_share <= 1.0:
            raise ConfigError(f"retraining_data.max_new_share must be in (0, 1], got {self.max_new_share}")
        if not 0.0 <= self.max_gold_disagreement <= 1.0:
            raise ConfigError(
                f"retraining_data.max_gold_disagreement must be in [0, 1], got {self.max_gold_disagreement}"
            )
        sources = self.trusted_label_sources
        if not isinstance(sources, list) or not all(isinstance(s, str) and s.strip() for s in sources):
            raise ConfigError(
                f"retraining_data.trusted_label_sources must be a list of source names, got {sources!r}"
            )

    @property
    def enabled(self) -> bool:
        """Whether the retraining dataset is built (a content store is named)."""
        return bool(self.content_store_uri)


@dataclass
class RetrainRules:
    """When a drift check may start a retraining run, and what that run gets."""

    model_name: str = field(
        default=DEFAULT_MODEL_NAME,
        metadata={
            "help": "Registered model these rules retrain; a drift summary of another model is refused."
        },
    )
    signals: list[SignalRule] = field(
        default_factory=default_signal_rules,
        metadata={"help": "Signals that count, each a name or glob pattern with optional bounds."},
    )
    min_signals: int = field(default=1, metadata={"help": "Distinct matching signals needed to fire."})
    min_rows: int = field(
        default=500,
        metadata={"help": "Fewest rows the current window must hold; smaller windows never fire."},
    )
    cooldown_hours: float = field(
        default=24.0,
        metadata={"help": "Hours after a fired run during which no other run starts for the model."},
    )
    max_in_flight: int = field(
        default=1, metadata={"help": "Retraining runs of the model that may be unfinished at once."}
    )
    max_run_hours: float = field(
        default=48.0,
        metadata={
            "help": "A fired run older than this counts as finished even when its state cannot be read."
        },
    )
    dry_run: bool = field(default=False, metadata={"help": "Record what would be submitted, submit nothing."})
    training_data_uri: str = field(
        default="",
        metadata={
            "help": "Dataset of the retraining run, the only place its data comes from (nothing found beside the "
            "logs is used); '' = the training pipeline's default."
        },
    )
    retraining_data: RetrainingDataRules = field(
        default_factory=RetrainingDataRules,
        metadata={
            "help": "The champion's training data plus new labels (used when training_data_uri is '')."
        },
    )
    submit_retries: int = field(
        default=3,
        metadata={
            "help": "Retries of a submission when the Kubeflow host does not answer (--retries overrides)."
        },
    )
    submit_backoff_s: float = field(
        default=1.0,
        metadata={"help": "Seconds before the first retry, doubled each time (--backoff overrides)."},
    )
    config_overrides: list[str] = field(
        default_factory=list,
        metadata={"help": "`--set KEY=VALUE` overrides of the retraining run's configuration."},
    )

    def __post_init__(self) -> None:
        if not isinstance(self.model_name, str) or not self.model_name.strip():
            raise ConfigError("model_name must be a non-empty registered-model name")
        if not self.signals:
            raise ConfigError("signals must list at least one signal rule")
        if self.min_signals < 1:
            raise ConfigError(f"min_signals must be >= 1, got {self.min_signals}")
        if self.min_rows < 1:
            raise ConfigError(f"min_rows must be >= 1, got {self.min_rows}")
        if not 0.0 <= self.cooldown_hours <= 24 * 365:  # also rejects NaN
            raise ConfigError(f"cooldown_hours must be in [0, 8760], got {self.cooldown_hours}")
        if self.max_in_flight < 1:
            raise ConfigError(f"max_in_flight must be >= 1, got {self.max_in_flight}")
        if not 0.0 < self.max_run_hours <= 24 * 365:
            raise ConfigError(f"max_run_hours must be in (0, 8760], got {self.max_run_hours}")
        if self.submit_retries < 0 or not 0.0 <= self.submit_backoff_s <= 600:
            raise ConfigError(
                f"submit_retries must be >= 0 and submit_backoff_s in [0, 600], got {self.submit_retries} "
                f"and {self.submit_backoff_s}"
            )
        self.run_config()  # an override naming an unknown key or a bad value fails here, not at retrain time

    # What the rules decide ------------------------------------------------------------------------------
    def matching_signals(self, signals: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The summary's signals that count, each with the first rule that matched it (`rule`), in input order."""
        matched = []
        for signal in signals:
            rule = next((r for r in self.signals if r.matches(signal)), None)
            if rule is not None:
                matched.append({**signal, "rule": rule.describe()})
        return matched

    def run_config(self) -> Any:
        """The retraining run's configuration: defaults with `config_overrides` applied (a `RunConfig`)."""
        for index, item in enumerate(self.config_overrides):
            if not isinstance(item, str) or "=" not in item:
                raise ConfigError(f"config_overrides[{index}] must be 'KEY=VALUE', got {item!r}")
        try:
            return load_run_config(overrides=list(self.config_overrides))
        except ConfigError as error:
            raise ConfigError(f"config_overrides: {error}") from None

    # Loading and saving -----------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RetrainRules:
        """Builds the rules from a (possibly partial) mapping; unknown keys and wrong types are errors."""
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise ConfigError(f"retrain rules must be a mapping, got {type(data).__name__}")
        fields = known_fields(cls, data, "retrain rules")
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            if name == "signals":
                kwargs[name] = _signal_rules(value)
            elif name == "retraining_data":
                kwargs[name] = build_dataclass(RetrainingDataRules, value, "retraining_data.")
            else:
                kwargs[name] = coerce_field(name, fields[name], value)
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, path: str | Path) -> RetrainRules:
        """Reads a retrain rules file (an empty file gives the defaults)."""
        return cls.from_dict(read_yaml_file(path, "retrain rules"))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["signals"] = [
            {k: v for k, v in dataclasses.asdict(rule).items() if v is not None} for rule in self.signals
        ]
        return data


def _signal_rules(value: Any) -> list[SignalRule]:
    if not isinstance(value, list):
        raise ConfigError(f"signals must be a list of rules, got {value!r}")
    names = {f.name for f in dataclasses.fields(SignalRule)}
    rules = []
    for index, item in enumerate(value):
        if isinstance(item, str):  # shorthand: a bare name or pattern counts when drifted
            item = {"signal": item}
        if not isinstance(item, dict):
            raise ConfigError(f"signals[{index}] must be a mapping or a signal name, got {item!r}")
        unknown = sorted(set(item) - names)
        if unknown:
            raise ConfigError(
                f"unknown key(s) {[f'signals[{index}].{k}' for k in unknown]}; known: {sorted(names)}"
            )
        if "signal" not in item:
            raise ConfigError(f"signals[{index}] needs a 'signal' (name or glob pattern)")
        try:
            rules.append(SignalRule(**item))
        except ConfigError as error:
            raise ConfigError(f"signals[{index}]: {error}") from None
    return rules
