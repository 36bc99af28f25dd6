"""Importing a labeled review batch: a Label Studio JSON export back into delayed labels in the log schema.

For each labeled task of the batch (`monitoring.review`), joined by its ref to the request id and item the batch
manifest holds, one line goes to `<log root>/labels/review-<batch id>.jsonl`, where
`monitoring.log_reader.read_logs` joins it like every delayed label::

    {"request_id", "item", "labels": {policy: 0/1}, "source": "review", "labeler", "labeled_at", "batch_id",
     "sampling": {"stratum", "weight"}}

Gold tasks are not written as labels: their answers are compared with the known labels, and the disagreement
rate (per policy, per labeler and overall) is printed and written to `<batch>/import_summary.json`. An export with
any problem (a task of another batch, a missing or unknown choice) is refused as a whole and nothing is written;
files are written under temporary names and renamed, so a re-import replaces the batch's labels at once.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.common.constants import LABEL_SOURCE_REVIEW
from monitoring.label_studio import ExportError, ReviewedTask, read_export
from monitoring.review import BATCH_FILE, ReviewError
from monitoring.schema import LABELS_DIR

BATCH_ID = re.compile(r"rv-[0-9a-f]{12}")  # what `monitoring.review` makes; it becomes part of a file name
IMPORT_SUMMARY_FILE = "import_summary.json"


@dataclass
class ImportResult:
    """What an import wrote and found."""

    labels_file: Path
    summary_file: Path
    summary: dict[str, Any]


def read_batch(batch_dir: Path) -> dict[str, Any]:
    """The manifest of a batch folder.

    Raises:
        ReviewError: No readable batch.json there.
    """
    path = Path(batch_dir) / BATCH_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReviewError(
            f"{batch_dir} holds no {BATCH_FILE}: give the folder `tns review sample --out` wrote"
        ) from None
    except (OSError, ValueError) as error:
        raise ReviewError(f"{path} cannot be read as JSON: {error}") from None
    if not isinstance(manifest, dict) or not {"batch_id", "controls", "items", "gold"} <= set(manifest):
        raise ReviewError(f"{path} is not a review batch manifest")
    if not isinstance(manifest["batch_id"], str) or not BATCH_ID.fullmatch(manifest["batch_id"]):
        raise ReviewError(f"{path}: batch_id {manifest['batch_id']!r} is not one `tns review sample` makes")
    return manifest


def _rate(disagreed: int, compared: int) -> float | None:
    return round(disagreed / compared, 6) if compared else None


def gold_agreement(reviewed: list[ReviewedTask], gold: dict[str, Any]) -> dict[str, Any]:
    """Disagreement with the known labels of the gold tasks: per policy, per labeler and overall."""
    by_policy: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # [disagreed, compared]
    by_labeler: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    tasks = 0
    for task in reviewed:
        known = gold.get(task.ref)
        if known is None:
            continue
        tasks += 1
        for policy, value in known["labels"].items():
            if policy in task.labels:
                differs = int(task.labels[policy] != int(value))
                for counts in (by_policy[policy], by_labeler[task.labeler]):
                    counts[0] += differs
                    counts[1] += 1
    disagreed = sum(c[0] for c in by_policy.values())
    compared = sum(c[1] for c in by_policy.values())
    return {
        "tasks": tasks,
        "compared": compared,
        "disagreements": disagreed,
        "disagreement_rate": _rate(disagreed, compared),
        "per_policy": {
            p: {"compared": c[1], "disagreement_rate": _rate(*c)} for p, c in sorted(by_policy.items())
        },
        "per_labeler": {
            k: {"compared": c[1], "disagreement_rate": _rate(*c)} for k, c in sorted(by_labeler.items())
        },
    }


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def import_review(
    export_file: Path, batch_dir: Path, log_root: Path, labeler_field: str = "completed_by"
) -> ImportResult:
    """Imports a Label Studio JSON export of a batch as delayed labels of the window's log root.

    Raises:
        ReviewError: Bad input, naming the task and what to fix; nothing is written then.
    """
    manifest = read_batch(batch_dir)
    log_root = Path(log_root)
    if not log_root.is_dir():
        raise ReviewError(f"--logs {log_root} is not a log folder (labels go to {log_root}/{LABELS_DIR}/)")
    try:
        export = json.loads(Path(export_file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ReviewError(f"{export_file} cannot be read as a JSON export: {error}") from None
    items, gold = manifest["items"], manifest["gold"]
    try:
        reviewed, unlabeled = read_export(export, manifest["controls"], set(items) | set(gold), labeler_field)
    except ExportError as error:
        raise ReviewError(f"{export_file}: {error}; nothing was imported") from None

    imported_at = datetime.now(UTC).isoformat()
    batch_id = manifest["batch_id"]
    gold_check = gold_agreement(reviewed, gold)
    lines = []
    for task in reviewed:
        key = items.get(task.ref)
        if key is None:
            continue  # a gold task
        lines.append(
            json.dumps(
                {
                    "request_id": key["request_id"],
                    "item": key["item"],
                    "labels": task.labels,
                    "source": LABEL_SOURCE_REVIEW,
                    "labeler": task.labeler,
                    "labeled_at": task.labeled_at or imported_at,
                    "batch_id": batch_id,
                    "gold_disagreement": gold_check["disagreement_rate"],
                    "sampling": {"stratum": key["stratum"], "weight": key["weight"]},
                },
                ensure_ascii=False,
            )
        )
    window_path = str(manifest.get("window", {}).get("path", ""))
    summary = {
        "batch_id": batch_id,
        "imported_at": imported_at,
        "export": str(export_file),
        "log_root": str(log_root.resolve()),
        "same_window_as_batch": window_path == str(log_root.resolve())
        or window_path.startswith(str(log_root.resolve()) + os.sep),
        "tasks_in_batch": len(items) + len(gold),
        "tasks_in_export": len(export),
        "labeled": len(reviewed),
        "unlabeled_or_skipped": unlabeled,
        "labels_written": len(lines),
        "multiple_annotations": sum(task.annotations > 1 for task in reviewed),
        "gold": gold_check,
    }
    labels_file = log_root / LABELS_DIR / f"review-{batch_id}.jsonl"
    summary["labels_file"] = str(labels_file)
    summary_file = Path(batch_dir) / IMPORT_SUMMARY_FILE
    _write_atomically(labels_file, "".join(line + "\n" for line in lines))
    _write_atomically(summary_file, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return ImportResult(labels_file=labels_file, summary_file=summary_file, summary=summary)
