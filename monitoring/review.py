"""The review queue: pick the items of a window of inference logs that moderators should label, as a Label
Studio batch.

`sample_review` reads the window (`monitoring.log_reader.read_logs`; failed requests are dropped), keeps the
candidates (items without a delayed label yet) and splits `budget` between strata (`monitoring.review_strata`:
uncertainty near each served threshold with a per-policy quota, the drifted segments of a drift summary, a
uniform random share with inverse-inclusion weights) plus gold items of known label from a labeled dataset.
`write_batch` writes to the output folder::

    tasks.json            Label Studio tasks (text, image as a data URI, an opaque ref), in seeded random order
    labeling_config.xml   the labeling config: text, image, one required yes/no Choices per policy
    batch.json            the manifest: window, strata counts, each ref's request id, item, stratum and weight,
                          and the gold refs with their known labels (kept out of the tasks: gold looks like
                          any other task, and no task says why it was picked)

Content comes from the content store (`serving.content_store`, `--content`); without one, or for an item it no
longer holds, a task shows the logged text if the log kept it and says the content is missing.
`monitoring.review_import.import_review` turns the labeled export back into delayed labels.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.common.constants import (
    COL_ID,
    COL_IMAGE,
    COL_TEXT,
    DATASET_TABLE,
    MODALITY_BOTH,
    MODALITY_IMAGE,
    MODALITY_TEXT,
)
from core.config.review import ReviewRules
from monitoring.label_studio import control_names, image_data_uri, labeling_config, make_task

BATCH_VERSION = 1
BATCH_FILE = "batch.json"
TASKS_FILE = "tasks.json"
LABELING_CONFIG_FILE = "labeling_config.xml"


class ReviewError(ValueError):
    """A review batch cannot be made or imported; the message names what is wrong and what to do."""


@dataclass
class ReviewRequest:
    """What `tns review sample` was asked to do.

    Attributes:
        logs: The window: a log root (day partitions, `labels/`) or a log file.
        budget: Tasks in the batch (gold items included).
        out_dir: Output folder (must not hold a batch yet).
        rules: Shares of the strata.
        drift_summary: `summary.json` of `tns drift` on this window (for the drifted segments).
        content: The content store (a folder or `file://` URI).
        gold: A labeled dataset (manifest folder, or an ingested artifact with `dataset.parquet`).
        since: Window start (inclusive).
        until: Window end (exclusive).
        seed: Seed of every random choice.
        max_malformed_share: Fail when more log lines than this are malformed.
    """

    logs: Path
    budget: int
    out_dir: Path
    rules: ReviewRules = field(default_factory=ReviewRules)
    drift_summary: Path | None = None
    content: str | Path | None = None
    gold: Path | None = None
    since: datetime | None = None
    until: datetime | None = None
    seed: int = 0
    max_malformed_share: float = 0.05


@dataclass
class ReviewBatch:
    """A drawn batch: the tasks, the labeling config and the manifest."""

    tasks: list[dict[str, Any]]
    config: str
    manifest: dict[str, Any]

    @property
    def batch_id(self) -> str:
        return self.manifest["batch_id"]


def _modality(text_present: bool, image_present: bool) -> str:
    return (
        MODALITY_BOTH if text_present and image_present else MODALITY_TEXT if text_present else MODALITY_IMAGE
    )


def load_gold(source: Path, policies: list[str], count: int, seed: int) -> list[dict[str, Any]]:
    """`count` rows of a labeled dataset (seeded), each with `id`, `text`, `image` bytes and known `labels`.

    Rows labeled for none of `policies`, or whose image cannot be read, are not used.

    Raises:
        ReviewError: The dataset cannot be read or labels none of the policies.
    """
    from core.common.images import ImageFileError, read_image_file
    from core.data.formats import DatasetFormatError, load_dataset
    from core.data.ingest import read_ingested
    from monitoring.review_strata import random_keys

    source = Path(source).expanduser()
    try:
        if (source / DATASET_TABLE).is_file():
            frame, root = read_ingested(source), source
        else:
            frame, root = load_dataset(source, policies)
    except (DatasetFormatError, OSError, ValueError) as error:
        raise ReviewError(f"--gold {source}: {error}") from None
    labeled_for = [p for p in policies if p in frame.columns]
    if not labeled_for:
        raise ReviewError(f"--gold {source} has no label column for the batch's policies {policies}")
    frame = frame.loc[frame[labeled_for].notna().any(axis=1)].reset_index(drop=True)
    ids = frame[COL_ID].astype(str).tolist() if COL_ID in frame.columns else [str(i) for i in frame.index]
    order = sorted(range(len(frame)), key=lambda row: random_keys([ids[row]], [0], seed)[0])
    gold: list[dict[str, Any]] = []
    for row in order:
        if len(gold) >= count:
            break
        record = frame.iloc[row]
        image = None
        if isinstance(record.get(COL_IMAGE), str):
            try:
                image = read_image_file(root, record[COL_IMAGE])
            except ImageFileError:
                continue
        text = record.get(COL_TEXT) if isinstance(record.get(COL_TEXT), str) else None
        if not text and not image:
            continue
        labels = {p: int(record[p]) for p in labeled_for if record[p] == record[p]}  # NaN: not annotated
        gold.append({"id": ids[row], "text": text, "image": image, "labels": labels})
    return gold


def _read_summary(path: Path) -> dict[str, Any]:
    try:
        summary = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ReviewError(f"--drift-summary {path} cannot be read as JSON: {error}") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("signals"), list):
        raise ReviewError(f"--drift-summary {path} is not a drift summary (summary.json of `tns drift`)")
    return summary


def _tasks(entries: list, frame, store, batch_id: str, rules: ReviewRules, seed: int) -> tuple:
    """The tasks in seeded random order, their refs' keys (window items) and known labels (gold), and how many
    window items had no content in the store."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(entries))
    tasks, items, gold_refs, missing = [], {}, {}, 0
    for number, position in enumerate(order, start=1):
        kind, row, pick = entries[position]
        ref = f"{batch_id}-{number:04d}"
        if kind == "gold":
            text, image, note = pick["text"], pick["image"], ""
            modality = _modality(bool(text), bool(image))
            gold_refs[ref] = {"id": pick["id"], "labels": pick["labels"]}
        else:
            request_id, item = str(frame.at[row, "request_id"]), int(frame.at[row, "item"])
            stored = store.get(request_id, item) if store is not None else None
            logged_text = frame.at[row, "text"] if "text" in frame.columns else None
            text = stored.text if stored else (logged_text if isinstance(logged_text, str) else None)
            image = stored.image if stored else None
            note = "" if stored else "content missing from the content store (purged, or never stored)"
            missing += stored is None
            modality = _modality(bool(frame.at[row, "text_present"]), bool(frame.at[row, "image_present"]))
            items[ref] = {
                "request_id": request_id,
                "item": item,
                "stratum": pick["stratum"],
                "weight": round(float(pick["weight"]), 6),
                "reasons": pick["reasons"],
            }
        image_uri, image_note = image_data_uri(image, rules.max_image_bytes)
        tasks.append(
            make_task(ref, batch_id, text, image_uri, modality, "; ".join(filter(None, [note, image_note])))
        )
    return tasks, items, gold_refs, missing


def sample_review(request: ReviewRequest) -> ReviewBatch:
    """Draws a review batch (see the module docstring); nothing is written.

    Raises:
        ReviewError: Bad input (unreadable logs, no candidates, bad gold or drift summary, bad budget).
    """
    from monitoring.log_reader import LogReadError, read_logs
    from monitoring.review_strata import STRATUM_GOLD, draw_strata, random_keys, unlabeled
    from monitoring.schema import LogSchemaError
    from serving.content_store import open_content_store

    rules = request.rules
    if request.budget < 1:
        raise ReviewError(f"the budget must be at least 1 item, got {request.budget}")
    try:
        window = read_logs(request.logs, request.since, request.until, request.max_malformed_share)
    except (LogReadError, LogSchemaError) as error:
        raise ReviewError(str(error)) from None
    frame, policies = window.frame, window.policies
    if frame.empty or not policies:
        raise ReviewError(f"{request.logs} holds no served items in the window: nothing to review")
    candidates = unlabeled(frame, policies)
    if not candidates.any():
        raise ReviewError(f"every served item of {request.logs} in the window has a label already")
    store = open_content_store(request.content) if request.content is not None else None
    summary = _read_summary(request.drift_summary) if request.drift_summary else None

    gold = (
        load_gold(request.gold, policies, round(request.budget * rules.gold_share), request.seed)
        if request.gold
        else []
    )
    keys = random_keys(frame["request_id"].tolist(), frame["item"].tolist(), request.seed)
    draw = draw_strata(
        frame,
        candidates,
        policies,
        rules,
        budget=request.budget,
        window_budget=request.budget - len(gold),
        summary=summary,
        keys=keys,
        expansion=window.stats.rows / len(frame),  # above the row budget, the frame is a uniform sample
    )
    picks, strata = draw.picks, draw.strata
    strata[STRATUM_GOLD] = {"items": len(gold), "source": str(request.gold) if request.gold else None}

    entries = [("window", row, pick) for row, pick in picks.items()] + [
        ("gold", i, g) for i, g in enumerate(gold)
    ]
    identity = json.dumps(
        [str(Path(request.logs).resolve()), window.stats.rows, request.seed, request.budget, rules.to_dict()]
        + [[str(frame.at[row, "request_id"]), int(frame.at[row, "item"])] for row in sorted(picks)]
        + [g["id"] for g in gold]
    )
    batch_id = "rv-" + hashlib.sha256(identity.encode()).hexdigest()[:12]
    tasks, items, gold_refs, missing = _tasks(entries, frame, store, batch_id, rules, request.seed)

    stats = window.stats.to_dict()
    manifest = {
        "batch_version": BATCH_VERSION,
        "batch_id": batch_id,
        "created_at": datetime.now(UTC).isoformat(),
        "window": {
            "path": str(Path(request.logs).resolve()),
            "since": request.since.isoformat() if request.since else None,
            "until": request.until.isoformat() if request.until else None,
            "start": stats.get("start"),
            "end": stats.get("end"),
            "rows": window.stats.rows,
            "sampled_rows": len(frame),
            "candidates": int(candidates.sum()),
            "labeled_skipped": int((~candidates).sum()),
        },
        "seed": request.seed,
        "budget": request.budget,
        "rules": rules.to_dict(),
        "policies": policies,
        "controls": {name: policy for policy, name in control_names(policies).items()},
        "thresholds": draw.thresholds,
        "strata": strata,
        "drift": {
            "summary": str(request.drift_summary) if request.drift_summary else None,
            "segments": [
                {"signal": s.signal, "description": s.description, "rows": int(s.mask.sum())}
                for s in draw.segments
            ],
            "skipped": draw.skipped,
        },
        "content": {
            "store": str(request.content) if request.content is not None else None,
            "missing": missing,
        },
        "items": items,
        "gold": gold_refs,
    }
    return ReviewBatch(tasks=tasks, config=labeling_config(policies), manifest=manifest)


def _write_atomically(path: Path, text: str) -> None:
    """Writes under a temporary name (mode 0600: the tasks hold raw user content) and renames into place."""
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(partial, path)


def write_batch(batch: ReviewBatch, out_dir: Path) -> dict[str, Path]:
    """Writes tasks.json, labeling_config.xml and batch.json (the manifest last); returns their paths.

    Raises:
        ReviewError: `out_dir` holds a batch already.
    """
    out_dir = Path(out_dir)
    if (out_dir / BATCH_FILE).exists():
        raise ReviewError(f"{out_dir} already holds a review batch ({BATCH_FILE}); choose a new folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "tasks": out_dir / TASKS_FILE,
        "labeling_config": out_dir / LABELING_CONFIG_FILE,
        "batch": out_dir / BATCH_FILE,
    }
    manifest = {**batch.manifest, "files": {name: path.name for name, path in paths.items()}}
    _write_atomically(paths["tasks"], json.dumps(batch.tasks, ensure_ascii=False) + "\n")
    _write_atomically(paths["labeling_config"], batch.config)
    _write_atomically(paths["batch"], json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return paths
