"""Writing inference logs by day and reading a window of them back as one flat table, in bounded memory.

Writing appends JSON lines to `<root>/date=YYYY-MM-DD/<name>-<pid>.jsonl` (one file per process and day, so
writers never interleave). Reading takes a file or a folder (the `*.jsonl` / `*.parquet` files inside its day
partitions, plus the delayed labels under `labels/`), checks the schema version, skips and counts malformed
lines, joins the delayed labels and returns one row per scored item with the columns named in
`monitoring.schema`.

Reading streams: JSON Lines files are read in chunks of about `CHUNK_BYTES` (Parquet files by row group
batches); a line longer than `MAX_LOG_LINE_BYTES` is skipped and counted without ever being held whole. Each
chunk goes through pyarrow's multithreaded JSON reader; a chunk it cannot read, or whose columns have other types
than the schema's, is checked line by line (`monitoring.log_records.check_record`), so one bad line costs only
that line. Counts, flag rates, labeled rows, the time range and the model versions are taken over every row;
the rows themselves are kept in a seeded reservoir of at most `row_budget` rows (`monitoring.reservoir`), so
that memory stays flat however large the window is, and the drift check's distribution tests and embeddings run
on that uniform sample.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from monitoring.log_records import (
    FIELD_KINDS,
    canonical_columns,
    check_record,
    checked_table,
    columns_from_records,
    columns_from_table,
    flag_counts,
)
from monitoring.reservoir import Reservoir
from monitoring.schema import (
    DEFAULT_ROW_BUDGET,
    FLAG_PREFIX,
    LABEL_PREFIX,
    LABELS_DIR,
    MAX_LOG_LINE_BYTES,
    PARTITION_PREFIX,
    SCORE_PREFIX,
    make_record,
    partition_name,
)

__all__ = [
    "DEFAULT_MAX_MALFORMED_SHARE",
    "FIELD_KINDS",
    "InferenceLog",
    "LogReadError",
    "LogWindow",
    "LogWriter",
    "ReadStats",
    "log_files",
    "read_logs",
]

MALFORMED_EXAMPLES = 5
DEFAULT_MAX_MALFORMED_SHARE = 0.05
CHUNK_BYTES = 32 << 20
# Model versions / names counted per window, so that a hostile log cannot grow the counts.
MAX_DISTINCT_VERSIONS = 1000
_NS_MIN, _NS_MAX = np.datetime64("1678-01-01", "s"), np.datetime64("2262-04-11", "s")
PARQUET_BATCH_ROWS = 50_000


class LogReadError(ValueError):
    """A window of logs cannot be used (too many malformed lines, nothing to read)."""


class InferenceLog:
    """The serving client's sink (`ContentSafetyClient(inference_log=...)`): one inference-log record per served
    item (`monitoring.schema.make_record`), partitioned by day. Thread-safe.

    Records hold the request id, time, model version, text descriptors, language and SHA-256 (the raw text only
    with `keep_text=True`), the image's header fields and SHA-256 (never its bytes), the projected text and
    image embeddings, per-policy scores and flags, the action and latency, or the error of a failed request.

    Args:
        root: The log folder; files go to `root/date=YYYY-MM-DD/<name>-<pid>.jsonl`.
        keep_text: Also log raw texts (off by default: descriptors and a hash are enough for drift checks).
        name: File name prefix.
    """

    def __init__(self, root: str | Path, keep_text: bool = False, name: str = "inference") -> None:
        self.root = Path(root)
        self.keep_text = keep_text
        self._writer = LogWriter(self.root, name)

    def __call__(self, served: list[dict[str, Any]]) -> None:
        self._writer.write([make_record(**item, keep_text=self.keep_text) for item in served])


class LogWriter:
    """Appends schema records to day partitions under `root`. Thread-safe; one file per process and day.

    Args:
        root: The log folder.
        name: File name prefix (the process id is appended).
    """

    def __init__(self, root: str | Path, name: str = "part") -> None:
        self.root = Path(root)
        self.name = name
        self._lock = threading.Lock()

    def path_for(self, timestamp: str) -> Path:
        """The file that records with this timestamp go to."""
        return self.root / partition_name(timestamp) / f"{self.name}-{os.getpid()}.jsonl"

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        """Appends records (dicts in the log schema) to their day's file."""
        by_file: dict[Path, list[str]] = defaultdict(list)
        for record in records:
            line = json.dumps(
                record, ensure_ascii=False, allow_nan=False
            )  # key order = the model's policy order
            by_file[self.path_for(record["timestamp"])].append(line + "\n")
        with self._lock:
            for path, lines in by_file.items():
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a", encoding="utf-8") as handle:
                    handle.write("".join(lines))


@dataclass
class ReadStats:
    """What reading a window found besides the rows. Every figure is over every line and row read, also when
    `LogWindow.frame` holds only a sample of the rows (`sampled_rows` of `rows`)."""

    files: int = 0
    lines: int = 0
    rows: int = 0
    malformed: int = 0
    malformed_examples: list[str] = field(default_factory=list)
    failed_requests: int = 0
    outside_window: int = 0
    labeled_rows: int = 0
    sampled_rows: int = 0
    row_budget: int | None = None
    flag_counts: dict[str, list[int]] = field(default_factory=dict)  # policy: [flagged, rows with a flag]
    start: Any = None  # pandas.Timestamp of the first and last row
    end: Any = None
    model_versions: Counter = field(default_factory=Counter)
    model_names: Counter = field(default_factory=Counter)

    @property
    def malformed_share(self) -> float:
        return self.malformed / self.lines if self.lines else 0.0

    @property
    def sampled(self) -> bool:
        """Whether the frame is a sample (the window had more rows than the row budget)."""
        return self.sampled_rows < self.rows

    def malformed_line(self, where: str, problem: str) -> None:
        """Counts a skipped line, keeping the first few as examples."""
        self.malformed += 1
        if len(self.malformed_examples) < MALFORMED_EXAMPLES:
            self.malformed_examples.append(f"{where}: {problem}")

    def to_dict(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "files": self.files,
            "lines": self.lines,
            "rows": self.rows,
            "sampled_rows": self.sampled_rows,
            "row_budget": self.row_budget,
            "malformed_lines": self.malformed,
            "malformed_share": round(self.malformed_share, 6),
            "malformed_examples": self.malformed_examples,
            "failed_requests": self.failed_requests,
            "outside_window": self.outside_window,
            "labeled_rows": self.labeled_rows,
            "flag_rates": {
                policy: round(flagged / counted, 6) if counted else None
                for policy, (flagged, counted) in self.flag_counts.items()
            },
        }
        if self.rows:
            info["start"] = self.start.isoformat()
            info["end"] = self.end.isoformat()
            info["model_versions"] = [str(v) for v, _ in self.model_versions.most_common()]
            info["model_name"] = self.model_names.most_common(1)[0][0] if self.model_names else None
        return info


@dataclass
class LogWindow:
    """A window of logs as a flat table (`frame`: every row, or a seeded uniform sample of `stats.row_budget`
    rows when the window has more) and what reading it found over every row (`stats`)."""

    frame: Any  # pandas.DataFrame
    stats: ReadStats
    policies: list[str]
    path: Path


def log_files(path: Path) -> list[Path]:
    """The log files under `path` (or `path` itself), sorted: only those inside `date=YYYY-MM-DD/` partitions,
    so that a dataset manifest or other JSON Lines beside the logs is never read as log lines.

    Raises:
        LogReadError: When a folder holds `.jsonl`/`.parquet` files but no partition (names the folder to pass).
    """
    if path.is_file():
        return [path]
    files, others = [], []
    for pattern in ("*.jsonl", "*.parquet"):
        for found in path.rglob(pattern):
            folders = found.relative_to(path).parts[:-1]
            if LABELS_DIR in folders:
                continue
            partitioned = any(part.startswith(PARTITION_PREFIX) for part in folders)
            (files if partitioned else others).append(found)
    if not files and others:
        roots = sorted({p.parent for p in path.rglob(f"{PARTITION_PREFIX}*") if p.is_dir()})
        hint = f"; the logs here are under {roots[0]}: pass that folder" if roots else ""
        raise LogReadError(
            f"{path} holds no log partitions ({PARTITION_PREFIX}YYYY-MM-DD/), only {len(others)} other file(s) "
            f"such as {others[0].relative_to(path)}, which are not inference logs{hint}"
        )
    return sorted(files)


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


def _json_chunks(path: Path, stats: ReadStats, max_line_bytes: int) -> Iterator[dict[str, np.ndarray]]:
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


def _parquet_chunks(path: Path, stats: ReadStats) -> Iterator[dict[str, np.ndarray]]:
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


def _labels(root: Path, max_line_bytes: int) -> dict[tuple[str, int], dict[str, Any]]:
    """The delayed labels under `root/labels/` by (request id, item); a later line wins."""
    folder = root / LABELS_DIR
    labels: dict[tuple[str, int], dict[str, Any]] = {}
    if not root.is_dir() or not folder.is_dir():
        return labels
    for path in sorted(folder.rglob("*.jsonl")):
        for _, line in _bounded_lines(path, max_line_bytes):
            entry = None if line is None else _parsed(line)
            try:
                key = (str(entry["request_id"]), int(entry["item"]))
                values = {str(k): float(v) for k, v in dict(entry["labels"]).items() if v in (0, 1)}
            except (KeyError, TypeError, ValueError):
                continue  # a broken label line loses only that label
            labels[key] = values
    return labels


def _join_labels(columns: dict[str, np.ndarray], labels: dict, policies: list[str]) -> None:
    """Fills `label_<policy>` columns of a chunk from the delayed labels (a label file wins over an inline label)."""
    if not labels:
        return
    rows = len(columns["item"])
    for policy in policies:
        columns.setdefault(LABEL_PREFIX + policy, np.full(rows, np.nan))
    for row, key in enumerate(zip(columns["request_id"], columns["item"].tolist(), strict=True)):
        entry = labels.get(key)
        if entry:
            for policy in policies:
                if policy in entry:
                    columns[LABEL_PREFIX + policy][row] = entry[policy]


def _take(columns: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    return columns if keep.all() else {name: values[keep] for name, values in columns.items()}


def _timestamps(columns: dict[str, np.ndarray], stats: ReadStats, path: Path) -> np.ndarray:
    """The chunk's timestamps as UTC datetime64; rows whose timestamp pandas cannot parse are counted as
    malformed and marked NaT."""
    import pandas as pd

    raw = columns["timestamp"]
    if (
        raw.dtype.kind == "M"
    ):  # pyarrow parsed them: outside pandas' nanosecond range they would wrap silently
        seconds = raw.astype("datetime64[s]")
        outside = (seconds < _NS_MIN) | (seconds > _NS_MAX)
        raw = raw.astype(object)
        raw[outside] = "out of range"
    stamps = pd.to_datetime(raw, utc=True, format="ISO8601", errors="coerce")
    bad = np.asarray(stamps.isna())
    for row in np.flatnonzero(bad):
        stats.malformed_line(
            f"{path} request {columns['request_id'][row]!r}", f"timestamp {raw[row]!r} is not ISO 8601"
        )
    return stamps.tz_convert(None).to_numpy(dtype="datetime64[ns]")


def _window_rows(
    columns: dict[str, np.ndarray],
    path: Path,
    stats: ReadStats,
    since: datetime | None,
    until: datetime | None,
) -> dict[str, np.ndarray]:
    """The chunk's served rows inside the window (failed requests, bad timestamps and outside rows counted)."""
    import pandas as pd

    stamps = _timestamps(columns, stats, path)
    valid = ~np.isnat(stamps)
    failed = columns.pop("_failed").astype(bool)
    stats.failed_requests += int((failed & valid).sum())
    keep = valid & ~failed
    inside = keep.copy()
    if since is not None:
        inside &= stamps >= pd.Timestamp(since).tz_convert("UTC").tz_localize(None).to_datetime64()
    if until is not None:
        inside &= stamps < pd.Timestamp(until).tz_convert("UTC").tz_localize(None).to_datetime64()
    stats.outside_window += int((keep & ~inside).sum())
    columns["timestamp"] = stamps
    return _take(columns, inside)


def _count(columns: dict[str, np.ndarray], stats: ReadStats, policies: list[str]) -> None:
    """Adds a chunk's kept rows to the exact figures of `stats`."""
    import pandas as pd

    rows = len(columns["item"])
    if not rows:
        return
    stats.rows += rows
    for policy in policies:
        flags = columns.get(FLAG_PREFIX + policy)
        if flags is not None:
            flagged, counted = flag_counts(flags)
            totals = stats.flag_counts.setdefault(policy, [0, 0])
            totals[0] += flagged
            totals[1] += counted
    labels = [columns[LABEL_PREFIX + p] for p in policies if LABEL_PREFIX + p in columns]
    if labels:
        stats.labeled_rows += int((~np.isnan(np.vstack(labels))).any(axis=0).sum())
    first, last = (
        pd.Timestamp(columns["timestamp"].min(), tz="UTC"),
        pd.Timestamp(columns["timestamp"].max(), tz="UTC"),
    )
    stats.start = first if stats.start is None else min(stats.start, first)
    stats.end = last if stats.end is None else max(stats.end, last)
    _add_counts(stats.model_versions, pd.Series(columns["model_version"]).astype(str))
    if "model_name" in columns:
        _add_counts(stats.model_names, pd.Series(columns["model_name"]).dropna().astype(str))


def _add_counts(counter: Counter, values) -> None:
    """Counts values, new ones only while fewer than `MAX_DISTINCT_VERSIONS` are known (the rest as "other")."""
    for value, count in values.value_counts().items():
        key = value if value in counter or len(counter) < MAX_DISTINCT_VERSIONS else "other"
        counter[key] += int(count)


def read_logs(
    path: str | Path,
    since: datetime | None = None,
    until: datetime | None = None,
    max_malformed_share: float = DEFAULT_MAX_MALFORMED_SHARE,
    row_budget: int | None = DEFAULT_ROW_BUDGET,
    seed: int = 0,
    max_line_bytes: int = MAX_LOG_LINE_BYTES,
) -> LogWindow:
    """Reads a window of inference logs into one flat table, streaming.

    Args:
        path: A log file or a log folder (day partitions below it).
        since: Keep rows at or after this time (timezone-aware).
        until: Keep rows before this time.
        max_malformed_share: Fail when more than this share of lines is malformed.
        row_budget: Most rows kept in `frame` (a seeded uniform sample above it; None keeps every row). The
            counts in `stats` are over every row either way.
        seed: Seed of that sample.
        max_line_bytes: Longer lines are skipped and counted as malformed.

    Returns:
        The window. Failed requests are counted and dropped; delayed labels are joined.

    Raises:
        LogReadError: When the path does not exist or too many lines are malformed.
        LogSchemaError: When a record has another schema version.
    """
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise LogReadError(f"{path} does not exist")
    stats = ReadStats(row_budget=row_budget)
    labels = _labels(path, max_line_bytes)
    reservoir = Reservoir(row_budget, seed)
    policies: list[str] = []
    for file in log_files(path):
        stats.files += 1
        chunks = (
            _parquet_chunks(file, stats)
            if file.suffix == ".parquet"
            else _json_chunks(file, stats, max_line_bytes)
        )
        for raw in chunks:
            if not len(raw.get("_failed", ())):
                continue
            columns = _window_rows(canonical_columns(raw), file, stats, since, until)
            del raw
            chunk_policies = [c.removeprefix(SCORE_PREFIX) for c in columns if c.startswith(SCORE_PREFIX)]
            policies += [p for p in chunk_policies if p not in policies]
            _join_labels(columns, labels, chunk_policies)
            _count(columns, stats, chunk_policies)
            reservoir.add(columns)
            del columns
    if stats.lines and stats.malformed_share > max_malformed_share:
        raise LogReadError(
            f"{stats.malformed} of {stats.lines} lines in {path} are malformed "
            f"({stats.malformed_share:.1%} > the allowed {max_malformed_share:.1%}); for example:\n  "
            + "\n  ".join(stats.malformed_examples)
        )
    kept = reservoir.columns()
    if not kept or not len(kept["item"]):
        return LogWindow(
            frame=pd.DataFrame(), stats=stats, policies=policies if stats.rows else [], path=path
        )
    frame = pd.DataFrame(kept)
    del kept, reservoir
    frame["timestamp"] = frame["timestamp"].dt.tz_localize("UTC")
    frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    stats.sampled_rows = len(frame)
    return LogWindow(frame=frame, stats=stats, policies=policies, path=path)
