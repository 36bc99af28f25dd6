"""Sharded dataset files: what training reads a row group at a time instead of holding the dataset in memory.

Ingest writes `shards/part-NNNNN.parquet` beside the table: each row's id, text, encoded image bytes, content
hash, modality and policy labels, in row groups of `SHARD_ROW_GROUP` rows, and `shards/index.json` (rows,
sha256 and positives per policy of each shard). Rows are dealt to shards round-robin within each label pattern
(the set of policies an item is positive for), ordered by content hash, so every shard holds its share of a
rare policy's positives and the same content always lands in the same shard layout. A takedown or privacy
deletion (`core.data.ingest.delete_items`) rewrites only the shards that hold the items.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.common.constants import (
    COL_ID,
    COL_IMAGE,
    COL_ITEM_HASH,
    COL_MODALITY,
    COL_TEXT,
    DATASET_FINGERPRINT,
    DATASET_SHARD_INDEX,
    DATASET_SHARDS_DIR,
)
from core.common.images import ImageFileError, read_image_file
from core.common.integrity import file_sha256
from core.common.storage import fetch_files, replace_file

COL_IMAGE_BYTES = "image_bytes"
SHARD_ROW_GROUP = 256  # rows a reader holds at once
INDEX_VERSION = 1


class ShardError(ValueError):
    """A dataset's shards are missing or do not match their index."""


@dataclass
class ShardEntry:
    """One shard file: its name, row count, content digest and positives per policy."""

    file: str
    rows: int
    sha256: str
    positives: dict[str, int] = field(default_factory=dict)


@dataclass
class ShardIndex:
    """The shards of a dataset artifact (`shards/index.json`)."""

    policies: list[str]
    shards: list[ShardEntry]
    version: int = INDEX_VERSION

    @property
    def rows(self) -> int:
        return sum(entry.rows for entry in self.shards)

    def to_dict(self) -> dict:
        return {**asdict(self), "rows": self.rows}

    @classmethod
    def from_dict(cls, data: dict) -> ShardIndex:
        return cls(
            policies=list(data["policies"]),
            shards=[ShardEntry(**entry) for entry in data["shards"]],
            version=int(data.get("version", INDEX_VERSION)),
        )


def shard_count(rows: int, shard_rows: int) -> int:
    """How many shards `rows` rows take at `data.shard_rows` rows per shard (at least one)."""
    return max(1, -(-rows // shard_rows))


def dealing_order(frame: pd.DataFrame, policies: Sequence[str]) -> np.ndarray:
    """Row positions in the order they are dealt round-robin to the shards: by label pattern, then content hash.

    The pattern is the set of policies a row is positive for, read as a number whose most significant bit is the
    rarest policy: every positive of the rarest policy sits in one contiguous run, and is dealt one per shard in
    turn (each shard's count within one of the others'); the next rarest is contiguous within each of those runs,
    and so on. Within a pattern the content hash (then the id) orders the rows, so the layout depends on the
    content, not on the order of the manifest."""
    present = [p for p in policies if p in frame.columns]
    positive = frame[present].fillna(0.0).to_numpy() > 0.5
    by_frequency = np.argsort(-positive.sum(0), kind="stable")  # the most common policy first: the lowest bit
    pattern = positive[:, by_frequency] @ (1 << np.arange(len(present), dtype=np.int64))
    ids = frame[COL_ID].astype(str).to_numpy() if COL_ID in frame.columns else np.arange(len(frame))
    return np.lexsort((ids, frame[COL_ITEM_HASH].astype(str).to_numpy(), -pattern))


def write_shards(
    frame: pd.DataFrame,
    dataset_dir: str | Path,
    policies: Sequence[str],
    shard_rows: int,
    max_image_bytes: int,
) -> ShardIndex:
    """Writes the rows of an ingested dataset as shards with their index.

    Args:
        frame: Prepared rows; `image` paths are relative to `dataset_dir` (rows whose file was not copied carry
            no bytes: validation refuses them by name).
        dataset_dir: The dataset artifact folder (`shards/` is created in it).
        policies: The run's policies (absent label columns are skipped).
        shard_rows: Rows per shard (`data.shard_rows`).
        max_image_bytes: Largest image file read (`validation.image_max_bytes`).
    """
    dataset_dir = Path(dataset_dir)
    folder = dataset_dir / DATASET_SHARDS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    present = [p for p in policies if p in frame.columns]
    shards = shard_count(len(frame), shard_rows)
    order = dealing_order(frame, present)
    entries = []
    for number in range(shards):
        rows = frame.iloc[order[number::shards]]
        path = folder / f"part-{number:05d}.parquet"
        entries.append(_write_shard(path, rows, dataset_dir, present, max_image_bytes))
    index = ShardIndex(policies=present, shards=entries)
    write_index(dataset_dir, index)
    return index


def _image_bytes(dataset_dir: Path, relative: object, max_image_bytes: int) -> bytes | None:
    if not isinstance(relative, str):
        return None
    try:
        return read_image_file(dataset_dir, relative, max_image_bytes)
    except ImageFileError:
        return None


def _write_shard(
    path: Path, rows: pd.DataFrame, dataset_dir: Path, policies: list[str], max_image_bytes: int
) -> ShardEntry:
    table = pd.DataFrame(
        {
            COL_ID: rows[COL_ID].to_numpy() if COL_ID in rows else [None] * len(rows),
            COL_TEXT: rows[COL_TEXT].to_numpy(),
            COL_IMAGE_BYTES: [_image_bytes(dataset_dir, p, max_image_bytes) for p in rows[COL_IMAGE]],
            COL_ITEM_HASH: rows[COL_ITEM_HASH].to_numpy(),
            COL_MODALITY: rows[COL_MODALITY].to_numpy(),
            **{p: rows[p].astype("float64").to_numpy() for p in policies},
        }
    )
    return write_shard_table(path, table, policies)


def write_shard_table(path: Path, table: pd.DataFrame, policies: Sequence[str]) -> ShardEntry:
    """Writes one shard through a staging file (a reader never sees half of it) and returns its index entry."""
    replace_file(path, lambda staging: table.to_parquet(staging, index=False, row_group_size=SHARD_ROW_GROUP))
    return ShardEntry(
        file=path.name,
        rows=len(table),
        sha256=file_sha256(path),
        positives={p: int((table[p] > 0.5).sum()) for p in policies if p in table},
    )


def write_index(dataset_dir: str | Path, index: ShardIndex) -> None:
    """Writes `shards/index.json` through a staging file."""
    path = Path(dataset_dir) / DATASET_SHARDS_DIR / DATASET_SHARD_INDEX
    replace_file(
        path, lambda staging: staging.write_text(json.dumps(index.to_dict(), indent=2), encoding="utf-8")
    )


def read_index(dataset_dir: str | Path) -> ShardIndex:
    """The shard index of a dataset artifact.

    Raises:
        ShardError: When the artifact has no shards (ingested before sharding: ingest it again).
    """
    path = Path(dataset_dir) / DATASET_SHARDS_DIR / DATASET_SHARD_INDEX
    if not path.is_file():
        raise ShardError(
            f"{Path(dataset_dir)} has no {DATASET_SHARDS_DIR}/{DATASET_SHARD_INDEX}: it was ingested before "
            "datasets were sharded; run the ingest step again on its source"
        )
    return ShardIndex.from_dict(json.loads(path.read_text(encoding="utf-8")))


def shard_path(dataset_dir: str | Path, entry: ShardEntry) -> Path:
    """The file of a shard, which must exist."""
    path = Path(dataset_dir) / DATASET_SHARDS_DIR / entry.file
    if not path.is_file():
        raise ShardError(f"shard {path} named in the index is missing: the dataset artifact is incomplete")
    return path


def read_shard_batches(
    dataset_dir: str | Path, entry: ShardEntry, columns: Sequence[str] | None = None
) -> Iterator[pd.DataFrame]:
    """The rows of one shard, a row group at a time (`SHARD_ROW_GROUP` rows), so that a reader holds only that."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(shard_path(dataset_dir, entry)) as handle:
        for batch in handle.iter_batches(
            batch_size=SHARD_ROW_GROUP, columns=list(columns) if columns else None
        ):
            yield batch.to_pandas()


def read_shard_ids(dataset_dir: str | Path, entry: ShardEntry) -> list[str]:
    """The item ids of one shard (reads that column only)."""
    import pyarrow.parquet as pq

    return [
        str(v) for v in pq.read_table(shard_path(dataset_dir, entry), columns=[COL_ID])[COL_ID].to_pylist()
    ]


def rank_shards(index: ShardIndex, rank: int, ranks: int) -> list[tuple[int, int, int]]:
    """What a training process reads, as (shard, first row, row step): every `ranks`-th shard from its rank; with
    fewer shards than processes, every shard's every `ranks`-th row, so that no process goes without rows."""
    if len(index.shards) >= ranks:
        return [(number, 0, 1) for number in range(rank, len(index.shards), ranks)]
    return [(number, rank, ranks) for number in range(len(index.shards))]


def fetch_rank_shards(uri: str, destination: str | Path, rank: int, ranks: int) -> Path:
    """The dataset at `uri` as a local folder holding what one training process streams: the fingerprint, the
    shard index and its own shards (`rank_shards`), not the whole dataset. A local dataset is used in place."""
    index_file = f"{DATASET_SHARDS_DIR}/{DATASET_SHARD_INDEX}"
    folder = fetch_files(uri, destination, [DATASET_FINGERPRINT, index_file])
    index = read_index(folder)
    mine = sorted({number for number, _, _ in rank_shards(index, rank, ranks)})
    return fetch_files(uri, destination, [f"{DATASET_SHARDS_DIR}/{index.shards[n].file}" for n in mine])
