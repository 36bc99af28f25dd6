"""The demo's retrain rules load as the trigger reads them: retraining data from the day's content store, no
cooldown, the default model-facing signals or (`--retrain-on-any-drift`) every drifted signal."""

from __future__ import annotations

from pathlib import Path

from core.config.retrain_rules import RetrainRules, default_signal_rules
from tns.demo import _write_rules


def test_the_demo_rules_build_retraining_data_with_default_or_any_signals(tmp_path: Path):
    default = RetrainRules.from_yaml(_write_rules(tmp_path, "content-safety", ["train.epochs=3"], False))
    assert default.signals == default_signal_rules() and default.cooldown_hours == 0
    assert default.retraining_data.enabled and not default.training_data_uri
    assert default.retraining_data.content_store_uri == str((tmp_path / "current" / "content").resolve())
    assert default.retraining_data.output_dir == str((tmp_path / "retraining-data").resolve())
    assert default.config_overrides == ["train.epochs=3"]
    descriptor = {"name": "text_emoji_count", "drifted": True}
    assert not default.matching_signals([descriptor])
    any_drift = RetrainRules.from_yaml(_write_rules(tmp_path, "content-safety", [], True))
    assert [rule.signal for rule in any_drift.signals] == ["*"]
    assert any_drift.matching_signals([descriptor]) and not any_drift.matching_signals(
        [descriptor | {"drifted": False}]
    )
