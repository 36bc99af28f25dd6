"""Data validation of an ingested dataset with Great Expectations.

The expectations live in `suite.json` next to this module, as Great Expectations suite JSON (the shape
`ExpectationSuite.to_json_dict()` produces). The file is a template:

* Each expectation's `meta` carries `check` (the stable check name reported to people and pipelines),
  `critical` (a failed critical check fails validation; the others are warnings, and `severity` says the
  same to GX) and, for row-level checks, `failure` (how a failing row is described in messages).
  Several expectations may share one check name; their results are merged (e.g. `labels_binary[...]` is
  "in {0, 1}" plus "not null", since GX's set expectations ignore nulls).
* An expectation that mentions `{policy}` anywhere is repeated once per policy of the run, with the
  placeholder replaced by the policy name (e.g. `column: "{policy}"`, `check: "labels_binary[{policy}]"`).
* Thresholds are GX suite parameters, `{"$PARAMETER": "<name>"}`, where `<name>` is a field of
  `ValidationConfig` (`min_rows`, `text_min_chars`, ...). GX fills them from the run's configuration at
  validation time (`expectation_parameters`), so the checked values appear in the GX results.
* Columns whose names start with `_` are derived here before validation, from properties GX cannot
  compute: `_image_decodable` and `_image_size` (outcome of bounded decoding of each image, "ok",
  "absent", "not_checked" or the failure reason), `_split_leak` (the row's item also appears in another
  split), `_text_language` (the language of rows with text; "no_text" otherwise). `_row` (the row number)
  identifies failing rows in GX results.
* An expectation whose column is absent is skipped and listed in `ValidationOutcome.skipped`: either the
  column is optional (`split`, `language`) or its absence already fails a `column_exists[...]` check.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from components.common.config import RunConfig, ValidationConfig
from components.common.constants import (
    COL_ID,
    COL_IMAGE,
    COL_ITEM_HASH,
    COL_LANGUAGE,
    COL_SPLIT,
    COL_TEXT,
)
from components.common.env import apply_offline_environment
from components.common.images import ImageDecodeError, decode_image
from components.data.ingest import COL_IMAGE_FILE_STATUS, IMAGE_ABSENT, IMAGE_OK, read_ingested

SUITE_FILE = "suite.json"
POLICY_PLACEHOLDER = "{policy}"
ROW_COLUMN = "_row"
COL_IMAGE_DECODABLE = "_image_decodable"
COL_IMAGE_SIZE = "_image_size"
COL_SPLIT_LEAK = "_split_leak"
COL_TEXT_LANGUAGE = "_text_language"
NO_TEXT = "no_text"
IMAGE_NOT_CHECKED = "not_checked"
IMAGE_TOO_MANY_BYTES = "too_many_bytes"
IMAGE_UNREADABLE = "unreadable"
MAX_EXAMPLES = 5
_PARTIAL_UNEXPECTED = 20
_DECODE_REASONS = frozenset({"empty", "undecodable", IMAGE_UNREADABLE})
_OBJECT_REPR = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>")


@dataclass
class CheckResult:
    """Outcome of one named check (one or more GX expectations sharing `meta.check`)."""

    check: str
    expectation: str
    critical: bool
    success: bool
    unexpected_count: int
    examples: list[str]
    message: str


@dataclass
class ValidationOutcome:
    """All check results of one dataset, in suite order."""

    rows: int
    checks: list[CheckResult]
    skipped: list[str] = field(default_factory=list)

    @property
    def success(self) -> bool:
        """True when every critical check passed."""
        return not self.failures()

    def failures(self) -> list[CheckResult]:
        """Returns the failed critical checks."""
        return [c for c in self.checks if c.critical and not c.success]

    def warnings(self) -> list[CheckResult]:
        """Returns the failed non-critical checks."""
        return [c for c in self.checks if not c.critical and not c.success]

    def failure_message(self) -> str:
        """Returns a multi-line summary of the failed critical checks (empty when validation passed)."""
        failed = self.failures()
        if not failed:
            return ""
        return "\n".join(
            [f"Data validation failed: {len(failed)} critical check(s)", *(c.message for c in failed)]
        )

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-able summary."""
        return {
            "success": self.success,
            "rows": self.rows,
            "critical_failures": len(self.failures()),
            "warnings": len(self.warnings()),
            "checks": [asdict(c) for c in self.checks],
            "skipped": list(self.skipped),
        }


class DataValidationError(RuntimeError):
    """A dataset failed at least one critical check; `outcome` holds all results."""

    def __init__(self, outcome: ValidationOutcome) -> None:
        super().__init__(outcome.failure_message() or "Data validation failed")
        self.outcome = outcome


# Suite template ---------------------------------------------------------------------------------------


def load_suite_template() -> dict[str, Any]:
    """Reads the suite template `suite.json` shipped with this package."""
    text = resources.files("components.validation").joinpath(SUITE_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def expand_suite(template: dict[str, Any], policies: list[str]) -> dict[str, Any]:
    """Repeats every expectation that mentions `{policy}` once per policy, in template order.

    Args:
        template: Suite JSON as read by `load_suite_template`.
        policies: Policy label columns of the run (lower-case identifiers, safe inside JSON strings).

    Returns:
        Suite JSON that `gx.ExpectationSuite(**suite)` accepts; thresholds are still `$PARAMETER`s.
    """
    expectations = []
    for expectation in template["expectations"]:
        encoded = json.dumps(expectation)
        if POLICY_PLACEHOLDER in encoded:
            expectations.extend(json.loads(encoded.replace(POLICY_PLACEHOLDER, p)) for p in policies)
        else:
            expectations.append(json.loads(encoded))
    return {**template, "expectations": expectations}


def suite_parameters(validation: ValidationConfig) -> dict[str, Any]:
    """Returns the values of the suite's `$PARAMETER` placeholders for a configuration."""
    return asdict(validation)


# Derived columns --------------------------------------------------------------------------------------


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
        else:  # missing file or unsafe path: reported by image_file_found
            decodable.append(IMAGE_NOT_CHECKED)
            size.append(IMAGE_NOT_CHECKED)
    return decodable, size, details


def _check_image(root: Path, relative: str, limits: ValidationConfig) -> tuple[str, str, str]:
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        return IMAGE_UNREADABLE, IMAGE_NOT_CHECKED, f"{IMAGE_UNREADABLE}: {relative} is outside the dataset"
    try:
        n_bytes = path.stat().st_size
        if n_bytes > limits.image_max_bytes:
            detail = f"{IMAGE_TOO_MANY_BYTES}: {n_bytes} bytes exceeds {limits.image_max_bytes}"
            return IMAGE_NOT_CHECKED, IMAGE_TOO_MANY_BYTES, detail
        data = path.read_bytes()
    except OSError as error:
        return IMAGE_UNREADABLE, IMAGE_NOT_CHECKED, f"{IMAGE_UNREADABLE}: {type(error).__name__}: {error}"
    try:
        decode_image(data, max_pixels=limits.image_max_pixels, min_side=limits.image_min_side)
    except ImageDecodeError as error:
        detail = _OBJECT_REPR.sub("", str(error)).strip()
        if error.reason in _DECODE_REASONS:
            return error.reason, IMAGE_NOT_CHECKED, detail
        return IMAGE_NOT_CHECKED, error.reason, detail
    return "ok", "ok", ""


def _split_leak(frame: pd.DataFrame) -> pd.Series:
    """Flags rows whose item hash also occurs, in the rows with a split, under another split."""
    has_split = frame[COL_SPLIT].notna()
    splits_per_item = frame[has_split].groupby(COL_ITEM_HASH)[COL_SPLIT].nunique()
    leaking = set(splits_per_item[splits_per_item > 1].index)
    return (has_split & frame[COL_ITEM_HASH].isin(leaking)).astype(bool)


def _derive(
    frame: pd.DataFrame, dataset_dir: Path, limits: ValidationConfig
) -> tuple[pd.DataFrame, dict[int, str]]:
    frame = frame.reset_index(drop=True).copy()
    frame[ROW_COLUMN] = range(len(frame))
    details: dict[int, str] = {}
    if {COL_IMAGE, COL_IMAGE_FILE_STATUS} <= set(frame.columns):
        decodable, size, details = _check_images(frame, dataset_dir, limits)
        frame[COL_IMAGE_DECODABLE] = pd.Series(decodable, dtype=object)
        frame[COL_IMAGE_SIZE] = pd.Series(size, dtype=object)
    if {COL_SPLIT, COL_ITEM_HASH} <= set(frame.columns):
        frame[COL_SPLIT_LEAK] = _split_leak(frame)
    if {COL_LANGUAGE, COL_TEXT} <= set(frame.columns):  # a language is expected of rows with text only
        frame[COL_TEXT_LANGUAGE] = frame[COL_LANGUAGE].astype(object).where(frame[COL_TEXT].notna(), NO_TEXT)
    return frame, details


# Messages and examples --------------------------------------------------------------------------------


def _short(value: Any, limit: int = 60) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "NaN" if isinstance(value, float) else "None"
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Examples:
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
            "has_modality": lambda r: f"{self.ref(r)} text=None image=None",
            "text_length": lambda r: f"{self.ref(r)} text_length={len(str(self.frame.at[r, COL_TEXT]))}",
            "image_file_found": self._image_file,
            "image_decodable": self._image_detail,
            "image_size": self._image_detail,
            "no_split_leakage": self._leak,
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

    def _image_file(self, row: int) -> str:
        status = self.frame.at[row, COL_IMAGE_FILE_STATUS]
        return f"{self.ref(row)} image={status}: {_short(self.frame.at[row, COL_IMAGE])}"

    def _image_detail(self, row: int) -> str:
        return f"{self.ref(row)} image={_short(self.details.get(row, ''), 100)}"

    def _leak(self, row: int) -> str | None:
        split = self.frame.at[row, COL_SPLIT]
        for other in self._same(row, COL_ITEM_HASH):
            other_split = self.frame.at[other, COL_SPLIT]
            if other_split is not None and other_split != split:
                pair = sorted([(row, split), (other, other_split)])
                return " ~ ".join(f"{self.ref(r)} ({s})" for r, s in pair)
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


def _merge(
    check: str, meta: dict[str, Any], results: list[Any], rows: int, examples: _Examples
) -> CheckResult:
    """Builds one CheckResult from the GX results of the expectations named `check`."""
    kinds = [r.expectation_config.type for r in results]
    success = all(bool(r.success) for r in results)
    critical = bool(meta.get("critical", True))
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
    )


# Validation -------------------------------------------------------------------------------------------


def _run_gx(frame: pd.DataFrame, suite_dict: dict[str, Any], parameters: dict[str, Any]) -> list[Any]:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    suite = gx.ExpectationSuite(**suite_dict)
    batch = (
        context.data_sources.add_pandas("tns_dataset")
        .add_dataframe_asset("ingested")
        .add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    result = batch.validate(
        suite,
        result_format={
            "result_format": "SUMMARY",
            "unexpected_index_column_names": [ROW_COLUMN],
            "partial_unexpected_count": _PARTIAL_UNEXPECTED,
        },
        expectation_parameters=parameters,
    )
    return list(result.results)


def validate_frame(frame: pd.DataFrame, dataset_dir: Path, config: RunConfig) -> ValidationOutcome:
    """Validates an ingested table whose image paths are relative to `dataset_dir`.

    Args:
        frame: Rows as written by ingest (`read_ingested`).
        dataset_dir: Folder the `image` paths are relative to.
        config: Run configuration; `policies` names the label columns, `validation` the bounds.

    Returns:
        The results of every check that applies, in suite order.
    """
    apply_offline_environment()
    derived, details = _derive(frame, Path(dataset_dir), config.validation)
    suite_dict = expand_suite(load_suite_template(), list(config.policies))
    kept, skipped = [], []
    for expectation in suite_dict["expectations"]:
        column = expectation["kwargs"].get("column")
        needs_column = expectation["type"] != "expect_column_to_exist" and column is not None
        if needs_column and column not in derived.columns:
            check = expectation["meta"]["check"]
            if check not in skipped:
                skipped.append(check)
        else:
            kept.append(expectation)
    results = _run_gx(derived, {**suite_dict, "expectations": kept}, suite_parameters(config.validation))

    by_check: dict[str, list[Any]] = {}
    for result in results:
        by_check.setdefault(result.expectation_config.meta["check"], []).append(result)
    examples = _Examples(derived, details)
    checks = []
    for expectation in kept:
        check = expectation["meta"]["check"]
        if check in by_check:
            checks.append(_merge(check, expectation["meta"], by_check.pop(check), len(derived), examples))
    return ValidationOutcome(rows=len(derived), checks=checks, skipped=skipped)


def validate_dataset(dataset_dir: Path, config: RunConfig) -> ValidationOutcome:
    """Validates an ingested dataset artifact against the suite, expanded for the run's policies.

    Args:
        dataset_dir: Ingested artifact folder (`dataset.parquet` plus `images/`).
        config: Run configuration; `policies` names the label columns, `validation` the bounds.

    Returns:
        The results of every check that applies, in suite order. It does not raise on failed checks:
        callers raise `DataValidationError(outcome)` when `outcome.success` is false.
    """
    apply_offline_environment()
    dataset_dir = Path(dataset_dir)
    return validate_frame(read_ingested(dataset_dir), dataset_dir, config)
