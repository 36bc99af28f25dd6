"""The retrain rules: defaults without a file, the committed YAML, validation naming the key, rule matching."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from core.common.constants import DEFAULT_MODEL_NAME
from core.config.fields import ConfigError
from core.config.retrain_rules import RetrainRules, SignalRule

REPO = Path(__file__).resolve().parents[2]
RULES_FILE = REPO / "configs" / "retrain_rules.yaml"


def _signal(name: str, score: float, threshold: float = 0.1, drifted: bool | None = None) -> dict:
    severity = score / threshold
    return {
        "name": name,
        "score": score,
        "threshold": threshold,
        "severity": severity,
        "drifted": severity > 1 if drifted is None else drifted,
    }


def test_defaults_need_no_file():
    rules = RetrainRules()
    assert rules.model_name == DEFAULT_MODEL_NAME
    assert (rules.min_signals, rules.min_rows, rules.cooldown_hours, rules.max_in_flight) == (
        1,
        500,
        24.0,
        1,
    )
    assert rules.dry_run is False and rules.training_data_uri == "" and rules.config_overrides == []
    assert {rule.signal for rule in rules.signals} == {
        "text_embedding",
        "image_embedding",
        "score_*",
        "flag_rate_*",
        "performance_*",
    }


def test_committed_policy_file_is_the_defaults():
    assert RetrainRules.from_yaml(RULES_FILE).to_dict() == RetrainRules().to_dict()


def test_every_setting_has_help_text():
    for cls in (RetrainRules, SignalRule):
        for spec in dataclasses.fields(cls):
            assert spec.metadata.get("help"), f"{cls.__name__}.{spec.name} has no help text"


def test_yaml_with_rules_shorthand_and_overrides(tmp_path: Path):
    path = tmp_path / "rules.yaml"
    path.write_text(
        "signals:\n"
        "  - text_embedding\n"
        "  - {signal: 'score_*', min_severity: 2}\n"
        "  - {signal: performance_spam, min_score: 0.05}\n"
        "min_signals: 2\n"
        "min_rows: 100\n"
        "cooldown_hours: 6\n"
        "dry_run: true\n"
        "training_data_uri: gs://bucket/labeled\n"
        "config_overrides: ['train.epochs=3', 'gate.min_roc_auc.spam=0.9']\n"
    )
    rules = RetrainRules.from_yaml(path)
    assert rules.signals == [
        SignalRule("text_embedding"),
        SignalRule("score_*", min_severity=2),
        SignalRule("performance_spam", min_score=0.05),
    ]
    assert rules.cooldown_hours == 6.0 and isinstance(rules.cooldown_hours, float)
    assert (rules.min_signals, rules.min_rows, rules.dry_run) == (2, 100, True)
    config = rules.run_config()
    assert config.train.epochs == 3 and config.gate.min_roc_auc["spam"] == 0.9
    assert RetrainRules.from_dict(rules.to_dict()) == rules


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"min_rows": 0}, "min_rows"),
        ({"min_rows": "many"}, "min_rows"),
        ({"min_signals": 0}, "min_signals"),
        ({"cooldown_hours": -1}, "cooldown_hours"),
        ({"cooldown_hours": float("nan")}, "cooldown_hours"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"max_run_hours": 0}, "max_run_hours"),
        ({"dry_run": "yes"}, "dry_run"),
        ({"model_name": ""}, "model_name"),
        ({"signals": []}, "signals"),
        ({"signals": "score_*"}, "signals"),
        ({"signals": [{"min_severity": 1}]}, "signals[0]"),
        ({"signals": [{"signal": "score_*", "severity": 2}]}, "signals[0].severity"),
        ({"signals": [{"signal": "score_*", "min_severity": -1}]}, "min_severity"),
        ({"signals": [{"signal": "score_*", "min_score": "high"}]}, "min_score"),
        ({"config_overrides": ["train.epoch=3"]}, "train.epoch"),
        ({"config_overrides": ["train.epochs"]}, "config_overrides[0]"),
        ({"config_overrides": ["train.epochs=0"]}, "train.epochs"),
        ({"cooldown": 3}, "cooldown"),
    ],
)
def test_invalid_settings_name_the_key(data: dict, key: str):
    with pytest.raises(ConfigError) as error:
        RetrainRules.from_dict(data)
    assert key in str(error.value)


def test_missing_or_broken_file_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        RetrainRules.from_yaml(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("signals: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        RetrainRules.from_yaml(broken)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert RetrainRules.from_yaml(empty) == RetrainRules()


def test_rules_match_by_pattern_and_bounds():
    drifted, calm = _signal("score_spam", 0.3), _signal("score_hate", 0.05)
    assert SignalRule("score_*").matches(drifted) and not SignalRule("score_*").matches(calm)
    assert not SignalRule("text_embedding").matches(drifted)
    # Bounds replace the drifted flag: severity 3 passes min_severity 2, not 4; a calm signal can count too.
    assert SignalRule("score_*", min_severity=2).matches(drifted)
    assert not SignalRule("score_*", min_severity=4).matches(drifted)
    assert SignalRule("score_*", min_severity=0.5).matches(calm)
    assert SignalRule("score_*", min_score=0.25).matches(drifted)
    assert not SignalRule("score_*", min_severity=2, min_score=0.5).matches(drifted)
    assert not SignalRule("score_*", min_severity=1).matches({"name": "score_spam", "severity": None})
    assert SignalRule("score_*", min_severity=2).describe() == "score_* severity >= 2"


def test_matching_signals_keeps_the_first_matching_rule():
    rules = RetrainRules(signals=[SignalRule("score_spam", min_severity=5), SignalRule("score_*")])
    signals = [_signal("score_spam", 0.6), _signal("text_length", 0.9), _signal("score_hate", 0.3)]
    matched = rules.matching_signals(signals)
    assert [(m["name"], m["rule"]) for m in matched] == [
        ("score_spam", "score_spam severity >= 5"),
        ("score_hate", "score_* drifted"),
    ]


def test_policy_module_does_not_import_kfp():
    code = "import sys; from core.config.retrain_rules import RetrainRules; RetrainRules(); print('kfp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"


def test_keys_that_yaml_reads_as_a_number_or_null_are_named_not_a_crash():
    """YAML reads `1:` as 1 and `~:` as None; beside string keys that must be a ConfigError, not a TypeError."""
    with pytest.raises(ConfigError, match=r"unknown retrain rules key\(s\) \[1, None\]"):
        RetrainRules.from_dict({"min_rows": 5, None: "x", 1: "y"})
