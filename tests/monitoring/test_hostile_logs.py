"""A drift window with hostile and broken log lines: every bad line is skipped and counted, never raised, and
no markup from a log value reaches the report."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from monitoring.log_reader import read_logs
from monitoring.log_records import FIELD_KINDS
from tests.monitoring.records import START, records, write

MARKUP = "<img src=x onerror=alert(1)>"
WRONG = {"int": "7", "number": "fast", "bool": "yes", "str": 12, "version": [3], "timestamp": 12}
# Fields whose wrong type used to raise out of read_logs (a traceback from `tns drift`), before the typed checks.
BROKEN_NESTED = {
    "flags": {"spam": "maybe"},
    "labels": {"spam": "spam"},
    "scores": {"spam": [0.3]},
    "text_embedding": ["x"] * 16,
    "timestamp": 20261121,
}


def _hostile_window(folder: Path) -> tuple[Path, int]:
    rows = records(1000, 2, start=START + timedelta(days=1))
    lines = [json.dumps(row) for row in rows]
    bad = 0
    for index, (name, kind) in enumerate([*FIELD_KINDS.items(), *((k, None) for k in BROKEN_NESTED)]):
        row = dict(rows[index])
        row[name] = BROKEN_NESTED[name] if kind is None else WRONG[kind.rstrip("?")]
        lines[index] = json.dumps(row)
        bad += 1
    for index in range(100, 140):  # markup in categorical fields: valid strings, kept, escaped when shown
        row = dict(rows[index])
        row["text_language"] = MARKUP
        row["image_format"] = f"{MARKUP}</td><script>alert(2)</script>"
        lines[index] = json.dumps(row)
    lines[200] = "{" + "a" * 1_000_000  # a huge line that is not JSON (scaled down from 30 MB: a benchmark)
    bad += 1
    partition = folder / "date=2026-11-21"
    partition.mkdir(parents=True)
    (partition / "part.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder, bad


def test_every_wrong_typed_field_is_skipped_and_counted(tmp_path: Path):
    folder, bad = _hostile_window(tmp_path / "current")
    window = read_logs(folder, max_malformed_share=0.1)
    assert window.stats.lines == 1000 and window.stats.malformed == bad
    assert len(window.frame) == 1000 - bad
    assert any("item is not of type int" in e for e in window.stats.malformed_examples)


def test_a_hostile_window_ends_in_a_verdict_without_markup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from core.config.drift import DriftConfig
    from monitoring.check import DriftRequest, run_drift_check

    current, bad = _hostile_window(tmp_path / "current")
    monkeypatch.setenv("TNS_HOME", str(tmp_path / "home"))
    outcome = run_drift_check(
        DriftRequest(
            reference=write(tmp_path / "reference", records(600, 1)),
            current=current,
            out_dir=tmp_path / "out",
            workspace=tmp_path / "workspace",
            max_malformed_share=0.1,
            save_snapshot=False,
            config=DriftConfig(),
            command="tns drift --tracking-uri https://svc:topsecret@mlflow.example.com",
        )
    )
    assert outcome.exit_code in (0, 10)
    assert outcome.summary["current"]["malformed_lines"] == bad
    report = (outcome.out_dir / "report.html").read_text(encoding="utf-8")
    assert "<img src=x" not in report and "<script>alert" not in report
    assert "&lt;img src=x onerror=alert(1)&gt;" in report
    assert "topsecret" not in report and "topsecret" not in json.dumps(outcome.summary)


def test_only_log_partitions_are_read_as_logs(tmp_path: Path):
    """Finding: `tns drift --current OUT` on a `tns traffic simulate` folder read `dataset/manifest.jsonl` as log
    lines and failed at 23% malformed."""
    from monitoring.log_reader import LogReadError

    out = tmp_path / "simulation"
    write(out / "logs", records(300, 3))
    (out / "dataset").mkdir()
    (out / "dataset" / "manifest.jsonl").write_text('{"id": "a", "text": "x", "spam": 1}\n' * 100)
    window = read_logs(out)
    assert (window.stats.lines, window.stats.malformed, len(window.frame)) == (300, 0, 300)
    with pytest.raises(LogReadError, match=r"holds no log partitions .* such as manifest.jsonl"):
        read_logs(out / "dataset")


def test_well_formed_logs_take_the_fast_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The typed checks must not send every file to the line reader (pyarrow reads timestamps as timestamps)."""
    from monitoring import log_chunks

    def per_record(record):
        raise AssertionError("a well-formed file went through the per-record checks")

    write(tmp_path / "logs", records(200, 4, label_rate=0.3))  # labels on some rows, null on the others
    monkeypatch.setattr(log_chunks, "check_record", per_record)
    window = read_logs(tmp_path / "logs")
    assert window.stats.rows == 200 and window.stats.malformed == 0
