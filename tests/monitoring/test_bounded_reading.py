"""Reading log windows in bounded memory: a line-length cap, a seeded uniform sample above a row budget, and
counts and flag rates that are exact over every row whatever was sampled. The 2-million-row and 30 MB cases
are benchmarks (`benchmarks/hostile.py`); these are their scaled-down versions."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monitoring import log_chunks
from monitoring.log_reader import read_logs
from monitoring.reservoir import Reservoir
from tests.monitoring.records import records, write


@pytest.fixture(scope="module")
def window(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3,000 rows over two day partitions, 5% with delayed labels in a labels file."""
    root = tmp_path_factory.mktemp("bounded") / "logs"
    rows = records(3000, 11, label_rate=0.0)
    write(root, rows)
    labels = root / "labels"
    labels.mkdir()
    with (labels / "delayed.jsonl").open("w") as handle:
        for row in rows[::20]:
            handle.write(
                json.dumps({"request_id": row["request_id"], "item": 0, "labels": {"spam": 1}}) + "\n"
            )
    return root


def _one_partition(root: Path, rows: list[dict]) -> Path:
    """Writes `rows` as they are (no schema helper) into one day partition under `root`."""
    partition = root / "date=2026-11-20"
    partition.mkdir(parents=True)
    (partition / "part.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_a_row_budget_keeps_a_uniform_sample_and_exact_counts(window: Path):
    exact = read_logs(window, row_budget=None)
    sampled = read_logs(window, row_budget=500, seed=3)
    assert len(exact.frame) == 3000 and len(sampled.frame) == 500
    assert sampled.stats.rows == exact.stats.rows == 3000 and sampled.stats.sampled_rows == 500
    assert sampled.stats.sampled and not exact.stats.sampled
    for key in ("lines", "malformed_lines", "failed_requests", "labeled_rows", "flag_rates", "start", "end"):
        assert sampled.stats.to_dict()[key] == exact.stats.to_dict()[key], key
    assert exact.stats.labeled_rows == 150
    assert sampled.policies == exact.policies
    # A sample of the window's rows, each row once, labels joined, in time order.
    keys = set(zip(exact.frame["request_id"], exact.frame["item"], strict=True))
    chosen = list(zip(sampled.frame["request_id"], sampled.frame["item"], strict=True))
    assert len(set(chosen)) == 500 and set(chosen) <= keys
    assert sampled.frame["timestamp"].is_monotonic_increasing
    labeled = sampled.frame["label_spam"].notna()
    assert 0 < labeled.sum() < 60 and (sampled.frame.loc[labeled, "label_spam"] == 1).all()
    # Uniform: the sample's mean spam score is within a few standard errors of the window's.
    spread = exact.frame["score_spam"].std() / np.sqrt(500)
    assert abs(sampled.frame["score_spam"].mean() - exact.frame["score_spam"].mean()) < 4 * spread


def test_the_sample_depends_on_the_seed_not_on_the_chunking(window: Path, monkeypatch: pytest.MonkeyPatch):
    first = read_logs(window, row_budget=400, seed=5).frame
    again = read_logs(window, row_budget=400, seed=5).frame
    other = read_logs(window, row_budget=400, seed=6).frame
    monkeypatch.setattr(log_chunks, "CHUNK_BYTES", 20_000)  # many small chunks instead of one per file
    rechunked = read_logs(window, row_budget=400, seed=5).frame
    pd.testing.assert_frame_equal(first, again)
    assert set(first["request_id"]) == set(rechunked["request_id"])
    assert set(first["request_id"]) != set(other["request_id"])


def test_a_line_over_the_cap_is_skipped_without_being_held(tmp_path: Path):
    """Finding: `read_logs` loaded every file whole, so one huge line exhausted memory. 8 MB here (30 MB in the
    benchmark): the reader's Python allocations stay far below the line's size."""
    root = write(tmp_path / "logs", records(300, 2))
    (file,) = root.rglob("*.jsonl")
    lines = file.read_text().splitlines()
    huge = '{"schema_version": 1, "text": "' + "a" * 8_000_000 + '"}'
    file.write_text("\n".join([*lines[:100], huge, *lines[100:]]) + "\n")
    tracemalloc.start()
    try:
        read = read_logs(root, row_budget=None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (read.stats.lines, read.stats.malformed, read.stats.rows) == (301, 1, 300)
    assert "longer than 1048576 bytes" in read.stats.malformed_examples[0]
    assert ":101:" in read.stats.malformed_examples[0]
    assert peak < 4_000_000, peak


def test_a_timestamp_pandas_cannot_parse_costs_one_line(tmp_path: Path):
    """Finding: a string timestamp that is not ISO 8601 passed pyarrow's typed read and raised from
    `pd.to_datetime` out of `read_logs` (a traceback from `tns drift`)."""
    rows = records(200, 4)
    rows[7] = {**rows[7], "timestamp": "yesterday at noon"}
    read = read_logs(_one_partition(tmp_path / "logs", rows))
    assert (read.stats.malformed, read.stats.rows) == (1, 199)
    assert "'yesterday at noon' is not ISO 8601" in read.stats.malformed_examples[0]


def test_a_parquet_file_with_a_bad_row_costs_that_row(tmp_path: Path):
    """A Parquet file that fails the whole-table type checks is checked row by row (it used to be re-read as
    text lines, every one of them malformed)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = records(120, 6, label_rate=0.5)
    labeled = [i for i, row in enumerate(rows) if row["labels"]]
    rows[labeled[0]] = {**rows[labeled[0]], "labels": {**rows[labeled[0]]["labels"], "spam": 2}}
    partition = tmp_path / "logs" / "date=2026-11-20"
    partition.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), partition / "part.parquet")
    read = read_logs(tmp_path / "logs")
    assert (read.stats.lines, read.stats.malformed, read.stats.rows) == (120, 1, 119)
    assert (
        f"part.parquet:row {labeled[0]}: labels is not an object of 0/1" in read.stats.malformed_examples[0]
    )


def test_flag_rates_come_from_every_row_when_the_frames_are_samples(window: Path, tmp_path: Path):
    from core.config.drift import DriftConfig
    from monitoring.check import window_counts
    from monitoring.drift import compare_windows

    reference = read_logs(write(tmp_path / "reference", records(3000, 12)), row_budget=None)
    current = read_logs(window, row_budget=300, seed=1)
    result = compare_windows(
        reference.frame,
        current.frame,
        current.policies,
        DriftConfig(max_sample_rows=300),
        counts=(window_counts(reference), window_counts(current)),
    )
    assert result.current_rows == 3000 and result.sampled["current"] == 300
    flag = next(s for s in result.signals if s.name == "flag_rate_spam")
    assert flag.rows == {"reference": 3000, "current": 3000}
    assert flag.current_value == round(current.stats.to_dict()["flag_rates"]["spam"], 4)


def test_the_reservoir_is_uniform_and_chunking_free():
    included = np.zeros(100)
    for seed in range(400):
        reservoir = Reservoir(10, seed)
        for start in range(0, 100, 7):
            reservoir.add({"row": np.arange(start, min(start + 7, 100))})
        kept = reservoir.columns()["row"]
        assert len(set(kept.tolist())) == 10
        included[kept] += 1
    # Each row is kept with probability 10/100: 40 of 400 draws, binomial spread about 6.
    assert included.min() > 15 and included.max() < 70
    early, late = included[:50].sum(), included[50:].sum()
    assert abs(early - late) < 0.15 * (early + late)
    whole, pieces = Reservoir(10, 1), Reservoir(10, 1)
    whole.add({"row": np.arange(100)})
    for start in range(0, 100, 13):
        pieces.add({"row": np.arange(start, min(start + 13, 100))})
    assert set(whole.columns()["row"]) == set(pieces.columns()["row"])
    unbounded = Reservoir(None, 0)
    unbounded.add({"row": np.arange(5), "x": np.ones(5)})
    unbounded.add({"row": np.arange(5, 8)})  # a column missing in a chunk is missing for its rows
    assert unbounded.columns()["row"].tolist() == list(range(8))
    assert np.isnan(unbounded.columns()["x"][5:]).all() and not unbounded.sampled


def test_a_timestamp_beyond_the_nanosecond_range_costs_one_line(tmp_path: Path):
    """pyarrow parses `9999-01-01` as a timestamp; cast to nanoseconds it wrapped to 1815 without a word."""
    rows = records(200, 4)
    rows[9] = {**rows[9], "timestamp": "9999-01-01T00:00:00+00:00"}
    read = read_logs(_one_partition(tmp_path / "logs", rows))
    assert (read.stats.malformed, read.stats.rows) == (1, 199)
    assert read.stats.start.year == read.stats.end.year == 2026


def test_a_parquet_file_with_native_timestamps_and_a_bad_row(tmp_path: Path):
    """The per-row checks of a Parquet batch see its native timestamps as ISO strings, so one bad row costs one
    row (not the batch)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = records(80, 8)
    for row in rows:
        row["timestamp"] = pd.Timestamp(row["timestamp"]).to_pydatetime()
    rows[5] = {**rows[5], "scores": None}  # a served row without scores
    partition = tmp_path / "logs" / "date=2026-11-20"
    partition.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), partition / "part.parquet")
    read = read_logs(tmp_path / "logs")
    assert (read.stats.lines, read.stats.malformed, read.stats.rows) == (80, 1, 79)
