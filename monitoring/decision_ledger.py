"""The decision ledger: the append-only record of every trigger decision, and the per-model decision lock.

Every decision of `monitoring.trigger.evaluate_trigger`, whatever its outcome, is one line of the append-only
`DecisionLedger` (`$TNS_LEDGER`, the monitoring state volume the compiled pipeline mounts, or
`$TNS_HOME/monitoring/decisions.jsonl`: see `default_ledger_path`). Evaluations of one model are serialized by a
per-model file lock (`DecisionLedger.model_lock`) held from reading the ledger to appending.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.common.constants import ENV_LEDGER, MONITORING_STATE_MOUNT, MONITORING_STATE_PVC
from core.common.env import tns_home

DECISIONS_FILE = "decisions.jsonl"


class LockTimeout(TimeoutError):
    """Another evaluation of the same model held the lock for longer than the caller waits."""


# The ledger ------------------------------------------------------------------------------------------------
class LedgerLocationError(RuntimeError):
    """The decision ledger would live where it is lost (inside a pod's own filesystem)."""


def default_ledger_path() -> Path:
    """Where the decision ledger lives when no path is given: `$TNS_LEDGER`; else, when the monitoring state
    volume is mounted (`MONITORING_STATE_MOUNT`, as the compiled monitoring pipeline does), a file on it; else
    `$TNS_HOME/monitoring/decisions.jsonl`.

    Raises:
        LedgerLocationError: Inside a Kubernetes pod without the volume or `$TNS_LEDGER`: the ledger (and with it
            the cooldown, in-flight and duplicate-window guards) would reset with every pod.
    """
    if os.environ.get(ENV_LEDGER):
        return Path(os.environ[ENV_LEDGER])
    if os.path.ismount(MONITORING_STATE_MOUNT):
        return Path(MONITORING_STATE_MOUNT) / DECISIONS_FILE
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        raise LedgerLocationError(
            f"the decision ledger would be written inside this pod ({tns_home() / 'monitoring'}) and lost with it, "
            f"so cooldown, in-flight and duplicate-window guards would reset every run: mount the "
            f"PersistentVolumeClaim {MONITORING_STATE_PVC!r} at {MONITORING_STATE_MOUNT} (the compiled monitoring "
            f"pipeline does; create the claim first, see docs/runbook.md), or pass ledger_uri / ${ENV_LEDGER} on "
            "persistent storage"
        )
    return tns_home() / "monitoring" / DECISIONS_FILE


class DecisionLedger:
    """Append-only JSON Lines file of trigger decisions, safe for concurrent appenders (fcntl locks).

    Args:
        path: The ledger file (default `default_ledger_path()`); created on the first append.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else default_ledger_path()

    def append(self, record: dict[str, Any]) -> None:
        """Appends one record as one line, under an exclusive lock, flushed to disk before returning."""
        line = json.dumps(record, sort_keys=True, default=str) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                size = handle.seek(0, os.SEEK_END)
                if size:
                    handle.seek(size - 1)
                    if handle.read(1) != b"\n":
                        # A torn last line (a crash mid-append): end it, or this record would join it and be
                        # unreadable, and the decision it records (a window that fired) would be lost.
                        line = "\n" + line
                handle.write(line.encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def records(self, model: str | None = None) -> list[dict[str, Any]]:
        """Every readable record in append order (optionally one model's); unreadable lines are skipped."""
        if not self.path.is_file():
            return []
        with self.path.open("r", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)
            try:
                lines = handle.read().splitlines()
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        records = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and (model is None or record.get("model") == model):
                records.append(record)
        return records

    @contextlib.contextmanager
    def model_lock(self, model: str, timeout_s: float = 60.0, poll_s: float = 0.05) -> Iterator[None]:
        """Holds the model's decision lock (`locks/<model>.lock` beside the ledger).

        Raises:
            LockTimeout: Another evaluation held it for `timeout_s`.
        """
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
        lock_path = self.path.parent / "locks" / f"{safe}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout_s
        with lock_path.open("a") as handle:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LockTimeout(
                            f"another trigger evaluation of '{model}' holds {lock_path}"
                        ) from None
                    time.sleep(poll_s)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
