"""Sharded datasets: rare positives spread over shards, a layout that depends on content only, deletions that
rewrite only the shards holding the items, and `tns data delete`."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.config.run import RunConfig
from core.data.deletion import delete_items
from core.data.ingest import ingest_dataset, read_fingerprint, read_ingested
from core.data.shards import (
    COL_IMAGE_BYTES,
    ShardError,
    dealing_order,
    rank_shards,
    read_index,
    read_shard_batches,
    read_shard_ids,
    write_shards,
)

SHARD_ROWS = 40


@pytest.fixture(scope="module")
def config() -> RunConfig:
    return RunConfig().with_overrides(**{"data.shard_rows": SHARD_ROWS})


@pytest.fixture
def dataset(tmp_path, tiny_raw_dataset, config) -> Path:
    ingest_dataset(tiny_raw_dataset, tmp_path / "dataset", config)
    return tmp_path / "dataset"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_rare_policy_is_spread_evenly_over_the_shards():
    rows = 1000
    frame = pd.DataFrame(
        {
            "id": [f"item-{i}" for i in range(rows)],
            "item_hash": [hashlib.sha256(str(i).encode()).hexdigest() for i in range(rows)],
            "rare": [1.0 if i % 100 == 7 else 0.0 for i in range(rows)],  # 10 positives, all in one block
            "common": [float(i % 3 == 0) for i in range(rows)],
        }
    )
    order = dealing_order(frame, ["rare", "common"])
    shards = [frame.iloc[order[n::10]] for n in range(10)]
    assert sorted(np.concatenate([s.index for s in shards])) == list(range(rows))
    assert [int(s["rare"].sum()) for s in shards] == [1] * 10
    # the next rarest policy is contiguous within the rarest's runs: within two of even
    assert max(s["common"].sum() for s in shards) - min(s["common"].sum() for s in shards) <= 2
    # the layout depends on the content, not on the order the rows came in
    shuffled = frame.sample(frac=1.0, random_state=0)
    again = dealing_order(shuffled, ["rare", "common"])
    assert [shuffled.iloc[again[n::10]]["id"].tolist() for n in range(10)] == [
        s["id"].tolist() for s in shards
    ]


def test_ingest_writes_shards_that_hold_every_row_with_its_image_bytes(dataset):
    index = read_index(dataset)
    table = read_ingested(dataset)
    assert len(index.shards) == -(-len(table) // SHARD_ROWS) and index.rows == len(table)
    ids = [i for entry in index.shards for i in read_shard_ids(dataset, entry)]
    assert sorted(ids) == sorted(table["id"])
    by_id = table.set_index("id")
    for entry in index.shards[:2]:
        for batch in read_shard_batches(dataset, entry):
            for item, data in zip(batch["id"], batch[COL_IMAGE_BYTES], strict=True):
                image = by_id.at[item, "image"]
                assert (data is None) == (image is None)
                if data is not None:
                    assert data == (dataset / image).read_bytes()
        assert _digest(dataset / "shards" / entry.file) == entry.sha256
    positives = {p: sum(e.positives[p] for e in index.shards) for p in index.policies}
    assert positives == {p: int((table[p] == 1.0).sum()) for p in index.policies}


def test_ranks_share_the_shards_or_the_rows_of_too_few_shards(dataset):
    index = read_index(dataset)
    count = len(index.shards)
    assert [unit[0] for rank in (0, 1) for unit in rank_shards(index, rank, 2)] == [
        *range(0, count, 2),
        *range(1, count, 2),
    ]
    many = rank_shards(index, 3, count + 2)  # more processes than shards: every shard, every (count+2)-th row
    assert many == [(n, 3, count + 2) for n in range(count)]


def test_deleting_items_rewrites_only_their_shards_and_matches_a_fresh_ingest(
    dataset, tiny_raw_dataset, config, tmp_path
):
    index = read_index(dataset)
    holder = index.shards[1]
    doomed = read_shard_ids(dataset, holder)[:2]
    table = read_ingested(dataset)
    images = [dataset / p for p in table.set_index("id").loc[doomed, "image"].dropna()]
    before = {e.file: _digest(dataset / "shards" / e.file) for e in index.shards}

    result = delete_items(dataset, [*doomed, "no-such-item"])

    assert (result.rows_removed, result.not_found, result.shards_rewritten) == (2, 1, [holder.file])
    after = {e.file: _digest(dataset / "shards" / e.file) for e in read_index(dataset).shards}
    assert [f for f in before if before[f] != after[f]] == [holder.file]
    assert not set(doomed) & {i for e in read_index(dataset).shards for i in read_shard_ids(dataset, e)}
    assert not set(doomed) & set(read_ingested(dataset)["id"])
    assert images and not any(path.exists() for path in images)
    assert read_index(dataset).rows == len(table) - 2

    # the content fingerprint is that of the same data ingested without the items
    source = tmp_path / "source"
    shutil.copytree(tiny_raw_dataset, source)
    manifest = source / "manifest.jsonl"
    lines = [line for line in manifest.read_text().splitlines() if json.loads(line)["id"] not in doomed]
    manifest.write_text("\n".join(lines) + "\n")
    fresh = ingest_dataset(source, tmp_path / "fresh", config)
    assert read_fingerprint(dataset)["fingerprint"] == fresh.fingerprint == result.fingerprint_after
    assert result.fingerprint_before != result.fingerprint_after
    # deleting again finds nothing and rewrites nothing
    again = delete_items(dataset, doomed)
    assert (again.rows_removed, again.shards_rewritten) == (0, [])


def test_tns_data_delete(dataset, tmp_path, capsys):
    from tns.main import main

    victim = read_shard_ids(dataset, read_index(dataset).shards[0])[0]
    ids = tmp_path / "ids.txt"
    ids.write_text(f"{victim}\n\n")
    assert main(["data", "delete", str(dataset), "--ids", str(ids)]) == 0
    out = capsys.readouterr().out
    assert "deleted 1 of 1 item(s)" in out and "rewrote 1 shard(s)" in out
    assert victim not in set(read_ingested(dataset)["id"])

    assert main(["data", "delete", str(tmp_path / "nowhere"), "--ids", str(ids)]) == 1
    assert "shards/index.json" in capsys.readouterr().err


def test_an_artifact_without_shards_says_to_ingest_again(tmp_path):
    with pytest.raises(ShardError, match="ingest step again"):
        read_index(tmp_path)


def test_write_shards_of_no_rows_writes_one_empty_shard(tmp_path):
    frame = pd.DataFrame(columns=["id", "text", "image", "item_hash", "modality", "hate"]).astype(
        {"hate": float}
    )
    index = write_shards(frame, tmp_path, ["hate"], 10, 1000)
    assert [e.rows for e in index.shards] == [0] and index.policies == ["hate"]


def test_a_training_process_fetches_only_its_own_shards_from_an_object_store(dataset, tmp_path):
    import uuid

    from core.common.storage import publish
    from core.data.shards import fetch_rank_shards

    uri = f"memory://pipeline-root/{uuid.uuid4().hex}/dataset"
    publish(dataset, uri)
    fetched = fetch_rank_shards(uri, tmp_path / "rank1", rank=1, ranks=2)
    index = read_index(fetched)
    present = sorted(p.name for p in (fetched / "shards").glob("part-*.parquet"))
    assert present == [index.shards[n].file for n in range(1, len(index.shards), 2)]
    assert (fetched / "fingerprint.json").is_file() and not (fetched / "images").exists()
    assert fetch_rank_shards(str(dataset), tmp_path / "unused", 0, 2) == dataset  # a local dataset in place
