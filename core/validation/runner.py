"""Data validation of an ingested dataset with Great Expectations.

The expectations live in `suite.json` next to this module, as Great Expectations suite JSON (the shape
`ExpectationSuite.to_json_dict()` produces). The file is a template:

* Each expectation's `meta` carries `check` (the stable check name reported to people and pipelines),
  `critical` (a failed critical check fails validation; the others are warnings, and `severity` says the
  same to GX) or `adjustable` (statistical checks: their severity comes from `validation.severity` in the
  run configuration), `remedy` (how to go on when the check fails) and, for row-level checks, `failure`
  (how a failing row is described in messages).
  Several expectations may share one check name; their results are merged (e.g. `labels_binary[...]` is
  "in {0, 1}" plus "not null", since GX's set expectations ignore nulls).
* An expectation that mentions `{policy}` anywhere is repeated once per policy of the run, with the
  placeholder replaced by the policy name (e.g. `column: "{policy}"`, `check: "labels_binary[{policy}]"`).
* Thresholds are GX suite parameters, `{"$PARAMETER": "<name>"}`, where `<name>` is a field of
  `ValidationConfig` (`min_rows`, `text_min_chars`, ...) or `label_states` (the accepted `_label_<policy>`
  states: a missing label is accepted unless `data.missing_labels` is `refuse`). GX fills them from the
  run's configuration at validation time (`expectation_parameters`), so the checked values appear in the
  GX results.
* Columns whose names start with `_` are derived here before validation, from properties GX cannot
  compute: `_image_decodable` and `_image_size` (outcome of bounded decoding of each image, "ok",
  "absent", "not_checked" or the failure reason), `_label_<policy>` ("ok", "missing" or "invalid"),
  `_text_bytes` (UTF-8 size of the text), `_split_leak` (the row's item also appears in another split),
  `_group_leak` (the row's group is fixed to more than one split), `_text_language` (the language of rows
  with text; "no_text" otherwise). `_row` (the row number) identifies failing rows in GX results.
* Three checks come from ingest's preparation record rather than GX (`duplicate_items` when copies were
  collapsed, `label_conflicts`, `unannotated_rows`), and one per policy from the split the run will get
  (`split_labels[<policy>]`: annotated rows, positives and negatives in validation and test).
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

from core.common.config import RunConfig, ValidationConfig
from core.common.constants import (
    COL_GROUP,
    COL_ID,
    COL_IMAGE,
    COL_INVALID_LABELS,
    COL_ITEM_HASH,
    COL_LANGUAGE,
    COL_MODALITY,
    COL_SPLIT,
    COL_TEXT,
    MISSING_LABELS_MASK,
    MISSING_LABELS_REFUSE,
    SEVERITY_CRITICAL,
    SEVERITY_WARNING,
    SPLIT_TEST,
    SPLIT_TRAIN,
    SPLIT_VALIDATION,
)
from core.common.env import apply_offline_environment
from core.common.images import ImageDecodeError, ImageFileError, decode_image, read_image_file
from core.data.formats import invalid_labels
from core.data.ingest import (
    COL_IMAGE_FILE_STATUS,
    IMAGE_ABSENT,
    IMAGE_OK,
    IMAGE_TOO_MANY_BYTES,
    read_ingested,
    read_preparation,
)
from core.data.prepare import Preparation
from core.data.split import assign_splits, label_counts

SUITE_FILE = "suite.json"
POLICY_PLACEHOLDER = "{policy}"
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
    remedy: str = ""


@dataclass
class ValidationOutcome:
    """All check results of one dataset, in suite order, and what the run will train and test on."""

    rows: int
    checks: list[CheckResult]
    skipped: list[str] = field(default_factory=list)
    severity_overrides: dict[str, str] = field(default_factory=dict)
    preparation: dict[str, Any] | None = None
    label_counts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)

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
        lines = [f"Data validation failed: {len(failed)} critical check(s)"]
        for check in failed:
            lines.append(check.message)
            if check.remedy:
                lines.append(f"  how to go on: {check.remedy}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-able summary."""
        return {
            "success": self.success,
            "rows": self.rows,
            "critical_failures": len(self.failures()),
            "warnings": len(self.warnings()),
            "checks": [asdict(c) for c in self.checks],
            "skipped": list(self.skipped),
            "severity_overrides": dict(self.severity_overrides),
            "preparation": self.preparation,
            "label_counts": self.label_counts,
        }


class DataValidationError(RuntimeError):
    """A dataset failed at least one critical check; `outcome` holds all results."""

    def __init__(self, outcome: ValidationOutcome) -> None:
        super().__init__(outcome.failure_message() or "Data validation failed")
        self.outcome = outcome


# Suite template ---------------------------------------------------------------------------------------


def load_suite_template() -> dict[str, Any]:
    """Reads the suite template `suite.json` shipped with this package."""
    text = resources.files("core.validation").joinpath(SUITE_FILE).read_text(encoding="utf-8")
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


def suite_parameters(config: RunConfig) -> dict[str, Any]:
    """Returns the values of the suite's `$PARAMETER` placeholders for a configuration."""
    refuse = config.data.missing_labels == MISSING_LABELS_REFUSE
    return {
        **{k: v for k, v in asdict(config.validation).items() if not isinstance(v, dict)},
        "label_states": [LABEL_OK] if refuse else [LABEL_OK, LABEL_MISSING],
    }


def is_critical(meta: dict[str, Any], validation: ValidationConfig) -> bool:
    """Whether a failed check stops the run: `validation.severity` for adjustable checks, the suite otherwise."""
    base = meta["check"].split("[", 1)[0]
    if meta.get("adjustable"):
        return validation.severity[base] == SEVERITY_CRITICAL
    return bool(meta.get("critical", True))


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


def _derive(frame: pd.DataFrame, dataset_dir: Path, config: RunConfig) -> tuple[pd.DataFrame, dict[int, str]]:
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


def _merge(
    check: str, meta: dict[str, Any], critical: bool, results: list[Any], rows: int, examples: _Examples
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


def _prepared(
    validation: ValidationConfig, name: str, count: int, message: str, examples: list[str], remedy: str
) -> CheckResult:
    """A check from the preparation record: failed (a warning unless configured critical) when `count` > 0."""
    critical = validation.severity[name] == SEVERITY_CRITICAL
    return CheckResult(
        name, "tns.preparation", critical, count == 0, count, examples[:MAX_EXAMPLES], message,
        remedy if count else "",
    )  # fmt: skip


def _preparation_checks(
    preparation: Preparation, rows: int, validation: ValidationConfig
) -> dict[str, CheckResult]:
    """Checks from what ingest's preparation collapsed, merged and dropped (warnings unless configured)."""
    checks = {}
    if preparation.deduplicate and preparation.copies_dropped:
        crossing = preparation.cross_split_copies_dropped
        across = (
            f"; {crossing} of them validation/test copies of a train item (train keeps it)"
            if crossing
            else ""
        )
        message = (
            f"duplicate_items: {preparation.copies_dropped} of {preparation.rows_read} rows were copies of "
            f"another item ({preparation.duplicate_key} key) and were dropped, "
            f"{preparation.items_with_copies} item(s) kept once with their labels merged{across} "
            f"(e.g. {'; '.join(preparation.duplicate_examples[:2])})"
        )
        remedy = "nothing needed; --set split.deduplicate=false refuses copies across fixed splits instead"
        checks["duplicate_items"] = _prepared(
            validation, "duplicate_items", preparation.copies_dropped, message,
            preparation.duplicate_examples, remedy,
        )  # fmt: skip
    if preparation.deduplicate:
        conflicts = sum(preparation.label_conflicts.values())
        by_policy = ", ".join(f"{p} {n}" for p, n in sorted(preparation.label_conflicts.items()))
        message = (
            f"label_conflicts: {conflicts} item(s) whose copies disagree on a label ({by_policy}) are kept "
            f"without that label, as not annotated (e.g. {'; '.join(preparation.conflict_examples[:2])})"
            if conflicts
            else "label_conflicts: no copies disagree on a label"
        )
        remedy = "review those items, or --set validation.severity.label_conflicts=critical to refuse them"
        checks["label_conflicts"] = _prepared(
            validation, "label_conflicts", conflicts, message, preparation.conflict_examples, remedy
        )
    if preparation.missing_labels == MISSING_LABELS_MASK:
        dropped = preparation.unannotated_dropped
        message = (
            f"unannotated_rows: {dropped} of {rows + dropped} rows are annotated for none of the run's "
            f"policies and were dropped (e.g. {', '.join(preparation.unannotated_examples[:3])})"
            if dropped
            else "unannotated_rows: every row is annotated for at least one policy"
        )
        remedy = (
            "nothing needed; annotate them, or train only the policies they are annotated for (--policies)"
        )
        checks["unannotated_rows"] = _prepared(
            validation, "unannotated_rows", dropped, message, preparation.unannotated_examples, remedy
        )
    return checks


def _split_checks(frame: pd.DataFrame, config: RunConfig) -> tuple[list[CheckResult], dict]:
    """One check per policy: annotated rows, positives and negatives in the validation and test splits the run
    will get (the same assignment as the split step), with the counts of all three splits."""
    if len(frame) == 0 or not {COL_ID, COL_ITEM_HASH, COL_MODALITY} <= set(frame.columns):
        return [], {}  # no rows, or row_count / column_exists already fail
    split = assign_splits(frame, config.policies, config.split)
    counts = label_counts(frame.assign(**{COL_SPLIT: split[COL_SPLIT].to_numpy()}), config.policies)
    limits = config.validation
    checks = []
    for policy, per_split in counts.items():
        short = []
        for name in (SPLIT_VALIDATION, SPLIT_TEST):
            entry = per_split[name]
            negatives = entry["annotated"] - entry["positives"]
            if (
                entry["annotated"] < limits.min_split_annotated
                or entry["positives"] < limits.min_split_positives
                or negatives < limits.min_split_positives
            ):
                short.append(name)
        shown = ", ".join(
            f"{name} {per_split[name]['positives']} positive of {per_split[name]['annotated']} annotated"
            for name in (SPLIT_TRAIN, SPLIT_VALIDATION, SPLIT_TEST)
        )
        check = f"split_labels[{policy}]"
        if short:
            message = (
                f"{check}: too few labels in {' and '.join(short)} ({shown}); each of validation and test needs "
                f"{limits.min_split_annotated} annotated rows with {limits.min_split_positives} positives and "
                f"{limits.min_split_positives} negatives (thresholds and test metrics need both classes)"
            )
            remedy = (
                f"annotate more rows for '{policy}', raise split.validation_fraction / split.test_fraction, "
                f"leave '{policy}' out (--policies), or lower validation.min_split_positives / "
                "validation.min_split_annotated"
            )
        else:
            message, remedy = f"{check}: {shown}", ""
        checks.append(
            CheckResult(check, "tns.split_label_counts", True, not short, len(short), [], message, remedy)
        )
    return checks, counts


def validate_frame(
    frame: pd.DataFrame, dataset_dir: Path, config: RunConfig, preparation: Preparation | None = None
) -> ValidationOutcome:
    """Validates an ingested table whose image paths are relative to `dataset_dir`.

    Args:
        frame: Rows as written by ingest (`read_ingested`).
        dataset_dir: Folder the `image` paths are relative to.
        config: Run configuration; `policies` names the label columns, `validation` the bounds and severities,
            `data.missing_labels` whether a missing label is accepted, `split` the split checked.
        preparation: What ingest's preparation did (copies, conflicts, unannotated rows), shown as checks.

    Returns:
        The results of every check that applies, in suite order, then the preparation and split checks.
    """
    apply_offline_environment()
    derived, details = _derive(frame, Path(dataset_dir), config)
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
            critical = is_critical(expectation["meta"], config.validation)
            expectation["severity"] = SEVERITY_CRITICAL if critical else SEVERITY_WARNING
            kept.append(expectation)
    results = _run_gx(derived, {**suite_dict, "expectations": kept}, suite_parameters(config))

    by_check: dict[str, list[Any]] = {}
    for result in results:
        by_check.setdefault(result.expectation_config.meta["check"], []).append(result)
    examples = _Examples(derived, details)
    prepared = _preparation_checks(preparation, len(derived), config.validation) if preparation else {}
    checks = []
    for expectation in kept:
        check = expectation["meta"]["check"]
        if check in prepared:  # copies were collapsed: the record says how many, GX would see none
            checks.append(prepared.pop(check))
            by_check.pop(check, None)
        elif check in by_check:
            critical = expectation["severity"] == SEVERITY_CRITICAL
            checks.append(
                _merge(check, expectation["meta"], critical, by_check.pop(check), len(derived), examples)
            )
    checks.extend(prepared.values())
    split_checks, counts = _split_checks(derived, config)
    checks.extend(split_checks)
    return ValidationOutcome(
        rows=len(derived),
        checks=checks,
        skipped=skipped,
        severity_overrides=config.validation.severity_overrides(),
        preparation=preparation.to_dict() if preparation else None,
        label_counts=counts,
    )


def validate_dataset(dataset_dir: Path, config: RunConfig) -> ValidationOutcome:
    """Validates an ingested dataset artifact against the suite, expanded for the run's policies.

    Args:
        dataset_dir: Ingested artifact folder (`dataset.parquet`, `images/`, `preparation.json`).
        config: Run configuration; `policies` names the label columns, `validation` the bounds.

    Returns:
        The results of every check that applies. It does not raise on failed checks: callers raise
        `DataValidationError(outcome)` when `outcome.success` is false.
    """
    apply_offline_environment()
    dataset_dir = Path(dataset_dir)
    return validate_frame(read_ingested(dataset_dir), dataset_dir, config, read_preparation(dataset_dir))
