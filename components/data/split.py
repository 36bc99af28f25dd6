"""Split: stratified train/validation/test assignment that never lets one item straddle two splits.

A manifest's own `split` column wins where it is set; the remaining rows are assigned here. Rows sharing an
`item_hash` (the same text and image bytes) form one group and go to one split. Groups are stratified by
their label pattern and modality, so rare policies and the text-only/image-only slices appear in every split.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from components.common.config import SplitConfig
from components.common.constants import (
    COL_ID,
    COL_ITEM_HASH,
    COL_MODALITY,
    COL_SPLIT,
    SPLIT_TEST,
    SPLIT_TRAIN,
    SPLIT_VALIDATION,
    SPLITS_TABLE,
)
from components.data.ingest import read_ingested


def assign_splits(frame: pd.DataFrame, policies: Sequence[str], config: SplitConfig) -> pd.DataFrame:
    """Returns a frame with columns `id` and `split` for every row of `frame`.

    Args:
        frame: Ingested rows (needs id, item_hash, modality and the policy columns).
        policies: Label columns used for stratification.
        config: Split fractions and seed.
    """
    fixed = (
        frame[COL_SPLIT] if COL_SPLIT in frame.columns else pd.Series([None] * len(frame), index=frame.index)
    )
    group_split: dict[str, str] = {}
    for item_hash, split in zip(frame[COL_ITEM_HASH], fixed, strict=True):
        if isinstance(split, str) and split:
            group_split.setdefault(item_hash, split)

    strata: dict[tuple, list[str]] = defaultdict(list)
    seen: set[str] = set()
    labels = frame[list(policies)].fillna(0).astype(int).to_numpy()
    for row, (item_hash, modality) in enumerate(zip(frame[COL_ITEM_HASH], frame[COL_MODALITY], strict=True)):
        if item_hash in group_split or item_hash in seen:
            continue
        seen.add(item_hash)
        strata[(tuple(labels[row]), modality)].append(item_hash)

    rng = random.Random(config.seed)
    test_share, validation_share = config.test_fraction, config.validation_fraction
    carry = {SPLIT_TEST: 0.0, SPLIT_VALIDATION: 0.0}
    for key in sorted(strata):
        groups = strata[key]
        rng.shuffle(groups)
        # Carry rounding remainders across strata so that small strata still add up to the target shares.
        carry[SPLIT_TEST] += len(groups) * test_share
        carry[SPLIT_VALIDATION] += len(groups) * validation_share
        # A stratum of three or more groups puts at least one in each split, so rare label combinations are
        # evaluated too; the carry (which may go negative) gives the share back on later strata.
        floor = 1 if len(groups) >= 3 else 0
        n_test = min(len(groups), max(floor, int(carry[SPLIT_TEST])))
        n_validation = min(len(groups) - n_test, max(floor, int(carry[SPLIT_VALIDATION])))
        carry[SPLIT_TEST] -= n_test
        carry[SPLIT_VALIDATION] -= n_validation
        for index, item_hash in enumerate(groups):
            if index < n_test:
                group_split[item_hash] = SPLIT_TEST
            elif index < n_test + n_validation:
                group_split[item_hash] = SPLIT_VALIDATION
            else:
                group_split[item_hash] = SPLIT_TRAIN
    return pd.DataFrame(
        {COL_ID: frame[COL_ID].to_numpy(), COL_SPLIT: frame[COL_ITEM_HASH].map(group_split).to_numpy()}
    )


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
