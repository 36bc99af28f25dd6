"""Writing inference logs by day and reading a window of them back as one flat table.

Writing appends JSON lines to `<root>/date=YYYY-MM-DD/<name>-<pid>.jsonl` (one file per process and day, so
writers never interleave). Reading takes a file or a folder (every `*.jsonl` / `*.parquet` below it, except the
delayed-label files under `labels/`), checks the schema version, skips and counts malformed lines, joins the
delayed labels and returns one row per scored item with the columns named in `monitoring.schema`.

Files are read with pyarrow's multithreaded JSON reader; a file it cannot parse (a malformed line) is read again
line by line, so one bad line costs only that line.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from components.common.constants import EMBEDDING_DIM
from monitoring.schema import (
    FLAG_PREFIX,
    IMAGE_EMBEDDING_PREFIX,
    LABEL_PREFIX,
    LABELS_DIR,
    LOG_SCHEMA_VERSION,
    PARTITION_PREFIX,
    SCORE_PREFIX,
    TEXT_EMBEDDING_PREFIX,
    LogSchemaError,
    partition_name,
)

REQUIRED_FIELDS: tuple[str, ...] = ("schema_version", "request_id", "item", "timestamp", "model_version")
SCALAR_FIELDS: tuple[str, ...] = (
    "request_id",
    "item",
    "timestamp",
    "model_name",
    "model_version",
    "text_present",
    "text_length",
    "text_words",
    "text_non_letter_share",
    "text_upper_share",
    "text_url_count",
    "text_emoji_count",
    "text_language",
    "text_sha256",
    "text",
    "image_present",
    "image_width",
    "image_height",
    "image_format",
    "image_bytes",
    "action",
    "latency_ms",
    "error",
)
# The JSON type of each scalar field (the schema table of `monitoring.schema`): "int" excludes booleans,
# "number" is a finite int or float, "version" a str or int, "timestamp" an ISO 8601 str (which pyarrow may read
# as a timestamp); a trailing "?" admits null.
FIELD_KINDS: dict[str, str] = {
    "schema_version": "int",
    "request_id": "str",
    "item": "int",
    "timestamp": "timestamp",
    "model_name": "str?",
    "model_version": "version",
    "text_present": "bool?",
    "text_length": "int?",
    "text_words": "int?",
    "text_non_letter_share": "number?",
    "text_upper_share": "number?",
    "text_url_count": "int?",
    "text_emoji_count": "int?",
    "text_language": "str?",
    "text_sha256": "str?",
    "text": "str?",
    "image_present": "bool?",
    "image_width": "int?",
    "image_height": "int?",
    "image_format": "str?",
    "image_bytes": "int?",
    "image_sha256": "str?",
    "action": "str?",
    "latency_ms": "number?",
    "error": "str?",
}
MALFORMED_EXAMPLES = 5
DEFAULT_MAX_MALFORMED_SHARE = 0.05


class LogReadError(ValueError):
    """A window of logs cannot be used (too many malformed lines, nothing to read)."""


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
    """What reading a window found besides the rows."""

    files: int = 0
    lines: int = 0
    rows: int = 0
    malformed: int = 0
    malformed_examples: list[str] = field(default_factory=list)
    failed_requests: int = 0
    outside_window: int = 0
    labeled_rows: int = 0

    @property
    def malformed_share(self) -> float:
        return self.malformed / self.lines if self.lines else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "lines": self.lines,
            "rows": self.rows,
            "malformed_lines": self.malformed,
            "malformed_share": round(self.malformed_share, 6),
            "malformed_examples": self.malformed_examples,
            "failed_requests": self.failed_requests,
            "outside_window": self.outside_window,
            "labeled_rows": self.labeled_rows,
        }


@dataclass
class LogWindow:
    """A window of logs as a flat table (`frame`) and what reading it found (`stats`)."""

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


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _of_kind(value: Any, kind: str) -> bool:
    if value is None:
        return kind.endswith("?")
    kind = kind.rstrip("?")
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return _is_number(value)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "version":
        return isinstance(value, str | int) and not isinstance(value, bool)
    return isinstance(value, str)


def _mapping_problem(record: dict, name: str, valid: Callable[[Any], bool], what: str) -> str | None:
    value = record.get(name)
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) and valid(v) for k, v in value.items()):
        return f"{name} is not an object of {what}"
    return None


def _check_record(record: Any) -> str | None:
    """Why a parsed line is not a usable record (None when it is): every field is checked against its type, so
    that whatever a line holds it is either read or skipped and counted. Raises on a schema version mismatch."""
    if not isinstance(record, dict):
        return f"not a JSON object ({type(record).__name__})"
    missing = [name for name in REQUIRED_FIELDS if name not in record]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    if not _of_kind(record["schema_version"], "int"):
        return "schema_version is not of type int"
    if record["schema_version"] != LOG_SCHEMA_VERSION:
        raise LogSchemaError(
            f"log schema version {record['schema_version']!r} (request {record.get('request_id')!r}); this "
            f"version of tns reads schema version {LOG_SCHEMA_VERSION} only"
        )
    for name, kind in FIELD_KINDS.items():
        if not _of_kind(record.get(name), kind):
            return f"{name} is not of type {kind.rstrip('?')}" + (" or null" if kind.endswith("?") else "")
    if not record.get("error") and record.get("scores") is None:
        return "scores missing on a served row"
    problem = (
        _mapping_problem(record, "scores", _is_number, "finite numbers")
        or _mapping_problem(record, "flags", lambda v: isinstance(v, bool), "booleans")
        or _mapping_problem(record, "labels", lambda v: v is None or (_is_number(v) and v in (0, 1)), "0/1")
    )
    if problem:
        return problem
    for name in ("text_embedding", "image_embedding"):
        value = record.get(name)
        if value is not None and (
            not isinstance(value, list) or len(value) != EMBEDDING_DIM or not all(map(_is_number, value))
        ):
            return f"{name} is not a list of {EMBEDDING_DIM} finite numbers"
    try:
        datetime.fromisoformat(record["timestamp"])
    except ValueError:
        return f"timestamp {record['timestamp']!r} is not ISO 8601"
    return None


def _read_lines(path: Path, stats: ReadStats) -> list[dict[str, Any]]:
    """Line-by-line reading: keeps the good records, counts and samples the bad ones."""
    records = []
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            stats.lines += 1
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                problem: str | None = f"not JSON ({error.msg})"
            else:
                problem = _check_record(record)
            if problem:
                stats.malformed += 1
                if len(stats.malformed_examples) < MALFORMED_EXAMPLES:
                    stats.malformed_examples.append(f"{path}:{number}: {problem}")
                continue
            records.append(record)
    return records


def _read_fast(path: Path):
    """The whole file through pyarrow (None when pyarrow cannot read it or the columns are not as expected)."""
    import pyarrow as pa
    import pyarrow.json as pa_json
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path) if path.suffix == ".parquet" else pa_json.read_json(path)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError):
        return None
    names = set(table.column_names)
    if not set(REQUIRED_FIELDS) <= names or "scores" not in names:
        return None
    scores_type = table.schema.field("scores").type
    if not pa.types.is_struct(scores_type) or not all(
        pa.types.is_floating(f.type) or pa.types.is_integer(f.type) or pa.types.is_null(f.type)
        for f in scores_type
    ):
        return None
    for name in ("text_embedding", "image_embedding"):
        if name in names and not (
            pa.types.is_list(table.schema.field(name).type) or pa.types.is_null(table.schema.field(name).type)
        ):
            return None
        if name in names and pa.types.is_list(table.schema.field(name).type):
            element = table.schema.field(name).type.value_type
            if not (
                pa.types.is_floating(element) or pa.types.is_integer(element) or pa.types.is_null(element)
            ):
                return None
    if not _arrow_types_match(table):
        return None  # a column of another type than the schema's: the line reader names and counts the rows
    return table


def _arrow_types_match(table) -> bool:
    """Whether every column pyarrow inferred has the type `FIELD_KINDS` (and the flag and label objects) say."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kinds = {
        "int": pa.types.is_integer,
        "number": lambda t: pa.types.is_integer(t) or pa.types.is_floating(t),
        "bool": pa.types.is_boolean,
        "version": lambda t: pa.types.is_string(t) or pa.types.is_integer(t),
        "str": pa.types.is_string,
        "timestamp": lambda t: pa.types.is_string(t) or pa.types.is_timestamp(t),
    }
    schema = table.schema
    for name, kind in FIELD_KINDS.items():
        if name in schema.names:
            arrow_type = schema.field(name).type
            if not (pa.types.is_null(arrow_type) or kinds[kind.rstrip("?")](arrow_type)):
                return False
    for name, valid in (("flags", pa.types.is_boolean), ("labels", kinds["number"])):
        if name not in schema.names or pa.types.is_null(schema.field(name).type):
            continue
        arrow_type = schema.field(name).type
        if not pa.types.is_struct(arrow_type) or not all(
            valid(f.type) or pa.types.is_null(f.type) for f in arrow_type
        ):
            return False
    if "labels" in schema.names and pa.types.is_struct(schema.field("labels").type):
        labels = table.column("labels").combine_chunks()
        for index, sub in enumerate(labels.type):
            if pa.types.is_null(sub.type):
                continue
            values = labels.field(index)
            if pc.any(pc.invert(pc.is_in(values, value_set=pa.array([0, 1], type=sub.type)))).as_py():
                return False
    return True


def _columns_from_table(table, stats: ReadStats) -> dict[str, np.ndarray] | None:
    """Flat numpy columns of a pyarrow table of records (None when a row needs the line-by-line checks)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    versions = table.column("schema_version")
    if versions.null_count or not pa.types.is_integer(versions.type):
        return None
    wrong = pc.not_equal(versions, LOG_SCHEMA_VERSION)
    if pc.any(wrong).as_py():
        found = pc.filter(versions, wrong)[0].as_py()
        raise LogSchemaError(
            f"log schema version {found!r}; this version of tns reads schema version {LOG_SCHEMA_VERSION} only"
        )
    for name in REQUIRED_FIELDS:
        if table.column(name).null_count:
            return None
    errors = table.column("error") if "error" in table.column_names else None
    failed = (
        pc.fill_null(pc.greater(pc.utf8_length(errors), 0), False).to_numpy(zero_copy_only=False)
        if errors is not None and pa.types.is_string(errors.type)
        else np.zeros(table.num_rows, dtype=bool)
    )
    scores = table.column("scores").combine_chunks()
    if pc.any(pc.and_(pc.is_null(scores), pc.invert(pa.array(failed)))).as_py():
        return None  # a served row without scores: let the line reader name it
    columns: dict[str, np.ndarray] = {}
    for name in SCALAR_FIELDS:
        if name in table.column_names:
            column = table.column(name)
            columns[name] = (
                column.to_pandas(deduplicate_objects=True).to_numpy()
                if pa.types.is_string(column.type)
                else column.to_numpy(zero_copy_only=False)
            )
    for struct_name, prefix in (("scores", SCORE_PREFIX), ("flags", FLAG_PREFIX), ("labels", LABEL_PREFIX)):
        if struct_name not in table.column_names or not pa.types.is_struct(
            table.schema.field(struct_name).type
        ):
            continue
        array = table.column(struct_name).combine_chunks()
        for index, sub in enumerate(array.type):
            values = pc.if_else(pc.is_null(array), None, array.field(index))
            columns[prefix + sub.name] = values.to_numpy(zero_copy_only=False).astype(np.float64)
    for list_name, prefix in (
        ("text_embedding", TEXT_EMBEDDING_PREFIX),
        ("image_embedding", IMAGE_EMBEDDING_PREFIX),
    ):
        matrix = np.full((table.num_rows, EMBEDDING_DIM), np.nan, dtype=np.float32)
        if list_name in table.column_names and pa.types.is_list(table.schema.field(list_name).type):
            array = table.column(list_name).combine_chunks()
            present = pc.invert(pc.is_null(array)).to_numpy(zero_copy_only=False)
            lengths = pc.fill_null(pc.list_value_length(array), EMBEDDING_DIM).to_numpy(zero_copy_only=False)
            if (lengths != EMBEDDING_DIM).any():
                return None
            values = pc.list_flatten(array).to_numpy(zero_copy_only=False).astype(np.float32)
            matrix[present] = values.reshape(-1, EMBEDDING_DIM)
        for index in range(EMBEDDING_DIM):
            columns[f"{prefix}{index}"] = matrix[:, index]
    columns["_failed"] = failed
    stats.lines += table.num_rows
    return columns


def _columns_from_records(records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The same flat columns as `_columns_from_table`, from checked records."""
    n = len(records)
    columns: dict[str, np.ndarray] = {}
    for name in SCALAR_FIELDS:
        columns[name] = np.asarray([record.get(name) for record in records], dtype=object)
    for struct_name, prefix in (("scores", SCORE_PREFIX), ("flags", FLAG_PREFIX), ("labels", LABEL_PREFIX)):
        keys = list(dict.fromkeys(key for record in records for key in (record.get(struct_name) or {})))
        for key in keys:
            columns[prefix + key] = np.asarray(
                [float((record.get(struct_name) or {}).get(key, np.nan)) for record in records],
                dtype=np.float64,
            )
    for list_name, prefix in (
        ("text_embedding", TEXT_EMBEDDING_PREFIX),
        ("image_embedding", IMAGE_EMBEDDING_PREFIX),
    ):
        matrix = np.full((n, EMBEDDING_DIM), np.nan, dtype=np.float32)
        for row, record in enumerate(records):
            if record.get(list_name) is not None:
                matrix[row] = record[list_name]
        for index in range(EMBEDDING_DIM):
            columns[f"{prefix}{index}"] = matrix[:, index]
    columns["_failed"] = np.asarray([bool(record.get("error")) for record in records], dtype=bool)
    return columns


def _read_file(path: Path, stats: ReadStats) -> dict[str, np.ndarray]:
    table = _read_fast(path)
    columns = _columns_from_table(table, stats) if table is not None else None
    del table
    if columns is None:
        columns = _columns_from_records(_read_lines(path, stats))
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    return columns


def _labels(root: Path) -> Iterator[tuple[str, int, dict[str, int]]]:
    folder = root / LABELS_DIR
    if not root.is_dir() or not folder.is_dir():
        return
    for path in sorted(folder.rglob("*.jsonl")):
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                    yield str(entry["request_id"]), int(entry["item"]), dict(entry["labels"])
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue  # a broken label line loses only that label


def read_logs(
    path: str | Path,
    since: datetime | None = None,
    until: datetime | None = None,
    max_malformed_share: float = DEFAULT_MAX_MALFORMED_SHARE,
) -> LogWindow:
    """Reads a window of inference logs into one flat table.

    Args:
        path: A log file or a log folder (day partitions below it).
        since: Keep rows at or after this time (timezone-aware).
        until: Keep rows before this time.
        max_malformed_share: Fail when more than this share of lines is malformed.

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
    stats = ReadStats()
    frames = []
    for file in log_files(path):
        stats.files += 1
        part = _read_file(file, stats)
        if len(part.get("_failed", ())):
            frames.append(pd.DataFrame(part))
        del part
    if stats.lines and stats.malformed_share > max_malformed_share:
        raise LogReadError(
            f"{stats.malformed} of {stats.lines} lines in {path} are malformed "
            f"({stats.malformed_share:.1%} > the allowed {max_malformed_share:.1%}); for example:\n  "
            + "\n  ".join(stats.malformed_examples)
        )
    frame = pd.concat(frames, ignore_index=True, sort=False) if frames else pd.DataFrame()
    del frames
    if frame.empty:
        return LogWindow(frame=frame, stats=stats, policies=[], path=path)
    stats.failed_requests = int(frame["_failed"].sum())
    frame = frame.loc[~frame["_failed"].astype(bool)].drop(columns="_failed").reset_index(drop=True)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
    if since is not None or until is not None:
        keep = np.ones(len(frame), dtype=bool)
        if since is not None:
            keep &= (frame["timestamp"] >= pd.Timestamp(since)).to_numpy()
        if until is not None:
            keep &= (frame["timestamp"] < pd.Timestamp(until)).to_numpy()
        stats.outside_window = int((~keep).sum())
        frame = frame.loc[keep].reset_index(drop=True)
    policies = [c.removeprefix(SCORE_PREFIX) for c in frame.columns if c.startswith(SCORE_PREFIX)]
    _join_labels(frame, path, policies)
    label_columns = [LABEL_PREFIX + p for p in policies if LABEL_PREFIX + p in frame.columns]
    stats.labeled_rows = int(frame[label_columns].notna().any(axis=1).sum()) if label_columns else 0
    for flag in (FLAG_PREFIX + p for p in policies):
        if flag in frame.columns:
            frame[flag] = frame[flag].astype(np.float64)
    frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    stats.rows = len(frame)
    return LogWindow(frame=frame, stats=stats, policies=policies, path=path)


def _join_labels(frame, root: Path, policies: list[str]) -> None:
    """Fills `label_<policy>` columns from the delayed-label files (a label file wins over an inline label)."""
    labels = list(_labels(root))
    if not labels:
        return
    index = {
        (rid, int(item)): row
        for row, (rid, item) in enumerate(zip(frame["request_id"], frame["item"], strict=True))
    }
    for policy in policies:
        column = LABEL_PREFIX + policy
        if column not in frame.columns:
            frame[column] = np.nan
    positions = frame.columns.get_indexer([LABEL_PREFIX + p for p in policies])
    values = frame.iloc[:, positions].to_numpy(dtype=np.float64, copy=True)
    for request_id, item, entry in labels:
        row = index.get((request_id, item))
        if row is None:
            continue
        for j, policy in enumerate(policies):
            if policy in entry:
                values[row, j] = float(entry[policy])
    for j, policy in enumerate(policies):
        frame[LABEL_PREFIX + policy] = values[:, j]
