"""Reading datasets: a manifest folder (jsonl, csv or parquet) or the Hateful Memes layout.

The result is a DataFrame with the manifest's columns, text and image normalised to `str` or `None`,
and label columns made numeric (values that are not numbers become NaN, so validation can name them).
Nothing here judges the data: that is validation's job.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from components.common.constants import (
    COL_ID,
    COL_IMAGE,
    COL_SPLIT,
    COL_TEXT,
    HATEFUL_MEMES_FILES,
    HATEFUL_MEMES_POLICY,
    MANIFEST_NAMES,
)


class DatasetFormatError(ValueError):
    """The dataset cannot be read at all (no manifest, unparseable file)."""


def find_manifest(source: Path) -> Path | None:
    """Returns the manifest file of a dataset folder (or the file itself), or None for Hateful Memes."""
    if source.is_file():
        return source
    if not source.is_dir():
        raise DatasetFormatError(f"dataset path {source} does not exist")
    for name in MANIFEST_NAMES:
        if (source / name).is_file():
            return source / name
    if any((source / name).is_file() for name in HATEFUL_MEMES_FILES):
        return None
    raise DatasetFormatError(
        f"no manifest in {source}: expected one of manifest.jsonl, manifest.csv, manifest.parquet "
        "or the Hateful Memes files train.jsonl/dev.jsonl/test.jsonl"
    )


def read_table(path: Path) -> pd.DataFrame:
    """Reads one manifest file by its suffix; an empty file gives an empty frame."""
    try:
        if path.suffix == ".jsonl":
            rows = [
                json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
            ]
            return pd.DataFrame(rows, dtype=object)  # object keeps ids like 7 from becoming 7.0 next to nulls
        if path.suffix == ".csv":
            if path.stat().st_size == 0:
                return pd.DataFrame()
            return pd.read_csv(path, dtype={COL_ID: str, COL_TEXT: str, COL_IMAGE: str}, keep_default_na=True)
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
    except (json.JSONDecodeError, pd.errors.ParserError, OSError, ValueError) as error:
        raise DatasetFormatError(f"cannot read {path}: {error}") from error
    raise DatasetFormatError(
        f"unsupported manifest type {path.suffix!r} ({path}); use .jsonl, .csv or .parquet"
    )


def _read_hateful_memes(folder: Path) -> pd.DataFrame:
    frames = []
    for name, split in HATEFUL_MEMES_FILES.items():
        if (folder / name).is_file():
            frame = read_table(folder / name)
            if (
                "label" not in frame.columns
            ):  # the unseen test sets ship without labels: nothing to learn or score
                continue
            frame = frame.rename(columns={"img": COL_IMAGE, "label": HATEFUL_MEMES_POLICY})
            frame[COL_SPLIT] = split
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _clean_text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    text = str(value)
    return text if text.strip() else None


def load_dataset(source: str | Path, policies: Sequence[str]) -> tuple[pd.DataFrame, Path]:
    """Loads a dataset into a normalised frame.

    Args:
        source: A dataset folder, a manifest file, or a Hateful Memes folder.
        policies: Policy label columns to make numeric (missing ones are left missing for validation).

    Returns:
        The frame and the folder that image paths are relative to.

    Raises:
        DatasetFormatError: When no manifest can be found or read.
    """
    source = Path(source).expanduser().resolve()
    manifest = find_manifest(source)
    if manifest is None:
        frame, root = _read_hateful_memes(source), source
    else:
        frame, root = read_table(manifest), manifest.parent
    frame = frame.copy()
    if COL_ID in frame.columns:
        frame[COL_ID] = frame[COL_ID].map(
            lambda v: None if v is None or (isinstance(v, float) and pd.isna(v)) else str(v)
        )
    for column in (COL_TEXT, COL_IMAGE):
        if column not in frame.columns:
            frame[column] = None
        frame[column] = frame[column].map(_clean_text).astype(object)
    for policy in policies:
        if policy in frame.columns:
            frame[policy] = pd.to_numeric(frame[policy], errors="coerce").astype(float)
    return frame.reset_index(drop=True), root
