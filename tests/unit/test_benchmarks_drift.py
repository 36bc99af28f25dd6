"""The drift benchmark's helpers on small windows: the synthetic log lines, their files, the baseline tests,
the plain reader, one measured case in a subprocess, the report section and the `--only` merge."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.drift import (
    CURRENT_SPEC,
    GOAL_BYTES,
    GOAL_BYTES_ROWS,
    GOAL_SECONDS,
    GOAL_SECONDS_ROWS,
    POLICIES,
    REFERENCE_SPEC,
    REFERENCE_START,
    DriftBench,
    cached_windows,
    drift_section,
    log_lines,
    measure,
    merge_report,
    plain_tests,
    read_plain,
    write_window,
)
from monitoring.log_reader import read_logs
from monitoring.schema import LOG_SCHEMA_VERSION, embedding_columns, make_record

ROWS = 400


@pytest.fixture(scope="module")
def windows(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("drift_bench")
    reference, current, seconds, cached = cached_windows(root, ROWS)
    assert seconds > 0 and not cached
    return reference, current


def test_lines_are_log_schema_records_with_make_records_fields() -> None:
    lines = log_lines(300, 5, REFERENCE_START, 86400.0, REFERENCE_SPEC)
    parsed = [json.loads(line) for line in lines]
    assert all(line.endswith("\n") and line.count("\n") == 1 for line in lines)
    expected = make_record(
        request_id="r",
        item=0,
        timestamp=REFERENCE_START,
        model_name="content-safety",
        model_version="3",
        text=None,
        image=None,
        scores={"hate": 0.1},
        flags={"hate": False},
        action="allow",
    )
    assert all(list(record) == list(expected) for record in parsed)  # same fields, same order
    assert {record["schema_version"] for record in parsed} == {LOG_SCHEMA_VERSION}
    assert len({record["request_id"] for record in parsed}) == 300
    stamps = [record["timestamp"] for record in parsed]
    assert stamps == sorted(stamps) and stamps[0] == "2026-11-01T00:00:00+00:00"
    served = [record for record in parsed if not record["error"]]
    for record in served:
        assert list(record["scores"]) == list(POLICIES)
        assert record["flags"] == {p: record["scores"][p] >= 0.5 for p in POLICIES}
        assert record["text_present"] or record["image_present"]
        assert (record["text_embedding"] is not None) == record["text_present"]
        assert (record["image_embedding"] is not None) == record["image_present"]
        if record["text_embedding"] is not None:
            assert len(record["text_embedding"]) == 16
    assert log_lines(300, 5, REFERENCE_START, 86400.0, REFERENCE_SPEC) == lines  # seeded


def test_windows_are_day_partitions_that_read_logs_reads_without_loss(windows: tuple[Path, Path]) -> None:
    reference, current = windows
    assert len(list(reference.glob("date=*/part.jsonl"))) == 7
    assert [p.parent.name for p in current.glob("date=*/part.jsonl")] == ["date=2026-11-08"]
    for folder in windows:
        window = read_logs(folder)
        stats = window.stats
        assert stats.lines == ROWS and stats.malformed == 0
        assert stats.rows + stats.failed_requests == ROWS
        assert window.policies == list(POLICIES)
    # The current window is shifted: its text embeddings' mean is about 0.1 higher in every dimension.
    ref, cur = read_logs(reference).frame, read_logs(current).frame
    columns = embedding_columns("text_embedding_")
    shift = np.nanmean(cur[columns].to_numpy()) - np.nanmean(ref[columns].to_numpy())
    assert 0.0 < shift < 0.25


def test_cached_windows_are_reused(windows: tuple[Path, Path]) -> None:
    reference, current = windows
    again_reference, again_current, seconds, cached = cached_windows(reference.parents[1], ROWS)
    assert (again_reference, again_current, cached) == (reference, current, True)
    assert seconds > 0  # as measured when they were generated


def test_chunks_write_the_same_lines_as_one_piece(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import benchmarks.drift as drift

    monkeypatch.setattr(drift, "CHUNK_ROWS", 7)
    write_window(tmp_path / "chunked", 30, 3, REFERENCE_START, 1, CURRENT_SPEC)
    lines = (tmp_path / "chunked" / "date=2026-11-01" / "part.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["request_id"] for r in records] == [f"bench-3-{i}" for i in range(30)]
    assert [r["timestamp"] for r in records] == sorted(r["timestamp"] for r in records)
    assert records[-1]["timestamp"] < "2026-11-02"


def test_plain_tests_cover_the_checks_columns_and_find_the_shift(windows: tuple[Path, Path]) -> None:
    reference, current = windows
    ref, cur = read_logs(reference), read_logs(current)
    result = plain_tests(ref.frame, cur.frame, ref.policies)
    # KS: 6 text + 3 image descriptors, 4 scores, 2 x 16 embedding dimensions. Chi-square: language, format,
    # 2 presences and 4 flags, each only when it takes two values (a rare policy may flag nothing in 400 rows).
    ks = [name for name in result["p_values"] if not name.startswith("flag_") and "_present" not in name]
    assert len(ks) == 6 + 3 + 4 + 32 + 2
    assert {"text_language", "image_format", "text_present", "image_present", "flag_spam"} <= set(
        result["p_values"]
    )
    assert result["tests"] == len(result["p_values"]) <= 6 + 3 + 4 + 32 + 4 + 4
    assert all(0.0 <= p <= 1.0 for p in result["p_values"].values())
    same = plain_tests(ref.frame, ref.frame, ref.policies)
    assert same["drifted"] == []


def test_plain_reader_matches_read_logs(windows: tuple[Path, Path]) -> None:
    reference, _ = windows
    plain, checked = read_plain(reference), read_logs(reference).frame
    assert len(plain) == len(checked)
    plain = plain.sort_values("request_id").reset_index(drop=True)
    checked = checked.sort_values("request_id").reset_index(drop=True)
    for column in ["score_spam", "flag_hate", "text_length", *embedding_columns("image_embedding_")]:
        np.testing.assert_allclose(
            plain[column].to_numpy(float), checked[column].to_numpy(float), rtol=1e-6, equal_nan=True
        )


@pytest.mark.timeout(300)
def test_measure_runs_a_case_in_a_fresh_process(windows: tuple[Path, Path], tmp_path: Path) -> None:
    reference, current = windows
    result = measure("baseline", reference, current, tmp_path / "work")
    assert result["case"] == "baseline"
    assert 6 + 3 + 4 + 32 + 5 <= result["tests"] <= 53
    assert result["rows"]["reference"] > ROWS * 0.95
    assert 0 < result["seconds"] < result["process_s"]
    assert result["peak_rss"] >= result["rss_after_import"] > 50e6


def _case(seconds: float, rss: float, **extra) -> dict:
    return {
        "seconds": seconds,
        "peak_rss": rss,
        "rows": {"reference": 100, "current": 100},
        "import_s": 3.0,
        "process_s": seconds + 5.0,
        "rss_after_import": 3e8,
        **extra,
    }


def _bench(check_seconds: float, check_rss: float) -> DriftBench:
    cases = {
        GOAL_SECONDS_ROWS: {
            "check": _case(
                check_seconds, 1e9, status="drift", exit_code=10, drifted=["text_embedding"], signals=27
            ),
            "baseline": _case(check_seconds / 2, 5e8, tests=53, drifted=[], read_s=1.0),
            "baseline_pandas": _case(20.0, 1.5e9, tests=53, drifted=[], read_s=15.0),
        },
        GOAL_BYTES_ROWS: {
            "check": _case(60.0, check_rss, status="drift", exit_code=10, drifted=[], signals=27),
            "baseline": _case(30.0, check_rss / 4, tests=53, drifted=[], read_s=10.0),
        },
    }
    files = {
        rows: {"reference_bytes": 10, "current_bytes": 10, "reference_files": 7, "current_files": 1}
        for rows in cases
    }
    return DriftBench(
        sizes=list(cases), cases=cases, files=files, generated_s={GOAL_SECONDS_ROWS: 5.0}, seconds=99.0
    )


def test_goals_and_section() -> None:
    good = _bench(GOAL_SECONDS - 1, GOAL_BYTES - 1)
    assert good.goals() == {"seconds": True, "memory": True}
    assert good.ratio(GOAL_SECONDS_ROWS) == pytest.approx(2.0)
    assert good.ratio(GOAL_BYTES_ROWS, "peak_rss") == pytest.approx(4.0)
    section = drift_section(good)
    assert section.startswith("## Drift check")
    assert "under 30 s: met" in section and "under 4 GB of memory: met" in section
    assert "| 100k | `run_drift_check`" in section and "| 1M | `read_logs` + scipy" in section
    assert "**2.00**" in section
    assert "(skipped at 1M)" in section
    assert "takes 2.00x the time" not in section and "pandas-reader baseline the check takes" in section
    bad = _bench(GOAL_SECONDS + 1, GOAL_BYTES + 1)
    assert bad.goals() == {"seconds": False, "memory": False}
    assert "under 30 s: not met" in drift_section(bad)
    partial = DriftBench(sizes=[], cases={}, files={}, generated_s={}, seconds=0.0)
    assert partial.goals() == {"seconds": None, "memory": None}


def test_merge_report_replaces_one_section_and_keeps_the_others() -> None:
    existing = "# Benchmarks\n\nold header\n\n## Training\n\ntrain\n\n## Drift check: x\n\nold\n\n## Serving\n\nserve\n"
    new = "# Benchmarks\n\nnew header\n\n## Drift check: x\n\nnew drift\n"
    merged = merge_report(existing, new, note="*Measured today.*")
    assert merged.index("## Training") < merged.index("## Drift check") < merged.index("## Serving")
    assert "## Drift check: x\n\n*Measured today.*\n\nnew drift\n" in merged
    assert "\nold\n" not in merged and "old header" in merged and "new header" not in merged
    assert "## Training\n\ntrain\n" in merged and "## Serving\n\nserve\n" in merged
    renamed = merge_report(existing, "# B\n\n## Training (3 epochs)\n\nnew train\n")
    assert "## Training (3 epochs)\n\nnew train\n" in renamed and "\ntrain\n" not in renamed
    appended = merge_report("# B\n\n## Training\n\ntrain\n", "# B\n\n## Drift check\n\nd\n")
    assert appended == "# B\n\n## Training\n\ntrain\n\n## Drift check\n\nd\n"
