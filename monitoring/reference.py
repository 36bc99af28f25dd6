"""A labeled dataset (the champion's training data) as a reference window of inference-log records.

The rows are scored in process by the served model (`serving.in_process.RepositoryScorer`: the exported
preprocessing, ONNX classifier and decision), turned into log records with their labels, and cached under
`$TNS_HOME/monitoring/reference/`, keyed by the manifest, its modification time, the model version and the
sample size, so the (slow) scoring happens once per champion.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.common.constants import COL_CREATED_AT, COL_ID, COL_IMAGE, COL_TEXT
from core.common.env import tns_home
from core.common.images import ImageFileError, read_image_file
from monitoring.log_reader import LogWindow, read_logs
from monitoring.log_writer import LogWriter
from monitoring.schema import make_record

SCORING_BATCH = 32


def _read_manifest(dataset: Path):
    from core.data.formats import find_manifest, read_table

    manifest = find_manifest(dataset)
    if manifest is None:
        raise ValueError(f"{dataset}: a reference dataset needs a manifest (jsonl, csv or parquet)")
    return manifest, read_table(manifest)


def scored_reference(
    dataset: Path,
    scorer_factory: Callable[[], Any] | None = None,
    model_name: str = "",
    tracking_uri: str = "",
    repository: Path | None = None,
    max_rows: int = 2000,
    seed: int = 0,
    cache_root: Path | None = None,
) -> LogWindow:
    """The dataset's rows scored by the served model, as a log window (labels joined).

    Args:
        dataset: A dataset folder or manifest file.
        scorer_factory: Builds the scorer; default: `repository` if given, else the champion from MLflow.
        model_name: Registered model name of the champion.
        tracking_uri: MLflow tracking URI ('' = the local store).
        repository: An exported Triton repository to score with instead of the champion.
        max_rows: Largest number of rows scored (a seeded sample above it).
        seed: Seed of the sample.
        cache_root: Cache folder (default `$TNS_HOME/monitoring/reference`).

    Returns:
        The reference window.
    """
    from serving.in_process import RepositoryScorer, champion_scorer

    manifest, table = _read_manifest(dataset)
    if scorer_factory is None:
        if repository is not None:
            scorer_factory = lambda: RepositoryScorer(repository)  # noqa: E731
        else:
            scorer_factory = lambda: champion_scorer(model_name, tracking_uri)  # noqa: E731
    scorer = scorer_factory()
    if len(table) > max_rows:
        table = table.sample(n=max_rows, random_state=seed)
    version = str(getattr(scorer, "model_version", ""))
    key = hashlib.sha256(
        f"{manifest.resolve()}|{manifest.stat().st_mtime_ns}|{version}|{len(table)}|{seed}".encode()
    ).hexdigest()[:16]
    folder = (cache_root or tns_home() / "monitoring" / "reference") / key
    if not (folder / "complete").is_file():
        _score_into(folder, manifest.parent, table, scorer)
    return read_logs(folder)


class ReferenceDatasetError(ValueError):
    """A reference dataset row cannot be used (an image path outside the dataset, a missing or oversized file)."""


def _image(root: Path, relative: str, row: dict[str, Any]) -> bytes:
    """The row's image through the one contained, bounded reader every image path uses."""
    try:
        return read_image_file(root, relative)
    except ImageFileError as error:
        raise ReferenceDatasetError(
            f"reference dataset {root}, row {row.get(COL_ID)!r}: image {error}; a reference must be a dataset "
            "that passes `tns validate` (fix or drop the row)"
        ) from None


def _created_at(value: Any, default: datetime) -> datetime:
    """A row's `created_at` as a timezone-aware time (UTC when it has no zone), or `default` when it is not
    ISO 8601: it names the row's log partition, so only a parsed date may reach the path."""
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            return default
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _score_into(folder: Path, root: Path, table, scorer) -> None:
    import shutil

    from core.data.formats import parse_label

    policies = list(getattr(scorer, "policies", []))
    if folder.exists():
        shutil.rmtree(folder)
    writer = LogWriter(folder, "reference")
    rows = table.to_dict("records")
    now = datetime.now(UTC)
    for start in range(0, len(rows), SCORING_BATCH):
        batch = rows[start : start + SCORING_BATCH]
        texts, images, kept = [], [], []
        for row in batch:
            text = (
                row.get(COL_TEXT)
                if isinstance(row.get(COL_TEXT), str) and row.get(COL_TEXT).strip()
                else None
            )
            image_path = row.get(COL_IMAGE)
            image = _image(root, image_path, row) if isinstance(image_path, str) and image_path else None
            if text is None and image is None:
                continue
            texts.append(text)
            images.append(image)
            kept.append(row)
        if not kept:
            continue
        records = []
        for row, text, image, scored in zip(kept, texts, images, scorer.score(texts, images), strict=True):
            parsed = {p: parse_label(row.get(p)) for p in policies}
            labels = {p: int(value) for p, value in parsed.items() if value in (0.0, 1.0)}
            records.append(
                make_record(
                    request_id=f"reference-{row.get(COL_ID)}",
                    item=0,
                    timestamp=_created_at(row.get(COL_CREATED_AT), now),
                    model_name=scored.model_name,
                    model_version=scored.model_version,
                    text=text,
                    image=image,
                    scores=scored.scores,
                    flags=scored.flags,
                    action=scored.action,
                    text_embedding=scored.text_embedding,
                    image_embedding=scored.image_embedding,
                    labels=labels or None,
                )
            )
        writer.write(records)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "complete").write_text("ok\n", encoding="utf-8")
