"""The golden batch: raw test-split items and the probabilities PyTorch gives them.

Export and infra validation both compare against it, so the check that a served model answers like the trained
one starts from the same raw bytes a client would send.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.common.constants import (
    COL_ID,
    COL_IMAGE,
    COL_MODALITY,
    COL_SPLIT,
    COL_TEXT,
    MODALITIES,
    MODALITY_BOTH,
    SPLIT_TEST,
)
from core.common.images import read_image_file

GOLDEN_ITEMS_FILE = "items.json"
GOLDEN_IMAGES_DIR = "images"


@dataclass
class GoldenSet:
    """Raw items (text or None, encoded image bytes or None) with the reference probabilities."""

    ids: list[str]
    modalities: list[str]
    texts: list[str | None]
    images: list[bytes | None]
    policies: list[str]
    probabilities: np.ndarray | None = None  # (N, len(policies)), float32, from the PyTorch model

    def __len__(self) -> int:
        return len(self.ids)

    def indices(self, modality: str) -> list[int]:
        """Positions of the items of one modality."""
        return [i for i, m in enumerate(self.modalities) if m == modality]

    def save(self, folder: str | Path) -> None:
        """Writes `items.json` and the image files under `folder`."""
        folder = Path(folder)
        (folder / GOLDEN_IMAGES_DIR).mkdir(parents=True, exist_ok=True)
        records = []
        for row, item_id in enumerate(self.ids):
            image_file = None
            if self.images[row]:
                image_file = f"{GOLDEN_IMAGES_DIR}/{row:04d}.bin"
                (folder / image_file).write_bytes(self.images[row])
            records.append(
                {
                    "id": item_id,
                    "modality": self.modalities[row],
                    "text": self.texts[row],
                    "image": image_file,
                    "probabilities": None
                    if self.probabilities is None
                    else [float(p) for p in self.probabilities[row]],
                }
            )
        document = {"policies": self.policies, "items": records}
        (folder / GOLDEN_ITEMS_FILE).write_text(json.dumps(document, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> GoldenSet:
        """Reads a golden set written by `save`."""
        folder = Path(folder)
        document = json.loads((folder / GOLDEN_ITEMS_FILE).read_text(encoding="utf-8"))
        items = document["items"]
        probabilities = None
        if items and all(item["probabilities"] is not None for item in items):
            probabilities = np.asarray([item["probabilities"] for item in items], dtype=np.float32)
        return cls(
            ids=[item["id"] for item in items],
            modalities=[item["modality"] for item in items],
            texts=[item["text"] for item in items],
            images=[read_image_file(folder, item["image"]) if item["image"] else None for item in items],
            policies=list(document["policies"]),
            probabilities=probabilities,
        )


def abs_difference(actual: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """|actual - expected| element-wise, infinite where either side is NaN or infinite, so that a comparison
    with a tolerance fails on non-finite outputs (`max` and `>` would pass NaN through silently)."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    finite = np.isfinite(actual) & np.isfinite(expected)
    return np.where(finite, np.abs(np.where(finite, actual - expected, 0.0)), np.inf)


def select_golden(dataset_dir: str | Path, frame: pd.DataFrame, policies: list[str], size: int) -> GoldenSet:
    """Picks up to `size` test-split items, a third of each modality present, deterministically.

    A dataset without some modality (e.g. text only) gives a golden batch without it: the model is not meant
    to serve what it never saw.

    Args:
        dataset_dir: The ingested dataset (image paths are relative to it).
        frame: The split frame (with `split` and `modality` columns).
        policies: The model's policies, in output order.
        size: How many items to pick.

    Raises:
        ValueError: When the test split is empty.
    """
    test = frame[frame[COL_SPLIT] == SPLIT_TEST].sort_values(COL_ID, kind="stable")
    present = [m for m in MODALITIES if (test[COL_MODALITY] == m).any()]
    if not present:
        raise ValueError("the test split has no items for the golden batch")
    share = max(1, size // len(present))
    picked = pd.concat([test[test[COL_MODALITY] == m].head(share) for m in present])
    rest = test[~test[COL_ID].isin(picked[COL_ID])]
    rest = pd.concat([rest[rest[COL_MODALITY] == MODALITY_BOTH], rest[rest[COL_MODALITY] != MODALITY_BOTH]])
    picked = pd.concat([picked, rest.head(max(0, size - len(picked)))])
    texts, images = raw_items(dataset_dir, picked)
    return GoldenSet(
        ids=picked[COL_ID].astype(str).tolist(),
        modalities=picked[COL_MODALITY].tolist(),
        texts=texts,
        images=images,
        policies=list(policies),
    )


def raw_items(dataset_dir: str | Path, frame: pd.DataFrame) -> tuple[list[str | None], list[bytes | None]]:
    """The rows' texts (None where absent) and encoded image bytes (None where absent), as a client sends them."""
    dataset_dir = Path(dataset_dir)
    texts = [t if isinstance(t, str) else None for t in frame[COL_TEXT]]
    images = [read_image_file(dataset_dir, p) if isinstance(p, str) else None for p in frame[COL_IMAGE]]
    return texts, images
