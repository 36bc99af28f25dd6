"""Preparing rows (copies collapsed, labels merged, missing labels resolved) and group-aware splits."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from core.config.run import SplitConfig
from core.data.prepare import normalized_text, prepare_frame
from core.data.split import assign_splits, label_counts

POLICIES = ["hate", "spam"]


def frame_of(rows: list[dict]) -> pd.DataFrame:
    """Ingest-shaped rows: the item hash is the text (same text = same item), no images."""
    records = []
    for i, row in enumerate(rows):
        records.append(
            {
                "id": row.get("id", f"r{i}"),
                "text": row.get("text"),
                "image": None,
                "image_sha256": None,
                "item_hash": f"hash:{row.get('text')}",
                "modality": "text-only" if row.get("text") else "none",
                "split": row.get("split"),
                "invalid_labels": json.dumps(row["invalid"]) if row.get("invalid") else None,
                "hate": float("nan") if row.get("hate") is None else float(row["hate"]),
                "spam": float("nan") if row.get("spam") is None else float(row["spam"]),
            }
        )
    return pd.DataFrame(records)


def test_copies_collapse_to_the_train_copy_with_merged_labels():
    rows = [
        {"id": "t", "text": "buy now", "split": "test", "hate": 0},
        {"id": "a", "text": "buy now", "split": "train", "spam": 1},
        {"id": "u", "text": "buy now", "hate": 0},
        {"id": "other", "text": "hello", "hate": 1, "spam": 0},
    ]
    prepared, record = prepare_frame(frame_of(rows), POLICIES, SplitConfig(), "mask")
    assert prepared["id"].tolist() == ["a", "other"]  # the train copy wins, file order otherwise kept
    kept = prepared.set_index("id").loc["a"]
    assert (kept["hate"], kept["spam"]) == (0.0, 1.0)  # annotated on different copies: merged
    assert (record.copies_dropped, record.items_with_copies, record.cross_split_copies_dropped) == (2, 1, 1)
    assert record.duplicate_examples == ["kept id=a (train) ~ id=t (test)"]
    assert (record.rows_read, record.rows_kept) == (4, 2)


def test_disagreeing_copies_keep_no_label_and_invalid_values_survive():
    rows = [
        {"id": "a", "text": "x", "hate": 1, "spam": 0},
        {"id": "b", "text": "x", "hate": 0, "spam": 0, "invalid": {"spam": '"yes"'}},
    ]
    prepared, record = prepare_frame(frame_of(rows), POLICIES, SplitConfig(), "mask")
    assert len(prepared) == 1 and math.isnan(prepared.loc[0, "hate"]) and prepared.loc[0, "spam"] == 0.0
    assert record.label_conflicts == {"hate": 1}
    assert record.conflict_examples == ["id=a ~ id=b: copies disagree on hate"]
    assert json.loads(prepared.loc[0, "invalid_labels"]) == {"spam": '"yes"'}  # still refused by validation


def test_deduplication_off_keeps_every_row():
    rows = [
        {"id": "a", "text": "x", "hate": 1, "split": "train"},
        {"id": "b", "text": "x", "split": "test", "spam": 0},
    ]
    prepared, record = prepare_frame(frame_of(rows), POLICIES, SplitConfig(deduplicate=False), "mask")
    assert prepared["id"].tolist() == ["a", "b"] and record.copies_dropped == 0


def test_rows_validation_refuses_are_never_collapsed():
    rows = [
        {"id": "a", "text": "x", "hate": 1},
        {"id": "b", "text": "x", "hate": 1, "split": "dev"},  # not a split: validation must see it
        {"id": "c", "text": None, "hate": 1},
        {"id": "d", "text": None, "hate": 0},  # no modality: validation must see both
    ]
    prepared, record = prepare_frame(frame_of(rows), POLICIES, SplitConfig(), "mask")
    assert prepared["id"].tolist() == ["a", "b", "c", "d"] and record.copies_dropped == 0


def test_normalized_key_collapses_near_duplicates():
    assert normalized_text("  Buy NOW\thttp://a.co/x 123 ") == normalized_text("buy now https://b.org 9")
    assert normalized_text("buy now") != normalized_text("buy later")
    rows = [
        {"id": "a", "text": "WIN 100 coins www.x.io", "spam": 1},
        {"id": "b", "text": "win 5 coins https://y", "spam": 1},
    ]
    exact, _ = prepare_frame(frame_of(rows), POLICIES, SplitConfig(), "mask")
    near, record = prepare_frame(frame_of(rows), POLICIES, SplitConfig(duplicate_key="normalized"), "mask")
    assert len(exact) == 2 and near["id"].tolist() == ["a"] and record.duplicate_key == "normalized"


@pytest.mark.parametrize(
    ("mode", "ids", "hate_of_b"),
    [("mask", ["a", "b"], None), ("negative", ["a", "b", "c"], 0.0), ("refuse", ["a", "b", "c"], None)],
)
def test_missing_label_modes(mode, ids, hate_of_b):
    rows = [
        {"id": "a", "text": "one", "hate": 1, "spam": 0},
        {"id": "b", "text": "two", "spam": 1},  # not annotated for hate
        {"id": "c", "text": "three"},  # annotated for nothing
    ]
    prepared, record = prepare_frame(frame_of(rows), POLICIES, SplitConfig(), mode)
    assert prepared["id"].tolist() == ids
    value = prepared.set_index("id").loc["b", "hate"]
    assert (math.isnan(value) and hate_of_b is None) or value == hate_of_b
    assert record.unannotated_dropped == (1 if mode == "mask" else 0)
    assert record.filled_as_negative == ({"hate": 2, "spam": 1} if mode == "negative" else {})


def _grouped(n_groups: int, per_group: int) -> pd.DataFrame:
    rows = []
    for g in range(n_groups):
        for k in range(per_group):
            rows.append(
                {
                    "id": f"g{g}-{k}",
                    "item_hash": f"h{g}-{k}",
                    "group": f"template-{g}",
                    "modality": "text-only",
                    "hate": float(g % 4 == 0),
                    "spam": float("nan") if g % 2 else float(k % 2),
                }
            )
    return pd.DataFrame(rows)


def test_groups_never_straddle_splits_and_follow_a_fixed_member():
    frame = _grouped(60, 5)
    frame["split"] = None
    frame.loc[frame["id"] == "g7-3", "split"] = "test"
    splits = frame.assign(split=assign_splits(frame, POLICIES, SplitConfig(seed=3))["split"].to_numpy())
    per_group = splits.groupby("group")["split"].nunique()
    assert per_group.max() == 1
    assert set(splits.loc[splits["group"] == "template-7", "split"]) == {"test"}
    shares = splits["split"].value_counts(normalize=True)
    assert 0.1 <= shares["test"] <= 0.3 and 0.05 <= shares["validation"] <= 0.25
    # Without the group column the same rows straddle: the grouping is what keeps templates together.
    loose = frame.drop(columns=["group"])
    loose = loose.assign(split=assign_splits(loose, POLICIES, SplitConfig(seed=3))["split"].to_numpy())
    assert frame.assign(split=loose["split"]).groupby("group")["split"].nunique().max() > 1


def test_partially_annotated_blocks_reach_every_split():
    frame = _grouped(60, 5)
    splits = frame.assign(split=assign_splits(frame, POLICIES, SplitConfig())["split"].to_numpy())
    counts = label_counts(splits, POLICIES)
    for split in ("train", "validation", "test"):
        assert counts["spam"][split]["annotated"] > 0 and counts["spam"][split]["positives"] > 0
    assert sum(c["annotated"] for c in counts["spam"].values()) == 150  # half the groups annotate spam
    assert sum(c["annotated"] for c in counts["hate"].values()) == 300


def test_hatecheck_templates_stay_within_one_split():
    """Multilingual HateCheck's cases of one template are near-duplicates: split by `templ_id`, no template
    straddles train/validation/test; a split by item alone would let most of them straddle."""
    from tests.hatecheck import GROUP_COLUMN, POLICIES, cases

    frame = cases()
    frame = frame.assign(item_hash=frame["text"], modality="text-only", group=frame[GROUP_COLUMN])
    grouped = frame.assign(split=assign_splits(frame, POLICIES, SplitConfig())["split"].to_numpy())
    assert grouped.groupby(GROUP_COLUMN)["split"].nunique().max() == 1
    assert set(grouped["split"]) == {"train", "validation", "test"}
    by_item = frame.drop(columns=["group"])
    by_item = by_item.assign(split=assign_splits(by_item, POLICIES, SplitConfig())["split"].to_numpy())
    straddling = (by_item.groupby(GROUP_COLUMN)["split"].nunique() > 1).mean()
    assert straddling > 0.5, straddling
