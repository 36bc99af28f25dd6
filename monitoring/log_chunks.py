"""Reading one inference-log file as column chunks, in bounded memory, and the delayed labels beside the logs.

JSON Lines files are read in chunks of about `CHUNK_BYTES` (Parquet files by row group batches); a line longer
than `MAX_LOG_LINE_BYTES` is skipped and counted without ever being held whole. Each chunk goes through pyarrow's
multithreaded JSON reader; a chunk it cannot read, or whose columns have other types than the schema's, is
checked line by line (`monitoring.log_records.check_record`), so one bad line costs only that line. Skipped lines
are counted in the `ReadStats` of `monitoring.log_reader.read_logs`, which assembles the window.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from monitoring.log_records import check_record, checked_table, columns_from_records, columns_from_table
from monitoring.schema import LABELS_DIR

if TYPE_CHECKING:
    from monitoring.log_reader import ReadStats

__all__ = ["CHUNK_BYTES", "PARQUET_BATCH_ROWS", "json_chunks", "parquet_chunks", "read_labels"]

CHUNK_BYTES = 32 << 20
PARQUET_BATCH_ROWS = 50_000


def _bounded_lines(path: Path, max_line_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number, line) for each non-blank line of `path`; the line is None when it is longer than
    `max_line_bytes` (its bytes are skipped in pieces, never held whole)."""
    with path.open("rb") as handle:
        number = 0
        while line := handle.readline(max_line_bytes + 1):
            number += 1
            if len(line) - line.endswith(b"\n") > max_line_bytes:
                while not line.endswith(b"\n") and (line := handle.readline(1 << 20)):
                    pass
                yield number, None
            elif line.strip():
                yield number, line


def _parsed(line: bytes) -> Any:
    """A line as JSON, or the reason it is not."""
    try:
        return json.loads(line.decode("utf-8", errors="replace"))
    except json.JSONDecodeError as error:
        return _NotJson(f"not JSON ({error.msg})")
    except RecursionError:
        return _NotJson("not JSON (nested too deeply)")


@dataclass(frozen=True)
class _NotJson:
    problem: str


def _checked_records(items: Iterable[tuple[str, Any]], stats: ReadStats) -> list[dict[str, Any]]:
    """The records of (where, parsed value) pairs that `check_record` passes; the others are counted."""
    records = []
    for where, value in items:
        problem = value.problem if isinstance(value, _NotJson) else check_record(value)
        if problem:
            stats.malformed_line(where, problem)
        else:
            records.append(value)
    return records


def json_chunks(path: Path, stats: ReadStats, max_line_bytes: int) -> Iterator[dict[str, np.ndarray]]:
    """The columns of a JSON Lines file, chunk by chunk."""
    chunk: list[tuple[int, bytes]] = []
    size = 0
    for number, line in _bounded_lines(path, max_line_bytes):
        stats.lines += 1
        if line is None:
            stats.malformed_line(
                f"{path}:{number}",
                f"longer than {max_line_bytes} bytes (monitoring.schema.MAX_LOG_LINE_BYTES)",
            )
            continue
        chunk.append((number, line))
        size += len(line)
        if size >= CHUNK_BYTES:
            yield _json_chunk_columns(chunk, path, stats, max_line_bytes)
            chunk, size = [], 0
    if chunk:
        yield _json_chunk_columns(chunk, path, stats, max_line_bytes)


def _json_chunk_columns(
    chunk: list[tuple[int, bytes]], path: Path, stats: ReadStats, max_line_bytes: int
) -> dict[str, np.ndarray]:
    import pyarrow as pa
    import pyarrow.json as pa_json

    data = b"".join(line if line.endswith(b"\n") else line + b"\n" for _, line in chunk)
    try:
        table = pa_json.read_json(
            pa.BufferReader(data),
            read_options=pa_json.ReadOptions(block_size=max(1 << 20, max_line_bytes + 2)),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError):
        table = None
    del data
    table = checked_table(table) if table is not None else None
    columns = columns_from_table(table) if table is not None else None
    if columns is None:
        records = _checked_records(((f"{path}:{n}", _parsed(line)) for n, line in chunk), stats)
        columns = columns_from_records(records)
    return columns


def parquet_chunks(path: Path, stats: ReadStats) -> Iterator[dict[str, np.ndarray]]:
    """The columns of a Parquet file, batch by batch."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=PARQUET_BATCH_ROWS)
        first_row = 0
        for batch in batches:
            stats.lines += batch.num_rows
            table = checked_table(pa.Table.from_batches([batch]))
            columns = columns_from_table(table) if table is not None else None
            if columns is None:
                rows = enumerate(map(_iso_timestamp, batch.to_pylist()), start=first_row)
                columns = columns_from_records(
                    _checked_records(((f"{path}:row {i}", r) for i, r in rows), stats)
                )
            first_row += batch.num_rows
            yield columns
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OSError) as error:
        stats.lines += 1
        stats.malformed_line(str(path), f"not a readable Parquet file ({error})")


def _iso_timestamp(record: dict[str, Any]) -> dict[str, Any]:
    """A Parquet row with a native timestamp column, its timestamp as the ISO string JSON lines carry."""
    stamp = record.get("timestamp")
    if isinstance(stamp, datetime):
        record["timestamp"] = stamp.isoformat()
    return record


def read_label_entries(root: Path, max_line_bytes: int) -> list[dict[str, Any]]:
    """Every well-formed delayed-label line under `root/labels/`, in file order, with all its fields (`source`,
    `labeler`, `sampling`, ...) and `file`, the file it came from; `labels` holds the 0/1 values only."""
    folder = root / LABELS_DIR
    entries: list[dict[str, Any]] = []
    if not root.is_dir() or not folder.is_dir():
        return entries
    for path in sorted(folder.rglob("*.jsonl")):
        for _, line in _bounded_lines(path, max_line_bytes):
            entry = None if line is None else _parsed(line)
            try:
                key = (str(entry["request_id"]), int(entry["item"]))
                values = {str(k): float(v) for k, v in dict(entry["labels"]).items() if v in (0, 1)}
            except (KeyError, TypeError, ValueError):
                continue  # a broken label line loses only that label
            entries.append(
                {**entry, "request_id": key[0], "item": key[1], "labels": values, "file": str(path)}
            )
    return entries


def read_labels(root: Path, max_line_bytes: int) -> dict[tuple[str, int], dict[str, Any]]:
    """The delayed labels under `root/labels/` by (request id, item); a later line wins."""
    return {
        (entry["request_id"], entry["item"]): entry["labels"]
        for entry in read_label_entries(root, max_line_bytes)
    }
