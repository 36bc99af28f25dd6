"""The golden batch: which test items export and infra validation compare on, and how it round-trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.common.constants import (
    COL_ID,
    COL_IMAGE,
    COL_MODALITY,
    COL_SPLIT,
    COL_TEXT,
    MODALITY_BOTH,
    MODALITY_IMAGE,
    MODALITY_TEXT,
)
from core.export.golden import GoldenSet, select_golden

PREFIX = {MODALITY_BOTH: "both", MODALITY_TEXT: "text", MODALITY_IMAGE: "image"}


def _frame(folder: Path, modalities: dict[str, int], split: str = "test") -> pd.DataFrame:
    rows = []
    for modality, count in modalities.items():
        for i in range(count):
            item = f"{PREFIX[modality]}-{i:02d}"
            image = None
            if modality != MODALITY_TEXT:
                image = f"images/{item}.png"
                (folder / "images").mkdir(exist_ok=True)
                (folder / image).write_bytes(f"png {item}".encode())
            text = None if modality == MODALITY_IMAGE else f"caption {item}"
            rows.append(
                {COL_ID: item, COL_TEXT: text, COL_IMAGE: image, COL_MODALITY: modality, COL_SPLIT: split}
            )
    return pd.DataFrame(rows)


def test_a_third_of_each_modality_then_multimodal_items(tmp_path: Path):
    frame = _frame(tmp_path, {MODALITY_BOTH: 20, MODALITY_TEXT: 5, MODALITY_IMAGE: 2})
    frame = pd.concat(
        [frame, _frame(tmp_path, {MODALITY_TEXT: 3}, split="train").assign(id=lambda f: "train-" + f.id)]
    )
    golden = select_golden(tmp_path, frame, ["hate", "spam"], 12)
    assert len(golden) == 12
    assert golden.modalities.count(MODALITY_TEXT) == 4 and golden.modalities.count(MODALITY_IMAGE) == 2
    assert golden.modalities.count(MODALITY_BOTH) == 6
    assert not any(item.startswith("train-") for item in golden.ids)  # test split only
    row = golden.ids.index("both-00")
    assert golden.texts[row] == "caption both-00" and golden.images[row] == b"png both-00"
    assert golden.images[golden.indices(MODALITY_TEXT)[0]] is None
    assert select_golden(tmp_path, frame, ["hate"], 12).ids == golden.ids  # deterministic


def test_a_single_modality_dataset_gives_a_single_modality_batch(tmp_path: Path):
    golden = select_golden(tmp_path, _frame(tmp_path, {MODALITY_TEXT: 10}), ["hate"], 6)
    assert golden.modalities == [MODALITY_TEXT] * 6


def test_an_empty_test_split_is_an_error(tmp_path: Path):
    with pytest.raises(ValueError, match="no items"):
        select_golden(tmp_path, _frame(tmp_path, {MODALITY_BOTH: 3}, split="train"), ["hate"], 6)


def test_save_and_load_round_trip_with_probabilities(tmp_path: Path):
    golden = select_golden(tmp_path, _frame(tmp_path, {MODALITY_BOTH: 2, MODALITY_TEXT: 1}), ["a", "b"], 3)
    golden.probabilities = np.asarray([[0.1, 0.9], [0.25, 0.5], [1e-7, 1.0]], dtype=np.float32)
    golden.save(tmp_path / "golden")
    loaded = GoldenSet.load(tmp_path / "golden")
    assert (loaded.ids, loaded.texts, loaded.images) == (golden.ids, golden.texts, golden.images)
    assert loaded.policies == ["a", "b"] and loaded.modalities == golden.modalities
    np.testing.assert_array_equal(loaded.probabilities, golden.probabilities)


def test_abs_difference_is_infinite_where_either_side_is_not_finite():
    import numpy as np

    from core.export.golden import abs_difference

    diff = abs_difference(np.array([0.5, np.nan, 0.2, np.inf]), np.array([0.25, 0.1, np.nan, 0.3]))
    assert diff.tolist() == [0.25, np.inf, np.inf, np.inf]
    assert not diff.max() <= 1e-4  # a tolerance check now fails on NaN outputs
