"""Columns derived from an ingested table before validation, from properties GX cannot compute.

Their names start with `_`; the suite (`suite.json`) checks them like the dataset's own columns.
`derive_columns` adds each one whose source columns are present: `_image_decodable` and `_image_size`
(outcome of bounded decoding of each image, "ok", "absent", "not_checked" or the failure reason),
`_label_<policy>` ("ok", "missing" or "invalid"), `_text_bytes` (UTF-8 size of the text), `_split_leak` (the
row's item also appears in another split), `_group_leak` (the row's group is fixed to more than one split),
`_text_language` (the language of rows with text; "no_text" otherwise). `_row` (the row number) identifies
failing rows in GX results.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from core.common.constants import (
    COL_GROUP,
    COL_IMAGE,
    COL_INVALID_LABELS,
    COL_ITEM_HASH,
    COL_LANGUAGE,
    COL_SPLIT,
    COL_TEXT,
)
from core.common.images import ImageDecodeError, ImageFileError, decode_image, read_image_file
from core.config.run import RunConfig, ValidationConfig
from core.data.formats import invalid_labels
from core.data.ingest import (
    COL_IMAGE_FILE_STATUS,
    IMAGE_ABSENT,
    IMAGE_OK,
    IMAGE_TOO_MANY_BYTES,
)

ROW_COLUMN = "_row"
COL_IMAGE_DECODABLE = "_image_decodable"
COL_IMAGE_SIZE = "_image_size"
COL_SPLIT_LEAK = "_split_leak"
COL_GROUP_LEAK = "_group_leak"
COL_TEXT_BYTES = "_text_bytes"
COL_TEXT_LANGUAGE = "_text_language"
LABEL_STATE_PREFIX = "_label_"
LABEL_OK, LABEL_MISSING, LABEL_INVALID = "ok", "missing", "invalid"
NO_TEXT = "no_text"
IMAGE_NOT_CHECKED = "not_checked"
IMAGE_UNREADABLE = "unreadable"
_DECODE_REASONS = frozenset({"empty", "undecodable", IMAGE_UNREADABLE})
_OBJECT_REPR = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>")


def _check_images(
    frame: pd.DataFrame, dataset_dir: Path, limits: ValidationConfig
) -> tuple[list[str], list[str], dict[int, str]]:
    """Decodes every present image once (bounded); returns per-row decodability, size status and details."""
    root = dataset_dir.resolve()
    pairs = list(zip(frame[COL_IMAGE_FILE_STATUS], frame[COL_IMAGE], strict=True))
    unique = list(dict.fromkeys(rel for status, rel in pairs if status == IMAGE_OK and isinstance(rel, str)))
    checked = {relative: _check_image(root, relative, limits) for relative in unique}
    decodable, size, details = [], [], {}
    for row, (status, relative) in enumerate(pairs):
        if status == IMAGE_ABSENT:
            decodable.append(IMAGE_ABSENT)
            size.append(IMAGE_ABSENT)
        elif relative in checked and status == IMAGE_OK:
            decode_status, size_status, detail = checked[relative]
            decodable.append(decode_status)
            size.append(size_status)
            if detail:
                details[row] = detail
        elif status == IMAGE_TOO_MANY_BYTES:  # found, but ingestion did not copy (nor read) a file that large
            decodable.append(IMAGE_NOT_CHECKED)
            size.append(IMAGE_TOO_MANY_BYTES)
            details[row] = f"{IMAGE_TOO_MANY_BYTES}: {relative} has more than {limits.image_max_bytes} bytes"
        else:  # missing file or unsafe path: reported by image_file_found
            decodable.append(IMAGE_NOT_CHECKED)
            size.append(IMAGE_NOT_CHECKED)
    return decodable, size, details


def _check_image(root: Path, relative: str, limits: ValidationConfig) -> tuple[str, str, str]:
    try:
        data = read_image_file(root, relative, limits.image_max_bytes)
    except ImageFileError as error:
        if error.reason == IMAGE_TOO_MANY_BYTES:
            return IMAGE_NOT_CHECKED, IMAGE_TOO_MANY_BYTES, f"{IMAGE_TOO_MANY_BYTES}: {error.problem}"
        return IMAGE_UNREADABLE, IMAGE_NOT_CHECKED, f"{IMAGE_UNREADABLE}: {error.reason}: {error.problem}"
    try:
        decode_image(data, max_pixels=limits.image_max_pixels, min_side=limits.image_min_side)
    except ImageDecodeError as error:
        detail = _OBJECT_REPR.sub("", str(error)).strip()
        if error.reason in _DECODE_REASONS:
            return error.reason, IMAGE_NOT_CHECKED, detail
        return IMAGE_NOT_CHECKED, error.reason, detail
    return "ok", "ok", ""


def _leak(frame: pd.DataFrame, key: str) -> pd.Series:
    """Flags rows whose `key` (item hash, group) also occurs, in the rows with a split, under another split."""
    has_split = frame[COL_SPLIT].notna() & frame[key].notna()
    splits_per_key = frame[has_split].groupby(key)[COL_SPLIT].nunique()
    leaking = set(splits_per_key[splits_per_key > 1].index)
    return (has_split & frame[key].isin(leaking)).astype(bool)


def _label_states(frame: pd.DataFrame, policy: str) -> pd.Series:
    invalid = (
        frame[COL_INVALID_LABELS].map(lambda cell: policy in invalid_labels(cell))
        if COL_INVALID_LABELS in frame.columns
        else pd.Series(False, index=frame.index)
    )
    states = pd.Series(LABEL_OK, index=frame.index, dtype=object)
    states[frame[policy].isna()] = LABEL_MISSING
    states[invalid.astype(bool)] = LABEL_INVALID
    return states


def derive_columns(
    frame: pd.DataFrame, dataset_dir: Path, config: RunConfig
) -> tuple[pd.DataFrame, dict[int, str]]:
    """Adds `_row` and the derived columns whose source columns are present to a copy of `frame`.

    Args:
        frame: Rows as written by ingest (`read_ingested`).
        dataset_dir: Folder the `image` paths are relative to.
        config: Run configuration; `policies` names the label columns, `validation` the image bounds.

    Returns:
        The copy, indexed from 0, and the decoding failure of each image row that has one (by row number).
    """
    frame = frame.reset_index(drop=True).copy()
    frame[ROW_COLUMN] = range(len(frame))
    details: dict[int, str] = {}
    if {COL_IMAGE, COL_IMAGE_FILE_STATUS} <= set(frame.columns):
        decodable, size, details = _check_images(frame, dataset_dir, config.validation)
        frame[COL_IMAGE_DECODABLE] = pd.Series(decodable, dtype=object)
        frame[COL_IMAGE_SIZE] = pd.Series(size, dtype=object)
    for policy in config.policies:
        if policy in frame.columns:
            frame[LABEL_STATE_PREFIX + policy] = _label_states(frame, policy)
    if COL_TEXT in frame.columns:
        frame[COL_TEXT_BYTES] = pd.Series(
            [len(t.encode("utf-8")) if isinstance(t, str) else math.nan for t in frame[COL_TEXT]], dtype=float
        )
    if {COL_SPLIT, COL_ITEM_HASH} <= set(frame.columns):
        frame[COL_SPLIT_LEAK] = _leak(frame, COL_ITEM_HASH)
    if {COL_SPLIT, COL_GROUP} <= set(frame.columns):
        frame[COL_GROUP_LEAK] = _leak(frame, COL_GROUP)
    if {COL_LANGUAGE, COL_TEXT} <= set(frame.columns):  # a language is expected of rows with text only
        frame[COL_TEXT_LANGUAGE] = frame[COL_LANGUAGE].astype(object).where(frame[COL_TEXT].notna(), NO_TEXT)
    return frame, details
