"""Ingest: copy a dataset into a self-contained artifact folder and fingerprint its content.

The artifact holds `dataset.parquet` (normalised, prepared rows plus content hashes), `images/` (copies of the
referenced images, for random access), `shards/` (the rows with their image bytes, what training streams: see
`core.data.shards`), `preparation.json` (copies collapsed, labels merged, missing labels resolved: see
`core.data.prepare`) and `fingerprint.json`. `core.data.deletion.delete_items` removes items (a takedown, a
privacy request) from all of them, rewriting only the shards that hold them. Ingest is lenient on purpose: it
records what it finds (missing image files, unsafe paths, missing columns, values that are not labels) and leaves
the verdict to validation, so every data problem is reported by one named check.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from core.common.constants import (
    COL_GROUP,
    COL_ID,
    COL_IMAGE,
    COL_IMAGE_SHA256,
    COL_ITEM_HASH,
    COL_MODALITY,
    COL_TEXT,
    DATASET_FINGERPRINT,
    DATASET_IMAGES_DIR,
    DATASET_LINEAGE_FILE,
    DATASET_PREPARATION,
    DATASET_TABLE,
    MODALITY_BOTH,
    MODALITY_IMAGE,
    MODALITY_NONE,
    MODALITY_TEXT,
)
from core.common.images import ImageFileError, contained_image_path, read_image_file
from core.config.run import RunConfig
from core.data.formats import DatasetFormatError, clean_text, load_dataset
from core.data.generate import GENERATOR_MARKER
from core.data.prepare import Preparation, prepare_frame
from core.data.shards import write_shards

COL_IMAGE_FILE_STATUS = "image_file_status"
IMAGE_ABSENT = "absent"
IMAGE_OK = "ok"
IMAGE_MISSING_FILE = "missing_file"
IMAGE_UNSAFE_PATH = "unsafe_path"
IMAGE_TOO_MANY_BYTES = (
    "too_many_bytes"  # larger than validation.image_max_bytes: not copied, refused by validation
)


@dataclass(frozen=True)
class IngestResult:
    """What ingest wrote: row count, content fingerprint, and where the data came from."""

    rows: int
    fingerprint: str
    source: str
    policies: list[str]
    columns: list[str]
    synthetic: bool = False
    rows_read: int = 0
    sources: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def item_hash(text: str | None, image_key: str | None) -> str:
    """The content key of an item (`item_hash`): its text and its image's sha256 (or, for an image file that could
    not be read, its path). Items with the same key are copies."""
    return _sha256(f"{text or ''}\x1f{image_key or ''}".encode())


def _resolve_image(root: Path, relative: str) -> tuple[Path | None, str]:
    try:
        return contained_image_path(root, relative), IMAGE_OK
    except ImageFileError as error:
        return None, IMAGE_UNSAFE_PATH if error.reason == IMAGE_UNSAFE_PATH else IMAGE_MISSING_FILE


def modality_of(has_text: bool, has_image: bool) -> str:
    """Names the modality slice of an item."""
    if has_text and has_image:
        return MODALITY_BOTH
    if has_text:
        return MODALITY_TEXT
    return MODALITY_IMAGE if has_image else MODALITY_NONE


def _group_column(frame: pd.DataFrame, column: str) -> None:
    """Copies the configured group column into `group` (text or None, replacing a `group` column the manifest may
    also have); an absent non-default column is an error."""
    if column not in frame.columns:
        if column != COL_GROUP and len(frame):
            raise DatasetFormatError(
                f"split.group_column {column!r} is not a column of the dataset (columns: "
                f"{', '.join(map(str, frame.columns))}); set split.group_column to one of them, e.g. "
                f"--set split.group_column=<column>"
            )
        return
    frame[COL_GROUP] = frame[column].map(clean_text).astype(object)


def _as_text(value: object) -> str | None:
    """A manifest value of a text column as stored: text, or None for a gap (None, NaN: a row without the key)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value if isinstance(value, str) else str(value)


def ingest_dataset(source: str | Path, out_dir: str | Path, config: RunConfig) -> IngestResult:
    """Reads a dataset, copies its images, prepares the rows and writes the fingerprinted artifact.

    Args:
        source: Dataset folder, manifest file or Hateful Memes folder.
        out_dir: Artifact folder to write (created).
        config: Run configuration: `policies`, `split` (deduplication, groups) and `data.missing_labels`.

    Returns:
        The ingest summary, also written to `fingerprint.json`.

    Raises:
        DatasetFormatError: When no manifest can be read, or `split.group_column` names no column.
    """
    policies = list(config.policies)
    frame, root = load_dataset(source, policies)
    _group_column(frame, config.split.group_column)
    out_dir = Path(out_dir)
    images_dir = out_dir / DATASET_IMAGES_DIR
    images_dir.mkdir(parents=True, exist_ok=True)

    statuses, hashes, stored = [], [], []
    for relative in frame[COL_IMAGE]:
        if relative is None:
            statuses.append(IMAGE_ABSENT)
            hashes.append(None)
            stored.append(None)
            continue
        path, status = _resolve_image(root, relative)
        data = None
        if path is not None:
            try:
                data = read_image_file(None, path, config.validation.image_max_bytes)  # contained above
            except ImageFileError as error:
                status = IMAGE_TOO_MANY_BYTES if error.reason == IMAGE_TOO_MANY_BYTES else IMAGE_MISSING_FILE
        statuses.append(status)
        if data is None:
            hashes.append(None)
            stored.append(relative)
            continue
        digest = _sha256(data)
        target = images_dir / f"{digest[:2]}" / f"{digest}{path.suffix.lower()}"
        if not target.exists():
            target.parent.mkdir(exist_ok=True)
            target.write_bytes(data)
        hashes.append(digest)
        stored.append(target.relative_to(out_dir).as_posix())

    frame[COL_IMAGE] = pd.Series(stored, dtype=object)
    frame[COL_IMAGE_FILE_STATUS] = statuses
    frame[COL_IMAGE_SHA256] = pd.Series(hashes, dtype=object)
    frame[COL_ITEM_HASH] = [
        item_hash(text, digest or path)
        for text, digest, path in zip(frame[COL_TEXT], hashes, stored, strict=True)
    ]
    frame[COL_MODALITY] = [
        modality_of(text is not None, status != IMAGE_ABSENT)
        for text, status in zip(frame[COL_TEXT], statuses, strict=True)
    ]
    rows_read = len(frame)
    frame, preparation = prepare_frame(frame, policies, config.split, config.data.missing_labels)
    for column in frame.columns:
        if frame[column].dtype == object and column != COL_ID:
            frame[column] = frame[column].map(_as_text)
    frame.to_parquet(out_dir / DATASET_TABLE, index=False)
    (out_dir / DATASET_PREPARATION).write_text(json.dumps(preparation.to_dict(), indent=2), encoding="utf-8")

    write_shards(frame, out_dir, policies, config.data.shard_rows, config.validation.image_max_bytes)
    resolved = str(Path(source).expanduser().resolve())
    result = IngestResult(
        rows=len(frame),
        fingerprint=content_fingerprint(frame, policies),
        source=resolved,
        sources=[resolved, *_built_from(root)],
        policies=list(policies),
        columns=list(frame.columns),
        synthetic=(root / GENERATOR_MARKER).is_file(),
        rows_read=rows_read,
    )
    (out_dir / DATASET_FINGERPRINT).write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    return result


def content_fingerprint(frame: pd.DataFrame, policies: Sequence[str]) -> str:
    """The dataset's content fingerprint: a digest of each row's id, content hash and labels, in id order, so
    that it names the content whatever the row order, sharding or source folder."""
    content = hashlib.sha256()
    label_columns = [p for p in policies if p in frame.columns]
    ordered = frame.sort_values(COL_ID, key=lambda s: s.astype(str)) if COL_ID in frame.columns else frame
    for row in ordered[[c for c in [COL_ID, COL_ITEM_HASH, *label_columns] if c in frame.columns]].itertuples(
        index=False
    ):
        content.update(json.dumps([None if pd.isna(v) else v for v in row], default=str).encode())
        content.update(b"\n")
    return content.hexdigest()


def _built_from(root: Path) -> list[str]:
    """The sources a built dataset names in its `lineage.json` (a retraining dataset: base data, label files)."""
    path = root / DATASET_LINEAGE_FILE
    if not path.is_file():
        return []
    try:
        sources = json.loads(path.read_text(encoding="utf-8")).get("sources", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [str(s) for s in sources] if isinstance(sources, list) else []


def read_ingested(dataset_dir: str | Path) -> pd.DataFrame:
    """Reads the table of an ingested dataset artifact; image paths are relative to `dataset_dir`."""
    return pd.read_parquet(Path(dataset_dir) / DATASET_TABLE)


def read_preparation(dataset_dir: str | Path) -> Preparation | None:
    """What preparing the rows of an ingested dataset artifact changed (None for artifacts without the record)."""
    path = Path(dataset_dir) / DATASET_PREPARATION
    if not path.is_file():
        return None
    return Preparation.from_dict(json.loads(path.read_text(encoding="utf-8")))


def read_fingerprint(dataset_dir: str | Path) -> dict:
    """Reads the ingest summary (`fingerprint.json`) of an ingested dataset artifact."""
    return json.loads((Path(dataset_dir) / DATASET_FINGERPRINT).read_text(encoding="utf-8"))
