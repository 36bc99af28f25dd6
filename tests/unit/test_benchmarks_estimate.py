"""The label-free estimate benchmark's report: medians per window and policy, verdict counts and the goal."""

from __future__ import annotations

from benchmarks.drift import merge_report
from benchmarks.performance_estimate import SECTION_TITLE, section, summarize


def _entry(error: float, reliability: str, positives: int = 120) -> dict:
    figures = lambda e: {  # noqa: E731
        "positives": positives,
        "realized": {"precision": 0.9, "recall": 0.8},
        "error": {"precision": e, "recall": e / 2},
    }
    return {
        "calibrated": figures(error),
        "served": figures(error + 0.1),
        "reference": figures(error + 0.2),
        "reliability": reliability,
    }


def _result(concept_error: float) -> dict:
    runs = []
    for seed, error in enumerate((0.01, 0.03, 0.2)):  # the median ignores one bad seed
        for window in ("none", "new_slang", "image_style_shift"):
            runs.append({"seed": seed, "window": window, "policies": {"spam": _entry(error, "reliable")}})
        runs.append(
            {
                "seed": seed,
                "window": "concept_drift",
                "policies": {"spam": _entry(concept_error, "unreliable")},
            }
        )
    return {"seeds": 3, "rows_per_window": 2000, "model_version": "3", "seconds": 120, "runs": runs}


def test_medians_verdicts_and_the_goal():
    result = _result(0.3)
    table = summarize(result)
    assert table["none"]["spam"]["calibrated_precision"] == 0.03
    assert table["none"]["spam"]["served_precision"] == 0.13
    assert table["concept_drift"]["spam"]["verdicts"] == {"reliable": 0, "unreliable": 3, "unchecked": 0}
    text = section(result, "python -m benchmarks.performance_estimate", "a machine")
    assert text.startswith(f"{SECTION_TITLE} (3 seeds)")
    assert "| none | spam | 120 | **0.030** | 0.130 | 0.230 | **0.015** | 0.065 | 0.115 | 3 / 0 / 0 |" in text
    assert "under covariate shift: met**" in text and "spam 3/3 seeds" in text
    report = merge_report("# Benchmarks\n\n## Other\n\nkept\n", "\n" + text)
    assert report.count(SECTION_TITLE) == 1 and "kept" in report


def test_a_policy_above_the_goal_is_named():
    result = _result(0.3)
    for run in result["runs"]:
        if run["window"] == "new_slang":
            run["policies"]["spam"]["calibrated"]["error"]["precision"] = 0.08
    assert "not met** (new_slang spam)" in section(result, "cmd", "machine")
