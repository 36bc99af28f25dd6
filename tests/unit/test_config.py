"""Run configuration: defaults, YAML/JSON round trips, unknown keys, types, per-policy maps, overrides, ranges."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from core.common.constants import DEFAULT_MODEL_NAME, DEFAULT_POLICIES
from core.config.fields import ConfigError
from core.config.run import (
    EvaluationConfig,
    GateConfig,
    RunConfig,
    SplitConfig,
    TrainConfig,
    ValidationConfig,
    per_policy,
)


def _nested(dotted: str, value) -> dict:
    """{"a.b": v} -> {"a": {"b": v}}."""
    *parents, leaf = dotted.split(".")
    data: dict = {leaf: value}
    for parent in reversed(parents):
        data = {parent: data}
    return data


# Defaults -------------------------------------------------------------------------------------------------
def test_defaults_are_valid_and_match_the_empty_mapping():
    config = RunConfig()
    assert config.policies == list(DEFAULT_POLICIES)
    assert config.model_name == DEFAULT_MODEL_NAME
    assert RunConfig.from_dict({}) == config
    assert RunConfig.from_dict(None) == config  # type: ignore[arg-type]
    assert RunConfig.from_json("") == config
    assert RunConfig.from_json("  \n") == config
    assert RunConfig.from_json("{}") == config
    # Every section default is valid on its own too.
    for section in (SplitConfig, ValidationConfig, TrainConfig, EvaluationConfig, GateConfig):
        section()


def test_every_field_has_help_text():
    for section in (SplitConfig, ValidationConfig, TrainConfig, EvaluationConfig, GateConfig):
        for spec in dataclasses.fields(section):
            assert spec.metadata.get("help"), f"{section.__name__}.{spec.name} has no help text"


def test_default_policies_are_a_fresh_list_per_instance():
    first, second = RunConfig(), RunConfig()
    first.policies.append("extra")
    assert second.policies == list(DEFAULT_POLICIES)


# Round trips ----------------------------------------------------------------------------------------------
def _custom_config() -> RunConfig:
    return RunConfig.from_dict(
        {
            "policies": ["hate", "spam"],
            "model_name": "my-model",
            "split": {"validation_fraction": 0.1, "test_fraction": 0.25, "seed": 3},
            "validation": {"min_rows": 10, "positive_rate_max": 0.4},
            "train": {"epochs": 3, "max_steps": 5, "learning_rate": 0.01, "freeze_text_encoder": False},
            "evaluation": {"target_precision": {"default": 0.8, "spam": 0.95}, "bootstrap_samples": 20},
            "gate": {"min_roc_auc": {"default": 0.7, "hate": 0.75}, "regression_tolerance": 0.02},
        }
    )


def test_yaml_round_trip(tmp_path: Path):
    config = _custom_config()
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()), encoding="utf-8")
    loaded = RunConfig.from_yaml(path)
    assert loaded == config
    assert loaded.evaluation.target_precision == {"default": 0.8, "spam": 0.95}
    assert loaded.train.freeze_text_encoder is False
    assert loaded != RunConfig()


def test_partial_yaml_keeps_other_defaults(tmp_path: Path):
    path = tmp_path / "partial.yaml"
    path.write_text("train:\n  epochs: 2\npolicies: hate, spam\n", encoding="utf-8")
    loaded = RunConfig.from_yaml(path)
    assert loaded.train.epochs == 2
    assert loaded.policies == ["hate", "spam"]
    assert loaded.train.batch_size == TrainConfig().batch_size
    assert loaded.split == SplitConfig()


def test_empty_yaml_is_the_default(tmp_path: Path):
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    assert RunConfig.from_yaml(path) == RunConfig()


def test_json_round_trip_is_stable():
    config = _custom_config()
    text = config.to_json()
    assert RunConfig.from_json(text) == config
    assert RunConfig.from_json(text).to_json() == text
    assert json.loads(text)["train"]["max_steps"] == 5


def test_int_accepted_for_float_fields_and_stored_as_float():
    config = RunConfig.from_dict({"train": {"learning_rate": 1, "dropout": 0}})
    assert config.train.learning_rate == 1.0
    assert isinstance(config.train.learning_rate, float)
    assert isinstance(config.train.dropout, float)


# Unknown keys ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"trian": {"epochs": 1}}, "trian"),
        ({"train": {"epoch": 1}}, "train.epoch"),
        ({"gate": {"min_auc": {"default": 0.5}}}, "gate.min_auc"),
        ({"split": {"seed": 1, "shuffle": True}}, "split.shuffle"),
    ],
)
def test_unknown_keys_are_rejected_with_the_key_named(data, named):
    with pytest.raises(ConfigError, match="unknown configuration key") as caught:
        RunConfig.from_dict(data)
    assert named in str(caught.value)


def test_unknown_yaml_key_is_rejected(tmp_path: Path):
    path = tmp_path / "typo.yaml"
    path.write_text("train:\n  epochz: 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"train\.epochz"):
        RunConfig.from_yaml(path)


def test_section_that_is_not_a_mapping_is_rejected():
    with pytest.raises(ConfigError, match="train.*must be a mapping"):
        RunConfig.from_dict({"train": 3})
    with pytest.raises(ConfigError, match="must be a mapping"):
        RunConfig.from_dict([1, 2])  # type: ignore[arg-type]


# Types ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("dotted", "value", "expected"),
    [
        ("train.epochs", "3", "train.epochs must be an integer"),
        ("train.epochs", True, "train.epochs must be an integer"),
        ("train.epochs", 2.0, "train.epochs must be an integer"),
        ("split.seed", False, "split.seed must be an integer"),
        ("validation.min_rows", "30", "validation.min_rows must be an integer"),
        ("train.freeze_text_encoder", 1, "train.freeze_text_encoder must be true or false"),
        ("train.freeze_text_encoder", "yes", "train.freeze_text_encoder must be true or false"),
        ("train.dropout", True, "train.dropout must be a number"),
        ("train.learning_rate", "0.1", "train.learning_rate must be a number"),
        ("train.text_encoder", 5, "train.text_encoder must be a string"),
        ("model_name", None, "model_name must be a string"),
        ("policies", ["hate", 3], "policies must be a list of strings"),
        ("policies", 7, "policies must be a list of strings"),
        ("gate.min_roc_auc", 0.9, "gate.min_roc_auc must be a mapping with a 'default' key"),
    ],
)
def test_type_errors_name_the_field(dotted, value, expected):
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_dict(_nested(dotted, value))
    assert expected in str(caught.value)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


# Per-policy mappings --------------------------------------------------------------------------------------
def test_per_policy_lookup_and_fallback():
    values = {"default": 0.8, "spam": 0.95}
    assert per_policy(values, "spam") == 0.95
    assert per_policy(values, "hate") == 0.8
    assert isinstance(per_policy({"default": 1}, "hate"), float)


@pytest.mark.parametrize("dotted", ["gate.min_roc_auc", "gate.min_pr_auc", "evaluation.target_precision"])
def test_per_policy_mapping_needs_default(dotted):
    with pytest.raises(ConfigError, match="needs a 'default' entry") as caught:
        RunConfig.from_dict(_nested(dotted, {"hate": 0.9}))
    assert dotted in str(caught.value)


@pytest.mark.parametrize("value", [1.5, -0.1, "0.9", None])
def test_per_policy_values_must_be_numbers_in_range(value):
    with pytest.raises(ConfigError, match=r"gate\.min_roc_auc\.spam must be a number in \[0\.0, 1\.0\]"):
        RunConfig.from_dict({"gate": {"min_roc_auc": {"default": 0.5, "spam": value}}})


def test_per_policy_overrides_are_kept_and_keys_are_strings():
    config = RunConfig.from_dict({"gate": {"min_roc_auc": {"default": 0.6, "hate": 0.7}}})
    assert per_policy(config.gate.min_roc_auc, "hate") == 0.7
    assert per_policy(config.gate.min_roc_auc, "spam") == 0.6
    assert per_policy(config.gate.min_pr_auc, "spam") == 0.0


def test_per_policy_values_reject_bools():
    with pytest.raises(ConfigError):
        RunConfig.from_dict({"gate": {"min_roc_auc": {"default": True}}})


# Overrides ------------------------------------------------------------------------------------------------
def test_with_overrides_dotted_keys_returns_a_validated_copy():
    base = RunConfig()
    changed = base.with_overrides(**{"train.max_steps": 1, "split.seed": 99, "model_name": "m2"})
    assert changed.train.max_steps == 1
    assert changed.split.seed == 99
    assert changed.model_name == "m2"
    assert base.train.max_steps == -1  # the original is untouched
    assert base.split.seed == 13
    per_policy_override = base.with_overrides(**{"gate.min_roc_auc": {"default": 0.5, "spam": 0.6}})
    assert per_policy_override.gate.min_roc_auc == {"default": 0.5, "spam": 0.6}


def test_with_overrides_validates_types_and_ranges():
    with pytest.raises(ConfigError, match="train.epochs must be an integer"):
        RunConfig().with_overrides(**{"train.epochs": "2"})
    with pytest.raises(ConfigError, match="train.epochs must be >= 1"):
        RunConfig().with_overrides(**{"train.epochs": 0})


def test_with_overrides_unknown_leaf_is_named():
    with pytest.raises(ConfigError, match=r"unknown configuration key 'train\.epochz'"):
        RunConfig().with_overrides(**{"train.epochz": 3})


@pytest.mark.parametrize("dotted", ["nope.epochs", "train.epochs.x"])
def test_with_overrides_unknown_parent_is_a_config_error(dotted):
    with pytest.raises(ConfigError, match="unknown configuration key"):
        RunConfig().with_overrides(**{dotted: 1})


# Policies -------------------------------------------------------------------------------------------------
def test_policies_as_comma_string():
    config = RunConfig.from_dict({"policies": " hate, spam ,,violence "})
    assert config.policies == ["hate", "spam", "violence"]
    assert RunConfig().with_overrides(policies="sexual,spam").policies == ["sexual", "spam"]
    assert RunConfig.from_json(json.dumps({"policies": "hateful"})).policies == ["hateful"]


@pytest.mark.parametrize(
    ("policies", "message"),
    [
        ("", "at least one policy"),
        ([], "at least one policy"),
        ("Hate,spam", "lower-case identifiers"),
        (["hate-speech"], "lower-case identifiers"),
        (["1abc"], "lower-case identifiers"),
        ("spam,spam", "unique"),
    ],
)
def test_invalid_policies(policies, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_dict({"policies": policies})


# Ranges ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("dotted", "value", "message"),
    [
        ("split.validation_fraction", 0.0, "split.validation_fraction must be in"),
        ("split.validation_fraction", 0.5, "split.validation_fraction must be in"),
        ("split.test_fraction", -0.1, "split.test_fraction must be in"),
        ("validation.min_rows", 0, "validation.min_rows must be >= 1"),
        ("validation.positive_rate_min", 0.7, "positive_rate_min must be below positive_rate_max"),
        ("validation.positive_rate_max", 1.5, "positive_rate_min must be below positive_rate_max"),
        ("validation.text_min_chars", 6000, "text_min_chars must not exceed text_max_chars"),
        ("train.epochs", 0, "train.epochs must be >= 1"),
        ("train.max_steps", 0, "train.max_steps must be -1 or positive"),
        ("train.max_steps", -2, "train.max_steps must be -1 or positive"),
        ("train.batch_size", 0, "train.batch_size must be >= 1"),
        ("train.modality_dropout", 0.5, "train.modality_dropout must be in"),
        ("train.modality_dropout", -0.1, "train.modality_dropout must be in"),
        ("train.modality_dropout", float("nan"), "train.modality_dropout must be in"),
        ("train.device", "tpu", "train.device must be auto, cpu or cuda"),
        ("train.max_text_length", 7, "max_text_length must be >= 8"),
        ("train.image_size", 15, "image_size 0 or >= 16"),
        ("train.lexical_buckets", 100, "train.lexical_buckets must be 0 or in"),
        ("train.calibration_share", 0.9, "train.calibration_share must be in"),
        ("evaluation.bootstrap_samples", 9, "bootstrap_samples must be >= 10"),
        ("evaluation.target_precision", {"default": 1.01}, "target_precision.default"),
        ("gate.regression_tolerance", 0.51, "regression_tolerance must be in"),
        ("gate.regression_tolerance", -0.01, "regression_tolerance must be in"),
        ("gate.min_pr_auc", {"default": -0.5}, "min_pr_auc.default"),
    ],
)
def test_invalid_ranges_raise_config_error(dotted, value, message):
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_dict(_nested(dotted, value))
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        ("split.validation_fraction", 0.49),
        ("split.test_fraction", 0.01),
        ("train.max_steps", -1),
        ("train.max_steps", 1),
        ("train.modality_dropout", 0.0),
        ("train.max_text_length", 8),
        ("train.image_size", 16),
        ("gate.regression_tolerance", 0.5),
        ("validation.positive_rate_min", 0.0),
    ],
)
def test_boundary_values_are_accepted(dotted, value):
    config = RunConfig.from_dict(_nested(dotted, value))
    section, name = dotted.split(".")
    assert getattr(getattr(config, section), name) == value


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        ("train.dropout", 1.5),
        ("train.dropout", float("nan")),
        ("train.learning_rate", -0.001),
        ("train.hidden_dim", 0),
        ("train.early_stopping_patience", 0),
        ("evaluation.calibration_bins", 0),
    ],
)
def test_unchecked_ranges_raise_config_error(dotted, value):
    with pytest.raises(ConfigError):
        RunConfig.from_dict(_nested(dotted, value))


def test_set_values_parse_scientific_notation_and_lists():
    from core.config.loading import parse_value
    from pipelines.local import TrainingRequest, load_config

    assert parse_value("1e-12") == 1e-12 and parse_value("-2.5E3") == -2500.0
    assert parse_value("abc") == "abc" and parse_value("3") == 3 and parse_value("[1, 2]") == [1, 2]
    request = TrainingRequest(
        overrides=["export.parity_tolerance=1e-6", "serving.preferred_batch_sizes=[4, 8]"]
    )
    config = load_config(request)
    assert config.export.parity_tolerance == 1e-6
    assert config.serving.preferred_batch_sizes == [4, 8]


def test_export_and_serving_settings_are_validated():
    with pytest.raises(ConfigError, match="parity_tolerance"):
        RunConfig().with_overrides(**{"export.parity_tolerance": 0.0})
    with pytest.raises(ConfigError, match="preferred_batch_sizes"):
        RunConfig().with_overrides(**{"serving.preferred_batch_sizes": [128]})
    with pytest.raises(ConfigError, match="list of integers"):
        RunConfig().with_overrides(**{"export.parity_batch_sizes": ["a"]})
    assert RunConfig().with_overrides(**{"export.parity_batch_sizes": "2, 8"}).export.parity_batch_sizes == [
        2,
        8,
    ]


def test_configs_default_yaml_lists_every_key_with_its_default():
    path = Path(__file__).resolve().parents[2] / "configs" / "default.yaml"
    listed = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert RunConfig.from_dict(listed) == RunConfig()

    def keys(data: dict, prefix: str = "") -> set[str]:
        found = set()
        for key, value in data.items():
            is_section = isinstance(value, dict) and "default" not in value
            found |= keys(value, f"{prefix}{key}.") if is_section else {prefix + key}
        return found

    assert keys(listed) == keys(RunConfig().to_dict())


def test_data_and_split_settings_are_validated():
    from core.config.run import DataConfig

    assert RunConfig().data.missing_labels == "mask" and RunConfig().split.deduplicate is True
    for spec in dataclasses.fields(DataConfig):
        assert spec.metadata.get("help")
    with pytest.raises(ConfigError, match="data.missing_labels must be one of mask, negative, refuse"):
        RunConfig().with_overrides(**{"data.missing_labels": "ignore"})
    with pytest.raises(ConfigError, match="split.duplicate_key must be one of exact, normalized"):
        RunConfig().with_overrides(**{"split.duplicate_key": "fuzzy"})
    with pytest.raises(ConfigError, match="must be true or false"):
        RunConfig().with_overrides(**{"split.deduplicate": "no"})
    partial = RunConfig.from_dict({"validation": {"severity": {"positive_rate": "critical"}}})
    assert partial.validation.severity["text_length"] == "warning"  # the others keep their defaults
    assert partial.validation.severity_overrides() == {"positive_rate": "critical"}
