"""The run configuration: one typed dataclass per section (data, split, validation, train, evaluation, gate,
export, serving) with defaults, help text and validation, and `RunConfig` holding them, loadable from YAML or JSON.

A configuration travels between pipeline steps as JSON (`RunConfig.to_json()`), so every step sees the
same values. Per-policy numbers are mappings with a `default` key and optional per-policy overrides.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.common.constants import (
    CPU_QUANTIZATION_NONE,
    CPU_QUANTIZATIONS,
    DEFAULT_MODEL_NAME,
    DEFAULT_POLICIES,
    DUPLICATE_KEY_EXACT,
    DUPLICATE_KEYS,
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    MISSING_LABEL_MODES,
    MISSING_LABELS_MASK,
    SEVERITY_CRITICAL,
    SEVERITY_WARNING,
)
from core.config.fields import ConfigError, build_dataclass
from core.config.train import TrainConfig


def per_policy(values: dict[str, float], policy: str) -> float:
    """Returns the value for `policy`, falling back to the mapping's `default` entry."""
    return float(values.get(policy, values["default"]))


def _check_per_policy(name: str, values: dict[str, float], low: float, high: float) -> None:
    if "default" not in values:
        raise ConfigError(f"{name} needs a 'default' entry, got keys {sorted(values)}")
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= float(value) <= high:
            raise ConfigError(f"{name}.{key} must be a number in [{low}, {high}], got {value!r}")


@dataclass
class DataConfig:
    missing_labels: str = field(
        default=MISSING_LABELS_MASK,
        metadata={
            "help": "A null label means 'not annotated for this policy': 'mask' (no loss, no metric for that "
            "row and policy), 'negative' (counted as 0) or 'refuse' (validation fails)."
        },
    )
    shard_rows: int = field(
        default=1024,
        metadata={
            "help": "Rows per shard file ingest writes (shards/part-*.parquet, images as bytes): what training "
            "streams and what deleting an item rewrites."
        },
    )

    def __post_init__(self) -> None:
        if self.missing_labels not in MISSING_LABEL_MODES:
            raise ConfigError(
                f"data.missing_labels must be one of {', '.join(MISSING_LABEL_MODES)}, got {self.missing_labels!r}"
            )
        if isinstance(self.shard_rows, bool) or not isinstance(self.shard_rows, int) or self.shard_rows < 1:
            raise ConfigError(f"data.shard_rows must be a positive integer, got {self.shard_rows!r}")


@dataclass
class SplitConfig:
    validation_fraction: float = field(default=0.15, metadata={"help": "Share of items for validation."})
    test_fraction: float = field(default=0.2, metadata={"help": "Share of items for the test split."})
    seed: int = field(default=13, metadata={"help": "Seed of the stratified split."})
    deduplicate: bool = field(
        default=True,
        metadata={
            "help": "Collapse copies of an item before splitting (labels merged); with a split fixed in the "
            "manifest, validation/test copies of a train item are dropped. false: copies across fixed splits "
            "fail validation (no_split_leakage)."
        },
    )
    duplicate_key: str = field(
        default=DUPLICATE_KEY_EXACT,
        metadata={
            "help": "What counts as a copy: 'exact' (same text and image bytes) or 'normalized' (same text up to "
            "case, whitespace, URLs and digits, and the same image)."
        },
    )
    group_column: str = field(
        default="group",
        metadata={
            "help": "Manifest column naming an item's group (author, campaign, template): a group is never "
            "split across train/validation/test. Absent column: no groups."
        },
    )

    def __post_init__(self) -> None:
        for name in ("validation_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 < value < 0.5:
                raise ConfigError(f"split.{name} must be in (0, 0.5), got {value}")
        if self.duplicate_key not in DUPLICATE_KEYS:
            raise ConfigError(
                f"split.duplicate_key must be one of {', '.join(DUPLICATE_KEYS)}, got {self.duplicate_key!r}"
            )
        if not self.group_column.strip():
            raise ConfigError("split.group_column must name a column")


def default_severities() -> dict[str, str]:
    """Severity of every check a run configuration may change; the other checks are structural (always
    critical: ids, labels, modalities, images, text size, split values and leakage, per-split label counts)."""
    return {
        "positive_rate": SEVERITY_WARNING,
        "text_length": SEVERITY_WARNING,
        "language_present": SEVERITY_WARNING,
        "duplicate_items": SEVERITY_WARNING,
        "label_conflicts": SEVERITY_WARNING,
        "unannotated_rows": SEVERITY_WARNING,
    }


@dataclass
class ValidationConfig:
    min_rows: int = field(default=30, metadata={"help": "Fewest rows a dataset may have."})
    text_min_chars: int = field(default=1, metadata={"help": "Shortest non-null text, in characters."})
    text_max_chars: int = field(
        default=5000,
        metadata={
            "help": "Longer texts get a warning (text_length); the model reads only its first "
            "train.max_text_length tokens, in training and in serving alike."
        },
    )
    text_max_bytes: int = field(
        default=1_000_000,
        metadata={
            "help": "Largest text in UTF-8 bytes: bigger ones threaten memory and are refused, in validation "
            "(text_size) and by the served model."
        },
    )
    image_max_pixels: int = field(
        default=MAX_IMAGE_PIXELS,
        metadata={"help": "Largest width*height accepted; bigger images are rejected before decoding."},
    )
    image_min_side: int = field(default=8, metadata={"help": "Smallest image width or height, in pixels."})
    image_max_bytes: int = field(
        default=MAX_IMAGE_BYTES,
        metadata={"help": "Largest encoded image file, checked wherever an image file is read."},
    )
    positive_rate_min: float = field(
        default=0.005, metadata={"help": "Lowest positive rate per policy, over its annotated rows."}
    )
    positive_rate_max: float = field(
        default=0.6, metadata={"help": "Highest positive rate per policy, over its annotated rows."}
    )
    min_split_annotated: int = field(
        default=10,
        metadata={"help": "Fewest rows annotated for each policy in the validation and in the test split."},
    )
    min_split_positives: int = field(
        default=3,
        metadata={
            "help": "Fewest positives, and fewest negatives, per policy in the validation and in the test split "
            "(thresholds and test metrics need both classes)."
        },
    )
    severity: dict[str, str] = field(
        default_factory=default_severities,
        metadata={
            "help": "critical or warning, per statistical check (a failed critical check stops the run); "
            "structural checks are always critical."
        },
    )

    def __post_init__(self) -> None:
        if self.min_rows < 1:
            raise ConfigError(f"validation.min_rows must be >= 1, got {self.min_rows}")
        if not 0 <= self.positive_rate_min < self.positive_rate_max <= 1:
            raise ConfigError("validation.positive_rate_min must be below positive_rate_max, both in [0, 1]")
        if self.text_min_chars > self.text_max_chars:
            raise ConfigError("validation.text_min_chars must not exceed text_max_chars")
        if self.text_max_bytes < 1:
            raise ConfigError(f"validation.text_max_bytes must be >= 1, got {self.text_max_bytes}")
        if self.min_split_annotated < 1 or self.min_split_positives < 1:
            raise ConfigError(
                "validation.min_split_annotated and validation.min_split_positives must be >= 1"
            )
        adjustable = default_severities()
        unknown = sorted(set(self.severity) - set(adjustable))
        if unknown:
            raise ConfigError(
                f"validation.severity cannot change {unknown}: structural checks are always critical; "
                f"adjustable checks: {', '.join(adjustable)}"
            )
        bad = {k: v for k, v in self.severity.items() if v not in (SEVERITY_CRITICAL, SEVERITY_WARNING)}
        if bad:
            raise ConfigError(f"validation.severity values must be critical or warning, got {bad}")
        self.severity = {**adjustable, **self.severity}

    def severity_overrides(self) -> dict[str, str]:
        """The checks whose severity differs from the default, with their configured severity."""
        return {k: v for k, v in self.severity.items() if default_severities().get(k) != v}


@dataclass
class EvaluationConfig:
    target_precision: dict[str, float] = field(
        default_factory=lambda: {"default": 0.9},
        metadata={"help": "Precision each policy's operating threshold must reach on validation."},
    )
    bootstrap_samples: int = field(
        default=200, metadata={"help": "Resamples for ROC-AUC confidence intervals."}
    )
    calibration_bins: int = field(default=10, metadata={"help": "Bins of the expected calibration error."})
    min_slice_rows: int = field(default=20, metadata={"help": "Smallest slice that gets metrics reported."})
    slice_columns: list[str] = field(
        default_factory=lambda: ["target_group"],
        metadata={
            "help": "Dataset columns the card also slices by, beside modality and language (e.g. the group a "
            "hateful item targets: ROC-AUC and false-positive rate at the threshold per value)."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of the bootstrap."})

    def __post_init__(self) -> None:
        _check_per_policy("evaluation.target_precision", self.target_precision, 0.0, 1.0)
        if self.bootstrap_samples < 10:
            raise ConfigError("evaluation.bootstrap_samples must be >= 10")
        if self.calibration_bins < 1 or self.min_slice_rows < 1:
            raise ConfigError("evaluation.calibration_bins and evaluation.min_slice_rows must be >= 1")
        bad = [c for c in self.slice_columns if not isinstance(c, str) or not c.strip()]
        if bad:
            raise ConfigError(f"evaluation.slice_columns must name columns, got {self.slice_columns!r}")


@dataclass
class GateConfig:
    min_roc_auc: dict[str, float] = field(
        default_factory=lambda: {"default": 0.85},
        metadata={"help": "Absolute ROC-AUC floor per policy on the test split."},
    )
    min_pr_auc: dict[str, float] = field(
        default_factory=lambda: {"default": 0.0},
        metadata={"help": "Absolute PR-AUC floor per policy on the test split."},
    )
    regression_tolerance: float = field(
        default=0.01,
        metadata={"help": "Largest ROC-AUC drop against the champion, per policy, that still passes."},
    )

    def __post_init__(self) -> None:
        _check_per_policy("gate.min_roc_auc", self.min_roc_auc, 0.0, 1.0)
        _check_per_policy("gate.min_pr_auc", self.min_pr_auc, 0.0, 1.0)
        if not 0.0 <= self.regression_tolerance <= 0.5:
            raise ConfigError("gate.regression_tolerance must be in [0, 0.5]")


@dataclass
class ExportConfig:
    opset: int = field(
        default=17,
        metadata={"help": "ONNX opset; 17 is read by the onnxruntime of every Triton release since 22.x."},
    )
    parity_tolerance: float = field(
        default=1e-4,
        metadata={"help": "Largest absolute probability difference allowed between PyTorch and ONNX/Triton."},
    )
    golden_items: int = field(
        default=24, metadata={"help": "Test-split items in the golden batch (text-only, image-only, both)."}
    )
    parity_batch_sizes: list[int] = field(
        default_factory=lambda: [1, 4, 16],
        metadata={"help": "Batch sizes at which PyTorch and onnxruntime are compared."},
    )
    cpu_quantization: str = field(
        default=CPU_QUANTIZATION_NONE,
        metadata={
            "help": "'int8' adds a dynamically quantized classifier (int8 MatMul weights) for the CPU config, "
            "beside the fp32 one that GPU hosts serve; refused when it disagrees with fp32 past the int8_* "
            "tolerances. 'none': CPU hosts serve fp32."
        },
    )
    int8_min_agreement: float = field(
        default=0.995,
        metadata={"help": "Least share of test-split decisions per policy on which int8 and fp32 agree."},
    )
    int8_min_language_agreement: float = field(
        default=0.98,
        metadata={
            "help": "Least int8-vs-fp32 decision agreement per policy within each language of the test split "
            "that has at least evaluation.min_slice_rows rows, and enough that one changed decision cannot "
            "fail it alone (50 at 0.98): catches a language that quantization breaks."
        },
    )
    int8_max_roc_auc_drop: float = field(
        default=0.003,
        metadata={"help": "Largest test-split ROC-AUC the int8 classifier may lose to fp32, per policy."},
    )

    def __post_init__(self) -> None:
        if not 11 <= self.opset <= 21:
            raise ConfigError(f"export.opset must be in [11, 21], got {self.opset}")
        if not 0.0 < self.parity_tolerance <= 0.1:
            raise ConfigError(f"export.parity_tolerance must be in (0, 0.1], got {self.parity_tolerance}")
        if self.golden_items < 3:
            raise ConfigError("export.golden_items must be at least 3 (one per modality)")
        if not self.parity_batch_sizes or any(b < 1 for b in self.parity_batch_sizes):
            raise ConfigError(f"export.parity_batch_sizes must be positive, got {self.parity_batch_sizes}")
        if self.cpu_quantization not in CPU_QUANTIZATIONS:
            raise ConfigError(
                f"export.cpu_quantization must be one of {list(CPU_QUANTIZATIONS)}, got {self.cpu_quantization!r}"
            )
        for name in ("int8_min_agreement", "int8_min_language_agreement"):
            if not 0.5 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"export.{name} must be in [0.5, 1], got {getattr(self, name)}")
        if not 0.0 <= self.int8_max_roc_auc_drop <= 0.5:
            raise ConfigError(
                f"export.int8_max_roc_auc_drop must be in [0, 0.5], got {self.int8_max_roc_auc_drop}"
            )


@dataclass
class ServingConfig:
    max_batch_size: int = field(default=64, metadata={"help": "Triton max_batch_size of every model."})
    preferred_batch_sizes: list[int] = field(
        default_factory=lambda: [8, 16, 32],
        metadata={"help": "Dynamic batching preferred batch sizes of the classifier."},
    )
    max_queue_delay_microseconds: int = field(
        default=2000, metadata={"help": "How long the dynamic batcher waits to fill a batch."}
    )
    gpu_instances: int = field(default=1, metadata={"help": "Classifier instances per GPU."})
    cpu_instances: int = field(default=1, metadata={"help": "Classifier instances in the CPU config."})
    cpu_threads: int = field(
        default=0,
        metadata={
            "help": "onnxruntime intra-op threads of each CPU classifier instance, written into "
            "configs/cpu.pbtxt; 0: the exporting host's cores divided by cpu_instances."
        },
    )
    python_instances: int = field(
        default=2, metadata={"help": "Instances of the preprocess and postprocess python models."}
    )
    tensorrt_fp16: bool = field(
        default=False,
        metadata={"help": "Opt in to onnxruntime's TensorRT execution accelerator in FP16 on GPU."},
    )

    def __post_init__(self) -> None:
        if not 1 <= self.max_batch_size <= 1024:
            raise ConfigError(f"serving.max_batch_size must be in [1, 1024], got {self.max_batch_size}")
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if bad:
            raise ConfigError(f"serving.preferred_batch_sizes {bad} must be in [1, max_batch_size]")
        if self.max_queue_delay_microseconds < 0:
            raise ConfigError("serving.max_queue_delay_microseconds must be >= 0")
        for name in ("gpu_instances", "cpu_instances", "python_instances"):
            if not 1 <= getattr(self, name) <= 64:
                raise ConfigError(f"serving.{name} must be in [1, 64]")
        if not 0 <= self.cpu_threads <= 256:
            raise ConfigError(f"serving.cpu_threads must be in [0, 256], got {self.cpu_threads}")

    def cpu_intra_op_threads(self) -> int:
        """The intra-op threads of one CPU classifier instance: `cpu_threads`, or this host's cores shared out."""
        import os

        return self.cpu_threads or max(1, (os.cpu_count() or 1) // self.cpu_instances)


@dataclass
class RunConfig:
    policies: list[str] = field(
        default_factory=lambda: list(DEFAULT_POLICIES),
        metadata={"help": "Policy label columns, in the model's output order."},
    )
    model_name: str = field(default=DEFAULT_MODEL_NAME, metadata={"help": "MLflow registered-model name."})
    data: DataConfig = field(default_factory=DataConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)

    def __post_init__(self) -> None:
        if not self.policies:
            raise ConfigError("policies must name at least one policy")
        bad = [p for p in self.policies if not p.isidentifier() or p.lower() != p]
        if bad:
            raise ConfigError(f"policy names must be lower-case identifiers, got {bad}")
        if len(set(self.policies)) != len(self.policies):
            raise ConfigError(f"policies must be unique, got {self.policies}")
        per_policy_settings = {
            "evaluation.target_precision": self.evaluation.target_precision,
            "gate.min_roc_auc": self.gate.min_roc_auc,
            "gate.min_pr_auc": self.gate.min_pr_auc,
        }
        for name, values in per_policy_settings.items():
            unknown = sorted(set(values) - {"default", *self.policies})
            if unknown:
                raise ConfigError(
                    f"{name} names {unknown}, which are not policies of this run {self.policies}"
                )

    # Loading and saving -------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Builds a config from a (possibly partial) mapping; unknown keys are errors."""
        return build_dataclass(cls, data or {}, "")

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        import yaml

        text = Path(path).read_text(encoding="utf-8")
        return cls.from_dict(yaml.safe_load(text) or {})

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        return cls.from_dict(json.loads(text) if text.strip() else {})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def with_overrides(self, **changes: Any) -> RunConfig:
        """Returns a copy with dotted-key overrides applied, e.g. `{"train.max_steps": 1}`."""
        data = self.to_dict()
        for dotted, value in changes.items():
            target: Any = data
            section: Any = self
            *parents, leaf = dotted.split(".")
            for parent in parents:
                if not isinstance(target, dict) or not isinstance(target.get(parent), dict):
                    raise ConfigError(f"unknown configuration key {dotted!r}")
                target = target[parent]
                section = getattr(section, parent, None)
            # A mapping field (per-policy numbers, severities) takes any key here; its own validation judges it.
            is_mapping_entry = bool(parents) and isinstance(section, dict)
            if leaf not in target and not is_mapping_entry:
                raise ConfigError(f"unknown configuration key {dotted!r}")
            target[leaf] = value
        return RunConfig.from_dict(data)
