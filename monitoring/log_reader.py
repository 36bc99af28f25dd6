"""Reading a window of inference logs back as one flat table, in bounded memory.

Reading takes a file or a folder (the `*.jsonl` / `*.parquet` files inside its day partitions, plus the delayed
labels under `labels/`), checks the schema version, skips and counts malformed lines, joins the delayed labels and
returns one row per scored item with the columns named in `monitoring.schema`.

Reading streams: each file is read chunk by chunk (`monitoring.log_chunks`), so one bad line costs only that
line. Counts, flag rates, labeled rows, the time range and the model versions are taken over every row;
the rows themselves are kept in a seeded reservoir of at most `row_budget` rows (`monitoring.reservoir`), so
that memory stays flat however large the window is, and the drift check's distribution tests and embeddings run
on that uniform sample. The logs are written by `monitoring.log_writer`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from core.config.drift import DEFAULT_ROW_BUDGET
from monitoring.log_chunks import json_chunks, parquet_chunks, read_labels
from monitoring.log_records import canonical_columns, flag_counts
from monitoring.reservoir import Reservoir
from monitoring.schema import (
    FLAG_PREFIX,
    LABEL_PREFIX,
    LABELS_DIR,
    MAX_LOG_LINE_BYTES,
    PARTITION_PREFIX,
    SCORE_PREFIX,
)

__all__ = [
    "DEFAULT_MAX_MALFORMED_SHARE",
    "LogReadError",
    "LogWindow",
    "ReadStats",
    "log_files",
    "read_logs",
]

MALFORMED_EXAMPLES = 5
DEFAULT_MAX_MALFORMED_SHARE = 0.05
# Model versions / names counted per window, so that a hostile log cannot grow the counts.
MAX_DISTINCT_VERSIONS = 1000
_NS_MIN, _NS_MAX = np.datetime64("1678-01-01", "s"), np.datetime64("2262-04-11", "s")


class LogReadError(ValueError):
    """A window of logs cannot be used (too many malformed lines, nothing to read)."""


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
    labels = read_labels(path, max_line_bytes)
    reservoir = Reservoir(row_budget, seed)
    policies: list[str] = []
    for file in log_files(path):
        stats.files += 1
        chunks = (
            parquet_chunks(file, stats)
            if file.suffix == ".parquet"
            else json_chunks(file, stats, max_line_bytes)
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
