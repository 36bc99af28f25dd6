"""The review-queue benchmark's report: medians, ratios, the goal's verdict and its section replacing its namesake."""

from __future__ import annotations

from benchmarks.drift import merge_report
from benchmarks.review_queue import SECTION_TITLE, section


def _run(seed: int, window: str, uniform: int, threshold: int, label: int) -> dict:
    counts = lambda found: {"rare_positives": found, "errors": 2 * found, "items": 95}  # noqa: E731
    return {
        "seed": seed,
        "window": window,
        "rows": 2000,
        "rarest": "sexual",
        "rarest_positives_in_window": 40,
        "uniform": counts(uniform),
        "threshold": counts(threshold),
        "label": counts(label),
    }


def test_section_reports_medians_ratios_and_the_goal():
    result = {
        "seeds": 3,
        "rows_per_window": 2000,
        "budget": 100,
        "scenario": "new_slang",
        "model_version": "2",
        "seconds": 60,
        "thresholds": {"sexual": 0.1},
        "runs": [_run(s, w, 2, 7 + s, 3) for s in range(3) for w in ("none", "new_slang")],
    }
    text = section(result, "python -m benchmarks.review_queue", "a machine")
    assert text.startswith(f"{SECTION_TITLE} (3 seeds)")
    assert "| none | sexual 3 | 40 | 2 | 8 | **4.00** | 3 | **1.50** | 4 / 16 / 6 |" in text
    assert "(median of 3 seeds): met**" in text and "sexual 0.10 for this champion" in text
    report = merge_report("# Benchmarks\n\n## Other\n\nkept\n", "\n" + text)
    assert report.count("## Review queue") == 1 and "kept" in report
    assert merge_report(report, "\n" + text) == report
