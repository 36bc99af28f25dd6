"""How each check's GX results are told to people: one merged `CheckResult`, its message and failing rows.

`merge_results` folds the GX results of the expectations sharing a check name into one `CheckResult`;
`FailureExamples` describes its failing rows briefly (`id=... text_length=...`, both rows of a split leak,
...), at most `MAX_EXAMPLES` per check.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pandas as pd

from core.common.constants import (
    COL_GROUP,
    COL_ID,
    COL_IMAGE,
    COL_INVALID_LABELS,
    COL_ITEM_HASH,
    COL_SPLIT,
    COL_TEXT,
)
from core.data.formats import invalid_labels
from core.data.ingest import COL_IMAGE_FILE_STATUS
from core.validation.derived_columns import COL_TEXT_BYTES, ROW_COLUMN
from core.validation.outcome import CheckResult

MAX_EXAMPLES = 5


def _short(value: Any, limit: int = 60) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "NaN" if isinstance(value, float) else "None"
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class FailureExamples:
    """Formats failing rows of each check as short, human-readable examples."""

    def __init__(self, frame: pd.DataFrame, details: dict[int, str]) -> None:
        self.frame = frame
        self.details = details

    def ref(self, row: int) -> str:
        if COL_ID in self.frame.columns:
            value = self.frame.at[row, COL_ID]
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                return f"id={value}"
        return f"row={row}"

    def _value(self, row: int, column: str) -> str:
        return f"{self.ref(row)} {column}={_short(self.frame.at[row, column])}"

    def _same(self, row: int, column: str) -> list[int]:
        value = self.frame.at[row, column]
        return [int(r) for r in self.frame.index[self.frame[column] == value] if r != row]

    def format(self, check: str, column: str | None, rows: list[int]) -> list[str]:
        base = check.split("[", 1)[0]
        formatter: Callable[[int], str | None] = {
            "ids_unique": self._duplicate_id,
            "labels_binary": lambda r: self._label(r, check[len(base) + 1 : -1]),
            "has_modality": lambda r: f"{self.ref(r)} text=None image=None",
            "text_length": lambda r: f"{self.ref(r)} text_length={len(str(self.frame.at[r, COL_TEXT]))}",
            "text_size": lambda r: f"{self.ref(r)} text_bytes={int(self.frame.at[r, COL_TEXT_BYTES])}",
            "image_file_found": self._image_file,
            "image_decodable": self._image_detail,
            "image_size": self._image_detail,
            "no_split_leakage": lambda r: self._leak(r, COL_ITEM_HASH),
            "no_group_leakage": lambda r: self._leak(r, COL_GROUP),
            "duplicate_items": self._duplicate_item,
        }.get(base, lambda r: self._value(r, column) if column in self.frame.columns else self.ref(r))
        examples: list[str] = []
        for row in rows:
            example = formatter(row)
            if example and example not in examples:
                examples.append(example)
            if len(examples) == MAX_EXAMPLES:
                break
        return examples

    def _duplicate_id(self, row: int) -> str:
        return f"{self.ref(row)} x{len(self._same(row, COL_ID)) + 1}"

    def _label(self, row: int, policy: str) -> str:
        """The label as the manifest wrote it: `spam="yes"`, `hate=2`, or `spam=null` when there is none."""
        cell = self.frame.at[row, COL_INVALID_LABELS] if COL_INVALID_LABELS in self.frame.columns else None
        written = invalid_labels(cell).get(policy)
        return f"{self.ref(row)} {policy}={written if written is not None else 'null'}"

    def _image_file(self, row: int) -> str:
        status = self.frame.at[row, COL_IMAGE_FILE_STATUS]
        return f"{self.ref(row)} image={status}: {_short(self.frame.at[row, COL_IMAGE])}"

    def _image_detail(self, row: int) -> str:
        return f"{self.ref(row)} image={_short(self.details.get(row, ''), 100)}"

    def _leak(self, row: int, key: str) -> str | None:
        split = self.frame.at[row, COL_SPLIT]
        for other in self._same(row, key):
            other_split = self.frame.at[other, COL_SPLIT]
            if isinstance(other_split, str) and other_split != split:
                pair = sorted([(row, split), (other, other_split)])
                shared = f" in {key}={_short(self.frame.at[row, key])}" if key == COL_GROUP else ""
                return " ~ ".join(f"{self.ref(r)} ({s})" for r, s in pair) + shared
        return None

    def _duplicate_item(self, row: int) -> str:
        rows = sorted([row, *self._same(row, COL_ITEM_HASH)])
        return " ~ ".join(self.ref(r) for r in rows[:3]) + (" ..." if len(rows) > 3 else "")


def _number(value: Any) -> str:
    return "None" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _table_message(
    check: str, kind: str, kwargs: dict[str, Any], result: dict[str, Any], success: bool
) -> str:
    observed = result.get("observed_value")
    if kind == "expect_table_row_count_to_be_between":
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        bound = f"at least {low}" if high is None else f"between {low} and {high}"
        return f"{check}: {observed} rows, {bound} required"
    if kind == "expect_column_to_exist":
        column = kwargs.get("column")
        if success:
            return f"{check}: column {column!r} is present"
        return f"{check}: required column {column!r} is missing from the dataset"
    if kind == "expect_column_mean_to_be_between":
        bounds = f"[{_number(kwargs.get('min_value'))}, {_number(kwargs.get('max_value'))}]"
        if observed is None:
            return f"{check}: no numeric values, mean must be in {bounds}"
        verdict = "within" if success else "outside"
        return f"{check}: mean {observed:.4f} {verdict} {bounds}"
    return f"{check}: observed {observed}"


def _exception_message(result: Any) -> str | None:
    info = result.exception_info or {}
    if isinstance(info, dict) and info.get("raised_exception"):
        return str(info.get("exception_message") or "unknown error")
    return None


def merge_results(
    check: str, meta: dict[str, Any], critical: bool, results: list[Any], rows: int, examples: FailureExamples
) -> CheckResult:
    """Builds one CheckResult from the GX results of the expectations named `check`."""
    kinds = [r.expectation_config.type for r in results]
    success = all(bool(r.success) for r in results)
    errors = [e for e in (_exception_message(r) for r in results) if e]
    row_level = [r for r in results if "unexpected_count" in (r.result or {})]
    unexpected = sum(int(r.result.get("unexpected_count") or 0) for r in row_level)
    failing_rows: list[int] = []
    column = None
    for r in row_level:
        column = r.expectation_config.kwargs.get("column")
        failing_rows.extend(int(i[ROW_COLUMN]) for i in r.result.get("partial_unexpected_index_list") or [])
    example_list = examples.format(check, column, sorted(set(failing_rows))) if unexpected else []
    if errors:
        message = f"{check}: could not be evaluated: {errors[0]}"
    elif row_level:
        if unexpected == 0:
            message = f"{check}: all {rows} rows pass"
        else:
            message = f"{check}: {unexpected} of {rows} rows {meta.get('failure', 'fail')}"
            if success:
                message += " (within tolerance)"
            if example_list:
                message += f" (e.g. {', '.join(example_list[:3])})"
    else:
        first = results[0]
        message = _table_message(
            check, kinds[0], first.expectation_config.kwargs, first.result or {}, success
        )
    return CheckResult(
        check=check,
        expectation=" + ".join(dict.fromkeys(kinds)),
        critical=critical,
        success=success,
        unexpected_count=unexpected,
        examples=example_list,
        message=message,
        remedy="" if success else str(meta.get("remedy", "")),
    )
