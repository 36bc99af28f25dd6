"""Preparing ingested rows for a run: copies of an item collapsed, their labels merged, missing labels resolved.

Real corpora hold re-sent, forwarded and copy-pasted items, and their rows are annotated for only some policies
(each review queue labels its own). With `split.deduplicate` (the default), the copies of an item (same text and
image; `split.duplicate_key: normalized` also ignores case, whitespace, URLs and digits) become one row:

* the row kept is the first copy in the earliest fixed split (train, then validation, then test), or the first
  copy when no copy has a split: validation/test copies of a train item are dropped, train keeps it;
* labels are merged over all copies: a policy annotated on any copy is annotated on the kept row; copies that
  disagree on a policy leave it not annotated there, and are counted as label conflicts;
* a value that is not a label stays recorded, so validation still refuses it.

Then `data.missing_labels` decides what a missing label means: `mask` (kept as missing; a row annotated for none
of the run's policies carries no training signal and is dropped), `negative` (filled with 0) or `refuse` (left
for validation to refuse). Rows that validation will refuse anyway (no text and no image, a split value that is
not a split) are never collapsed, so their refusal is not hidden. Everything done is counted, with examples, in
a `Preparation` record that validation shows as warnings.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.common.constants import (
    COL_ID,
    COL_IMAGE,
    COL_IMAGE_SHA256,
    COL_INVALID_LABELS,
    COL_ITEM_HASH,
    COL_MODALITY,
    COL_SPLIT,
    COL_TEXT,
    DUPLICATE_KEY_NORMALIZED,
    MISSING_LABELS_MASK,
    MISSING_LABELS_NEGATIVE,
    MODALITY_NONE,
    SPLITS,
)
from core.config.run import SplitConfig
from core.data.formats import invalid_labels

MAX_EXAMPLES = 5
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_DIGITS = re.compile(r"\d+")
_SPACE = re.compile(r"\s+")


@dataclass
class Preparation:
    """What preparing a dataset changed: counts and a few examples of each change."""

    rows_read: int = 0
    rows_kept: int = 0
    deduplicate: bool = True
    duplicate_key: str = "exact"
    copies_dropped: int = 0
    items_with_copies: int = 0
    cross_split_copies_dropped: int = 0
    duplicate_examples: list[str] = field(default_factory=list)
    label_conflicts: dict[str, int] = field(default_factory=dict)
    conflict_examples: list[str] = field(default_factory=list)
    missing_labels: str = MISSING_LABELS_MASK
    filled_as_negative: dict[str, int] = field(default_factory=dict)
    unannotated_dropped: int = 0
    unannotated_examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preparation:
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def summary(self) -> str:
        """One sentence on what preparing the data changed (copies, label conflicts, unannotated rows)."""
        parts = [f"{self.rows_read} rows read, {self.rows_kept} used"]
        if self.copies_dropped:
            parts.append(
                f"{self.copies_dropped} copies of {self.items_with_copies} item(s) collapsed "
                f"({self.cross_split_copies_dropped} across fixed splits)"
            )
        conflicts = sum(self.label_conflicts.values())
        if conflicts:
            parts.append(f"{conflicts} label conflict(s) between copies left unannotated")
        if self.unannotated_dropped:
            parts.append(f"{self.unannotated_dropped} row(s) annotated for no policy dropped")
        filled = sum(self.filled_as_negative.values())
        if filled:
            parts.append(f"{filled} missing label(s) counted as negative")
        return "; ".join(parts) + "."


def normalized_text(text: str | None) -> str:
    """The text as a near-duplicate key sees it: case-folded, URLs and digit runs replaced, spaces collapsed."""
    if text is None:
        return ""
    text = _DIGITS.sub("0", _URL.sub(" <url> ", text.casefold()))
    return _SPACE.sub(" ", text).strip()


def duplicate_keys(frame: pd.DataFrame, key: str) -> pd.Series:
    """The copy key of each row: its item hash, or a hash of its normalised text and its image content."""
    if key != DUPLICATE_KEY_NORMALIZED:
        return frame[COL_ITEM_HASH]
    images = frame[COL_IMAGE_SHA256].where(frame[COL_IMAGE_SHA256].notna(), frame[COL_IMAGE])
    return pd.Series(
        [
            hashlib.sha256(f"{normalized_text(t)}\x1f{i or ''}".encode()).hexdigest()
            for t, i in zip(frame[COL_TEXT], images, strict=True)
        ],
        index=frame.index,
    )


def _ref(frame: pd.DataFrame, row: int) -> str:
    value = frame.at[row, COL_ID] if COL_ID in frame.columns else None
    return f"id={value}" if isinstance(value, str) else f"row={row}"


def _split_of(frame: pd.DataFrame, row: int) -> str | None:
    value = frame.at[row, COL_SPLIT] if COL_SPLIT in frame.columns else None
    return value if isinstance(value, str) and value else None


def _collapse(frame: pd.DataFrame, policies: list[str], key: str, record: Preparation) -> pd.DataFrame:
    rank = {name: index for index, name in enumerate(SPLITS)}
    splits = [_split_of(frame, row) for row in range(len(frame))]
    # Rows validation refuses anyway stay as they are, so that their refusal is not hidden by a merge.
    eligible = (frame[COL_MODALITY] != MODALITY_NONE).to_numpy() & np.array(
        [s is None or s in rank for s in splits], dtype=bool
    )
    keys = duplicate_keys(frame, key)
    groups: dict[str, list[int]] = {}
    for row, (copy_key, ok) in enumerate(zip(keys, eligible, strict=True)):
        if ok:
            groups.setdefault(copy_key, []).append(row)

    drop: set[int] = set()
    for rows in groups.values():
        if len(rows) < 2:
            continue
        keep = min(rows, key=lambda r: (rank.get(splits[r], len(rank)), r))
        dropped = [r for r in rows if r != keep]
        drop.update(dropped)
        record.items_with_copies += 1
        record.copies_dropped += len(dropped)
        crossing = [r for r in dropped if splits[r] is not None and splits[r] != splits[keep]]
        record.cross_split_copies_dropped += len(crossing)
        if len(record.duplicate_examples) < MAX_EXAMPLES:
            shown = [keep, *(crossing or dropped)][:3]
            text = " ~ ".join(f"{_ref(frame, r)} ({splits[r] or 'no split'})" for r in shown)
            record.duplicate_examples.append(f"kept {text}" + (" ..." if len(rows) > 3 else ""))
        _merge_labels(frame, policies, keep, rows, record)
    return frame.drop(index=sorted(drop)).reset_index(drop=True)


def _merge_labels(
    frame: pd.DataFrame, policies: list[str], keep: int, rows: list[int], record: Preparation
) -> None:
    invalid: dict[str, str] = {}
    for row in rows:
        for policy, raw in invalid_labels(frame.at[row, COL_INVALID_LABELS]).items():
            invalid.setdefault(policy, raw)
    conflicted = []
    for policy in policies:
        values = {float(v) for v in frame.loc[rows, policy] if not math.isnan(v)}
        if len(values) > 1:
            conflicted.append(policy)
            record.label_conflicts[policy] = record.label_conflicts.get(policy, 0) + 1
        frame.at[keep, policy] = values.pop() if len(values) == 1 else math.nan
    if conflicted and len(record.conflict_examples) < MAX_EXAMPLES:
        shown = " ~ ".join(_ref(frame, r) for r in rows[:3])
        record.conflict_examples.append(f"{shown}: copies disagree on {', '.join(conflicted)}")
    frame.at[keep, COL_INVALID_LABELS] = json.dumps(invalid, ensure_ascii=False) if invalid else None


def prepare_frame(
    frame: pd.DataFrame, policies: Sequence[str], split: SplitConfig, missing_labels: str
) -> tuple[pd.DataFrame, Preparation]:
    """Collapses copies (when `split.deduplicate`) and resolves missing labels.

    Args:
        frame: Ingested rows: id, text, image, image_sha256, item_hash, modality, invalid_labels, the policy
            columns that exist (0.0, 1.0 or NaN) and an optional split.
        policies: The run's policies (absent columns are skipped: validation names them).
        split: `deduplicate` and `duplicate_key` are used.
        missing_labels: `data.missing_labels` (mask, negative or refuse).

    Returns:
        The prepared rows (a new frame) and what was done to them.
    """
    present = [p for p in policies if p in frame.columns]
    record = Preparation(
        rows_read=len(frame),
        deduplicate=split.deduplicate,
        duplicate_key=split.duplicate_key,
        missing_labels=missing_labels,
    )
    frame = frame.reset_index(drop=True).copy()
    if split.deduplicate and len(frame):
        frame = _collapse(frame, present, split.duplicate_key, record)
    if missing_labels == MISSING_LABELS_NEGATIVE:
        for policy in present:
            invalid = frame[COL_INVALID_LABELS].map(lambda cell, p=policy: p in invalid_labels(cell))
            fill = frame[policy].isna() & ~invalid.astype(bool)
            record.filled_as_negative[policy] = int(fill.sum())
            frame.loc[fill, policy] = 0.0
    elif missing_labels == MISSING_LABELS_MASK and present:
        unannotated = (
            frame[present].isna().all(axis=1)
            & frame[COL_INVALID_LABELS].isna()
            & (frame[COL_MODALITY] != MODALITY_NONE)
        )
        record.unannotated_dropped = int(unannotated.sum())
        record.unannotated_examples = [_ref(frame, r) for r in frame.index[unannotated][:MAX_EXAMPLES]]
        frame = frame[~unannotated].reset_index(drop=True)
    record.rows_kept = len(frame)
    return frame, record
