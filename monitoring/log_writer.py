"""Writing inference logs by day: the serving client's sink `InferenceLog` and the `LogWriter` under it.

Writing appends JSON lines to `<root>/date=YYYY-MM-DD/<name>-<pid>.jsonl` (one file per process and day, so
writers never interleave); `monitoring.log_reader.read_logs` reads a window of them back.
"""

from __future__ import annotations

import json
import os
import threading
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from monitoring.schema import make_record, partition_name

__all__ = ["InferenceLog", "LogWriter"]


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
