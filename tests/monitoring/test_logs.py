"""Writing and reading inference logs: partitions, round trip, malformed lines, schema versions, labels."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from core.common.constants import DEFAULT_POLICIES, EMBEDDING_DIM
from monitoring.log_reader import LogReadError, read_logs
from monitoring.schema import (
    LANGUAGE_UNKNOWN,
    LogSchemaError,
    detect_language,
    embedding_columns,
    image_features,
    make_record,
    text_features,
)
from tests.monitoring.records import START, png, records, write


def _lines(root: Path) -> list[Path]:
    return sorted(root.rglob("*.jsonl"))


def test_records_are_partitioned_by_day_and_read_back(tmp_path: Path):
    rows = records(3000, seed=1)  # one minute apart: 2026-11-20 and 2026-11-21 (and 22)
    write(tmp_path, rows)
    days = sorted(p.parent.name for p in _lines(tmp_path))
    assert days == ["date=2026-11-20", "date=2026-11-21", "date=2026-11-22"]
    window = read_logs(tmp_path)
    assert window.stats.rows == 3000 and window.stats.malformed == 0 and window.stats.files == 3
    assert window.policies == list(DEFAULT_POLICIES)
    frame = window.frame
    assert list(frame["request_id"][:2]) == ["r1-0", "r1-1"]  # sorted by time
    first = rows[0]
    for policy in DEFAULT_POLICIES:
        assert frame.loc[0, f"score_{policy}"] == pytest.approx(first["scores"][policy], abs=1e-6)
        assert frame.loc[0, f"flag_{policy}"] == float(first["flags"][policy])
    text = frame[embedding_columns("text_embedding_")].to_numpy()
    expected = np.asarray([r["text_embedding"] or [np.nan] * EMBEDDING_DIM for r in rows], dtype=np.float32)
    np.testing.assert_allclose(text, expected, rtol=0, atol=1e-5)
    assert frame["text_length"].iloc[0] == first["text_length"]


def test_since_and_until_select_a_window(tmp_path: Path):
    write(tmp_path, records(600, seed=2))
    window = read_logs(tmp_path, since=START + timedelta(minutes=100), until=START + timedelta(minutes=200))
    assert window.stats.rows == 100 and window.stats.outside_window == 500


def test_malformed_lines_are_skipped_and_counted(tmp_path: Path):
    write(tmp_path, records(200, seed=3))
    (log,) = _lines(tmp_path)
    good = json.loads(log.read_text(encoding="utf-8").splitlines()[0])
    bad = [
        "{not json",
        json.dumps([1, 2, 3]),
        json.dumps({"schema_version": 1, "request_id": "x"}),  # missing fields
        json.dumps({**good, "text_embedding": [0.0, 1.0]}),  # wrong dimension
        json.dumps({**good, "scores": {"hate": "high"}}),
    ]
    with log.open("a", encoding="utf-8") as handle:
        handle.write("\n".join(bad) + "\n")
    window = read_logs(tmp_path)
    assert window.stats.rows == 200 and window.stats.malformed == 5 and window.stats.lines == 205
    assert any("not JSON" in example for example in window.stats.malformed_examples)
    assert all(str(log) in example for example in window.stats.malformed_examples)
    assert "text_embedding is not a list of 16" in " ".join(window.stats.malformed_examples)


def test_too_many_malformed_lines_fail_with_the_counts(tmp_path: Path):
    write(tmp_path, records(50, seed=4))
    (log,) = _lines(tmp_path)
    with log.open("a", encoding="utf-8") as handle:
        handle.write("garbage\n" * 10)
    with pytest.raises(LogReadError, match=r"10 of 60 lines .* are malformed \(16.7% > the allowed 5.0%\)"):
        read_logs(tmp_path)
    assert read_logs(tmp_path, max_malformed_share=0.2).stats.malformed == 10


@pytest.mark.parametrize("mixed", [False, True], ids=["all-rows", "one-row-among-good"])
def test_schema_version_mismatch_is_a_clear_error(tmp_path: Path, mixed: bool):
    rows = records(20, seed=5)
    if mixed:
        rows[7] = {**rows[7], "schema_version": 2}
    else:
        rows = [{**row, "schema_version": 2} for row in rows]
    write(tmp_path, rows)
    with pytest.raises(LogSchemaError, match="log schema version 2.*reads schema version 1 only"):
        read_logs(tmp_path)


def test_failed_requests_are_counted_not_compared(tmp_path: Path):
    rows = records(30, seed=6)
    failed = make_record(
        request_id="failed",
        item=0,
        timestamp=START,
        model_name="content-safety",
        model_version="3",
        text="hello",
        image=None,
        scores=None,
        flags=None,
        action=None,
        error="ServerUnavailableError: down",
    )
    write(tmp_path, [*rows, failed])
    window = read_logs(tmp_path)
    assert window.stats.rows == 30 and window.stats.failed_requests == 1


def test_delayed_labels_are_joined(tmp_path: Path):
    rows = records(40, seed=7)
    write(tmp_path, rows)
    (tmp_path / "labels").mkdir()
    labels = [
        {"request_id": rows[i]["request_id"], "item": 0, "labels": {"spam": 1, "hate": 0}} for i in (3, 9)
    ]
    (tmp_path / "labels" / "moderation.jsonl").write_text(
        "".join(json.dumps(line) + "\n" for line in labels) + "broken line\n", encoding="utf-8"
    )
    window = read_logs(tmp_path)
    frame = window.frame.set_index("request_id")
    assert frame.loc[rows[3]["request_id"], "label_spam"] == 1.0
    assert frame.loc[rows[9]["request_id"], "label_hate"] == 0.0
    assert np.isnan(frame.loc[rows[4]["request_id"], "label_spam"])
    assert window.stats.labeled_rows == 2 and window.stats.rows == 40  # label files are not log rows


def test_missing_path_and_empty_folder(tmp_path: Path):
    with pytest.raises(LogReadError, match="does not exist"):
        read_logs(tmp_path / "nope")
    window = read_logs(tmp_path)
    assert window.frame.empty and window.stats.rows == 0


def test_text_and_image_features():
    features = text_features("Check THIS out 😂 https://bit.ly/3xYz now")
    assert features["text_url_count"] == 1 and features["text_emoji_count"] == 1
    assert features["text_words"] == 6 and features["text_length"] == len(
        "Check THIS out 😂 https://bit.ly/3xYz now"
    )
    assert 0 < features["text_upper_share"] < 1 and features["text_language"] == "en"
    assert text_features(None)["text_present"] is False
    assert detect_language("mira quién acaba de llegar") == "es"
    assert detect_language("die neuen nachbarn sind da") == "de"
    assert detect_language("xq zzt brrr") == LANGUAGE_UNKNOWN
    image = image_features(png(128, 96, "JPEG"))
    assert (image["image_width"], image["image_height"], image["image_format"]) == (128, 96, "JPEG")
    assert image_features(b"not an image")["image_format"] == "unreadable"
    assert image_features(None) == {
        "image_present": False,
        "image_width": None,
        "image_height": None,
        "image_format": None,
        "image_bytes": 0,
        "image_sha256": None,
    }


def test_header_only_bomb_is_described_without_decoding():
    from tests.images import png_header_only

    features = image_features(png_header_only(20000, 20000))
    assert features["image_format"] == "too_large" and features["image_width"] is None
    assert features["image_present"] and features["image_bytes"] > 0
