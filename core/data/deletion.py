"""Deleting items from an ingested dataset artifact (a takedown, a privacy request).

`delete_items` removes the rows with the given ids from the shards that hold them (the other shards are not
touched), from the table, and the image files no other row uses, then records the new content fingerprint: a
model trained on the dataset before no longer matches its lineage, which is what lineage checks are for. Each
file is replaced whole through a staging file; a deletion that stops half-way is finished by running it again
with the same ids.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from core.common.constants import COL_ID, COL_IMAGE, DATASET_FINGERPRINT, DATASET_IMAGES_DIR, DATASET_TABLE
from core.common.storage import replace_file
from core.data.ingest import content_fingerprint, read_fingerprint, read_ingested
from core.data.shards import read_index, read_shard_ids, shard_path, write_index, write_shard_table


@dataclass(frozen=True)
class Deletion:
    """What deleting items changed."""

    requested: int
    rows_removed: int
    not_found: int
    shards_rewritten: list[str] = field(default_factory=list)
    shards_kept: int = 0
    images_removed: int = 0
    fingerprint_before: str = ""
    fingerprint_after: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def delete_items(dataset_dir: str | Path, ids: Iterable[str]) -> Deletion:
    """Removes the items with `ids` from an ingested dataset artifact.

    Args:
        dataset_dir: The artifact folder (`dataset.parquet`, `images/`, `shards/`, `fingerprint.json`).
        ids: Item ids to remove; ids the dataset does not hold are counted in `not_found`.

    Returns:
        What was removed and rewritten, and the fingerprints before and after.
    """
    dataset_dir = Path(dataset_dir)
    wanted = {str(i) for i in ids}
    index = read_index(dataset_dir)  # first: an artifact without shards is named as such
    summary = read_fingerprint(dataset_dir)
    table = read_ingested(dataset_dir)
    doomed = table[COL_ID].astype(str).isin(wanted).to_numpy()

    rewritten = []
    for number, entry in enumerate(index.shards):
        if wanted.isdisjoint(read_shard_ids(dataset_dir, entry)):
            continue
        path = shard_path(dataset_dir, entry)
        rows = pd.read_parquet(path)
        rows = rows[~rows[COL_ID].astype(str).isin(wanted)].reset_index(drop=True)
        index.shards[number] = write_shard_table(path, rows, index.policies)
        rewritten.append(entry.file)
    write_index(dataset_dir, index)

    remaining = table[~doomed].reset_index(drop=True)
    replace_file(dataset_dir / DATASET_TABLE, lambda p: remaining.to_parquet(p, index=False))
    used = set(remaining[COL_IMAGE].dropna())
    images_removed = 0
    images_root = (dataset_dir / DATASET_IMAGES_DIR).resolve()
    for relative in set(table.loc[doomed, COL_IMAGE].dropna()) - used:
        path = (dataset_dir / relative).resolve()
        if path.is_relative_to(images_root) and path.is_file():
            path.unlink()
            images_removed += 1

    before = summary.get("fingerprint", "")
    summary.update(
        rows=len(remaining),
        fingerprint=content_fingerprint(remaining, summary.get("policies", [])),
        items_deleted=int(summary.get("items_deleted", 0)) + int(doomed.sum()),
    )
    replace_file(
        dataset_dir / DATASET_FINGERPRINT,
        lambda p: p.write_text(json.dumps(summary, indent=2), encoding="utf-8"),
    )
    found = set(table.loc[doomed, COL_ID].astype(str))
    return Deletion(
        requested=len(wanted),
        rows_removed=int(doomed.sum()),
        not_found=len(wanted - found),
        shards_rewritten=rewritten,
        shards_kept=len(index.shards) - len(rewritten),
        images_removed=images_removed,
        fingerprint_before=before,
        fingerprint_after=summary["fingerprint"],
    )
