"""Split: stratified train/validation/test assignment that never lets one item or one group straddle two splits.

A manifest's own `split` column wins where it is set; the remaining rows are assigned here. Rows sharing an
`item_hash` (the same text and image bytes) or a `group` (author, campaign, template: `split.group_column`) form
one unit and go to one split; a unit with a fixed row follows it. Units are stratified by their label pattern
(positive, negative or not annotated, per policy) and modality, so rare policies, partially annotated blocks and
the text-only/image-only slices appear in every split.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from core.common.constants import (
    COL_GROUP,
    COL_ID,
    COL_ITEM_HASH,
    COL_MODALITY,
    COL_SPLIT,
    SPLIT_TEST,
    SPLIT_TRAIN,
    SPLIT_VALIDATION,
    SPLITS,
    SPLITS_TABLE,
)
from core.config.run import SplitConfig
from core.data.ingest import read_ingested


def _units(frame: pd.DataFrame) -> list[int]:
    """The unit of each row: rows sharing an item hash or a group are joined (union-find over row numbers)."""
    parent = list(range(len(frame)))

    def find(row: int) -> int:
        while parent[row] != row:
            parent[row] = parent[parent[row]]
            row = parent[row]
        return row

    columns = [COL_ITEM_HASH] + ([COL_GROUP] if COL_GROUP in frame.columns else [])
    for column in columns:
        first: dict[str, int] = {}
        for row, value in enumerate(frame[column]):
            if isinstance(value, str) and value:
                if value in first:
                    parent[find(row)] = find(first[value])
                else:
                    first[value] = row
    return [find(row) for row in range(len(frame))]


def _label_codes(frame: pd.DataFrame, policies: Sequence[str]) -> np.ndarray:
    """Per row and policy: 1 positive, 0 negative, -1 not annotated."""
    present = [p for p in policies if p in frame.columns]
    if not present:
        return np.zeros((len(frame), 0), dtype=int)
    values = frame[present].to_numpy(dtype=float)
    return np.where(np.isnan(values), -1, values).astype(int)


def assign_splits(frame: pd.DataFrame, policies: Sequence[str], config: SplitConfig) -> pd.DataFrame:
    """Returns a frame with columns `id` and `split` for every row of `frame`.

    Args:
        frame: Ingested rows (needs id, item_hash, modality and the policy columns; `group` and `split` are
            optional).
        policies: Label columns used for stratification.
        config: Split fractions and seed.
    """
    fixed = frame[COL_SPLIT].tolist() if COL_SPLIT in frame.columns else [None] * len(frame)
    units = _units(frame)
    unit_split: dict[int, str] = {}
    for unit, split in zip(units, fixed, strict=True):
        if isinstance(split, str) and split:
            unit_split.setdefault(unit, split)

    strata: dict[tuple, list[int]] = defaultdict(list)
    seen: set[int] = set()
    codes = _label_codes(frame, policies)
    for row, (unit, modality) in enumerate(zip(units, frame[COL_MODALITY], strict=True)):
        if unit in unit_split or unit in seen:
            continue
        seen.add(unit)
        strata[(tuple(codes[row]), str(modality))].append(unit)

    rng = random.Random(config.seed)
    test_share, validation_share = config.test_fraction, config.validation_fraction
    carry = {SPLIT_TEST: 0.0, SPLIT_VALIDATION: 0.0}
    for key in sorted(strata):
        members = strata[key]
        rng.shuffle(members)
        # Carry rounding remainders across strata so that small strata still add up to the target shares.
        carry[SPLIT_TEST] += len(members) * test_share
        carry[SPLIT_VALIDATION] += len(members) * validation_share
        # A stratum of three or more units puts at least one in each split, so rare label combinations are
        # evaluated too; the carry (which may go negative) gives the share back on later strata.
        floor = 1 if len(members) >= 3 else 0
        n_test = min(len(members), max(floor, int(carry[SPLIT_TEST])))
        n_validation = min(len(members) - n_test, max(floor, int(carry[SPLIT_VALIDATION])))
        carry[SPLIT_TEST] -= n_test
        carry[SPLIT_VALIDATION] -= n_validation
        for index, unit in enumerate(members):
            if index < n_test:
                unit_split[unit] = SPLIT_TEST
            elif index < n_test + n_validation:
                unit_split[unit] = SPLIT_VALIDATION
            else:
                unit_split[unit] = SPLIT_TRAIN
    # A fixed row keeps its own split (a group fixed to two splits is refused by validation, not hidden here).
    assigned = [
        split if isinstance(split, str) and split else unit_split[unit]
        for unit, split in zip(units, fixed, strict=True)
    ]
    return pd.DataFrame({COL_ID: frame[COL_ID].to_numpy(), COL_SPLIT: assigned})


def label_counts(frame: pd.DataFrame, policies: Sequence[str]) -> dict[str, dict[str, dict[str, int]]]:
    """Annotated rows and positives per policy and split: `{policy: {split: {"annotated", "positives"}}}`.

    Args:
        frame: Rows with a `split` column and the policy columns (0.0, 1.0 or NaN for not annotated).
        policies: Policies to count (absent columns are skipped).
    """
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for policy in policies:
        if policy not in frame.columns:
            continue
        counts[policy] = {}
        for split in SPLITS:
            values = frame.loc[frame[COL_SPLIT] == split, policy]
            counts[policy][split] = {
                "annotated": int(values.notna().sum()),
                "positives": int((values == 1).sum()),
            }
    return counts


def split_dataset(
    dataset_dir: str | Path, out_dir: str | Path, policies: Sequence[str], config: SplitConfig
) -> dict:
    """Assigns splits for an ingested dataset and writes `splits.parquet`; returns rows per split."""
    splits = assign_splits(read_ingested(dataset_dir), policies, config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    splits.to_parquet(out_dir / SPLITS_TABLE, index=False)
    counts = splits[COL_SPLIT].value_counts()
    return {name: int(counts.get(name, 0)) for name in (SPLIT_TRAIN, SPLIT_VALIDATION, SPLIT_TEST)}


def read_split_frame(dataset_dir: str | Path, splits_dir: str | Path) -> pd.DataFrame:
    """The ingested rows joined with their split assignment."""
    frame = read_ingested(dataset_dir).drop(columns=[COL_SPLIT], errors="ignore")
    splits = pd.read_parquet(Path(splits_dir) / SPLITS_TABLE)
    return frame.merge(splits, on=COL_ID, how="left", validate="one_to_one")
