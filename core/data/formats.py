"""Reading datasets: a manifest folder (jsonl, csv or parquet) or the Hateful Memes layout.

Files are read as they come from other tools: UTF-8 with or without a byte-order mark, LF or CRLF line ends.
A file that is not UTF-8, or a JSON line that does not parse, is a `DatasetFormatError` naming the file, the line
and the byte offset.

The result is a DataFrame with the manifest's columns, text and image normalised to `str` or `None`, and each
policy label column made a float column of 0.0, 1.0 or NaN. NaN means "not annotated for this policy" when the
manifest left the value empty (JSON `null`, an empty CSV cell, a parquet null). A value that is not a label
(`"yes"`, `2`) is NaN too, and is kept as written in the `invalid_labels` column, so validation can refuse it
and show what the user wrote. Nothing here judges the data: that is validation's job.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from core.common.constants import (
    COL_ID,
    COL_IMAGE,
    COL_INVALID_LABELS,
    COL_SPLIT,
    COL_TEXT,
    HATEFUL_MEMES_FILES,
    HATEFUL_MEMES_POLICY,
    MANIFEST_NAMES,
)

UTF8_BOM = b"\xef\xbb\xbf"
# Text a label may be written as (CSV cells are text; pandas writes a float column with gaps as 1.0/0.0 and a
# bool column as True/False).
_LABEL_TEXT = {"0": 0.0, "1": 1.0, "0.0": 0.0, "1.0": 1.0, "false": 0.0, "true": 1.0}


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


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def read_text(path: Path) -> tuple[str, int]:
    """The file decoded as UTF-8 with a leading byte-order mark dropped, line ends as written, and the byte
    offset the text starts at (3 after a byte-order mark, else 0).

    Raises:
        DatasetFormatError: Naming the line and byte offset of the first byte that is not UTF-8.
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DatasetFormatError(f"cannot read {path}: {error.strerror or error}") from error
    start = len(UTF8_BOM) if data.startswith(UTF8_BOM) else 0
    try:
        return data[start:].decode("utf-8"), start
    except UnicodeDecodeError as error:
        offset = start + error.start
        raise DatasetFormatError(
            f"{path}: line {_line_of(data, offset)} (byte offset {offset}) is not UTF-8 "
            f"(byte 0x{data[offset]:02x}); save the file as UTF-8 (most tools offer it under 'encoding')"
        ) from None


def _read_jsonl(path: Path) -> pd.DataFrame:
    text, offset = read_text(path)
    rows = []
    # Split on LF only: JSON strings may hold other characters that str.splitlines treats as line ends.
    for number, line in enumerate(text.split("\n"), start=1):
        content = line.strip().lstrip("\ufeff")  # a concatenated file may repeat the byte-order mark
        if content:
            try:
                row = json.loads(content)
            except json.JSONDecodeError as error:
                raise DatasetFormatError(
                    f"{path}: line {number} (byte offset {offset}) is not valid JSON: {error.msg} at column "
                    f"{error.colno}; fix or remove that line (one JSON object per line)"
                ) from None
            if not isinstance(row, dict):
                raise DatasetFormatError(
                    f"{path}: line {number} (byte offset {offset}) is a JSON {type(row).__name__}, not an "
                    "object; write one JSON object per line"
                )
            rows.append(row)
        offset += len(line.encode("utf-8")) + 1
    return pd.DataFrame(rows, dtype=object)  # object keeps ids like 7 from becoming 7.0 next to nulls


def _read_csv(path: Path) -> pd.DataFrame:
    text, _ = read_text(path)
    if not text.strip():
        return pd.DataFrame()
    try:
        # Every cell as written: an empty cell is missing, "NA" or "null" stay text (a post may say that).
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.ParserError as error:
        raise DatasetFormatError(
            f"cannot read {path}: {error}; quote fields that hold commas or line breaks"
        ) from None


def read_table(path: Path) -> pd.DataFrame:
    """Reads one manifest file by its suffix; an empty file gives an empty frame."""
    if path.suffix == ".jsonl":
        return _read_jsonl(path)
    if path.suffix == ".csv":
        return _read_csv(path)
    if path.suffix == ".parquet":
        try:
            return pd.read_parquet(path)
        except (OSError, ValueError) as error:
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


def _is_missing(value: object) -> bool:
    if value is None or value is pd.NA:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def clean_text(value: object) -> str | None:
    """A manifest value as text, None when it is missing or blank."""
    return None if _is_missing(value) else str(value)


def invalid_labels(cell: object) -> dict[str, str]:
    """The `invalid_labels` cell of a row: {policy: the value as written} for labels that are not labels."""
    return json.loads(cell) if isinstance(cell, str) else {}


def parse_label(value: object) -> float | None:
    """A label as 0.0 or 1.0, NaN when it is missing (not annotated), None when it is not a label.

    Labels are the numbers 0 and 1, booleans, and text that says one of those (`"0"`, `"1"`, `"1.0"`, `"true"`).
    """
    if _is_missing(value):
        return math.nan
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) if value in (0, 1) else None
    if isinstance(value, str):
        return _LABEL_TEXT.get(value.strip().lower())
    try:  # numpy scalars
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if number in (0.0, 1.0) else None


def as_written(value: object) -> str:
    """A manifest value as its author wrote it: JSON text for strings and numbers (`"yes"`, `2`)."""
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _normalise_labels(frame: pd.DataFrame, policies: Sequence[str]) -> None:
    invalid: list[dict[str, str]] = [{} for _ in range(len(frame))]
    for policy in policies:
        if policy not in frame.columns:
            continue
        values = []
        for row, raw in enumerate(frame[policy].tolist()):
            label = parse_label(raw)
            if label is None:
                invalid[row][policy] = as_written(raw)
                label = math.nan
            values.append(label)
        frame[policy] = pd.Series(values, index=frame.index, dtype=float)
    frame[COL_INVALID_LABELS] = pd.Series(
        [json.dumps(entry, ensure_ascii=False) if entry else None for entry in invalid],
        index=frame.index,
        dtype=object,
    )


def load_dataset(source: str | Path, policies: Sequence[str]) -> tuple[pd.DataFrame, Path]:
    """Loads a dataset into a normalised frame.

    Args:
        source: A dataset folder, a manifest file, or a Hateful Memes folder.
        policies: Policy label columns to normalise (missing ones are left missing for validation).

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
        frame[COL_ID] = frame[COL_ID].map(lambda v: None if _is_missing(v) else str(v))
    for column in (COL_TEXT, COL_IMAGE):
        if column not in frame.columns:
            frame[column] = None
        frame[column] = frame[column].map(clean_text).astype(object)
    _normalise_labels(frame, policies)
    return frame.reset_index(drop=True), root
