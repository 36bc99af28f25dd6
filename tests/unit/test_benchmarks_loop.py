"""The closed-loop benchmark's report: one row per scenario with the gate's verdict, slices and held-back figures,
the goal's verdict, and its section replacing its namesake."""

from __future__ import annotations

from benchmarks.drift import merge_report
from benchmarks.loop import SECTION_TITLE, section

POLICIES = ("hate", "violence", "sexual", "spam")


def _no_drift_loop(scenario: str) -> dict:
    reasons = ["0 matching signal(s)", "drift status drift; drifted signals: ['text_emoji_count']"]
    loop = {
        "drift": {"exit_code": 10},
        "trigger": {"outcome": "no_drift", "reasons": reasons},
        "review": {"tasks": 119},
    }
    return {"scenario": scenario, "any_drift": False, "exit_code": 1, "seconds": 60, "loop": loop}


def _loop(scenario: str, decision: str, before: float, after: float, failed: list[str]) -> dict:
    slice_ = {
        "rows": 500,
        "challenger": dict.fromkeys(POLICIES, 0.9),
        "champion": dict.fromkeys(POLICIES, 0.95),
    }
    return {
        "scenario": scenario,
        "exit_code": 0,
        "any_drift": scenario == "new_slang",
        "seconds": 300,
        "loop": {
            "drift": {"exit_code": 10},
            "trigger": {"outcome": "fired"},
            "review": {"tasks": 132, "gold_tasks": 8, "gold_disagreement": 0.03125},
            "retraining_data": {"original_rows": 3954, "new_rows": 465},
            "gate": {
                "decision": decision,
                "failed_checks": failed,
                "origin_slices": {"original": slice_, "new": {**slice_, "rows": 60}},
            },
            "held_back": {
                "before": {"macro_roc_auc": before},
                "after": {"macro_roc_auc": after},
                "delta_macro_roc_auc": round(after - before, 4),
            },
        },
    }


def test_section_reports_each_loop_and_the_goal():
    result = {
        "rows": 1200,
        "review_budget": 150,
        "base_version": "1",
        "champion_seconds": 300,
        "loops": [
            _no_drift_loop("new_slang"),
            _loop(
                "new_slang",
                "NOT_BLESSED",
                0.80,
                0.81,
                ["sexual: ROC AUC 0.972 < 0.983 - 0.01 on the original"],
            ),
            _loop("image_style_shift", "BLESSED", 0.70, 0.78, []),
            {"scenario": "broken", "exit_code": 1, "seconds": 5, "loop": {}},
        ],
    }
    text = section(result, "python -m benchmarks.loop", "a machine")
    assert text.startswith(SECTION_TITLE)
    assert "| new_slang | default | 10 | no_drift | 119 (n/a gold), n/a | n/a / n/a | **n/a** | n/a |" in text
    assert "| n/a -> n/a | n/a (not met) |" in text
    assert (
        "| new_slang | every drifted signal | 10 | fired | 132 (8 gold), 0.031 | 3954 / 465 | **NOT_BLESSED** | "
        "sexual: ROC AUC 0.972" in text
    )
    assert "| 0.800 -> 0.810 | +0.010 (not met) |" in text
    assert (
        "| image_style_shift | default | 10 | fired |" in text and "| 0.700 -> 0.780 | +0.080 (met) |" in text
    )
    assert "hate 0.900 vs 0.950<br>" in text and "(60 rows)" in text
    assert "| broken | default | loop failed (exit 1) |" in text
    assert (
        "new_slang not met, new_slang (every drifted signal) not met, image_style_shift met, broken not met.**"
        in text
    )
    assert "; 16 min;" in text  # champion 5 min + 1 + 2 x 5 min + 5 s
    assert "- new_slang: the default retrain rules did not fire: no model-facing signal drifted" in text
    assert "drifted signals: ['text_emoji_count'])." in text
    assert "out of reach" not in text  # 0.80 and 0.70 leave room for +0.05
    high = _loop("image_style_shift", "BLESSED", 0.959, 0.997, [])
    assert "macro ROC AUC 0.959 leaves at most +0.041: the +0.05 goal is out of reach" in section(
        result | {"loops": [high]}, "c", "m"
    )
    report = merge_report("# Benchmarks\n\n## Other\n\nkept\n", "\n" + text)
    assert report.count("## Closed loop") == 1 and "kept" in report
    assert merge_report(report, "\n" + text) == report
