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
* Columns whose names start with `_` are derived before validation (`core.validation.derived_columns`),
  from properties GX cannot compute: `_image_decodable` and `_image_size` (outcome of bounded decoding of
  each image, "ok", "absent", "not_checked" or the failure reason), `_label_<policy>` ("ok", "missing" or
  "invalid"), `_text_bytes` (UTF-8 size of the text), `_split_leak` (the row's item also appears in another
  split), `_group_leak` (the row's group is fixed to more than one split), `_text_language` (the language
  of rows with text; "no_text" otherwise). `_row` (the row number) identifies failing rows in GX results.
* Three checks come from ingest's preparation record rather than GX (`duplicate_items` when copies were
  collapsed, `label_conflicts`, `unannotated_rows`), and one per policy from the split the run will get
  (`split_labels[<policy>]`: annotated rows, positives and negatives in validation and test).
* An expectation whose column is absent is skipped and listed in `ValidationOutcome.skipped`: either the
  column is optional (`split`, `language`) or its absence already fails a `column_exists[...]` check.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from core.common.constants import (
    COL_ID,
    COL_ITEM_HASH,
    COL_MODALITY,
    COL_SPLIT,
    MISSING_LABELS_MASK,
    MISSING_LABELS_REFUSE,
    SEVERITY_CRITICAL,
    SEVERITY_WARNING,
    SPLIT_TEST,
    SPLIT_TRAIN,
    SPLIT_VALIDATION,
)
from core.common.env import apply_offline_environment
from core.config.run import RunConfig, ValidationConfig
from core.data.ingest import read_ingested, read_preparation
from core.data.prepare import Preparation
from core.data.split import assign_splits, label_counts
from core.validation.check_messages import MAX_EXAMPLES, FailureExamples, merge_results
from core.validation.derived_columns import LABEL_MISSING, LABEL_OK, ROW_COLUMN, derive_columns
from core.validation.outcome import CheckResult, ValidationOutcome

SUITE_FILE = "suite.json"
POLICY_PLACEHOLDER = "{policy}"
_PARTIAL_UNEXPECTED = 20


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
    derived, details = derive_columns(frame, Path(dataset_dir), config)
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
    examples = FailureExamples(derived, details)
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
                merge_results(
                    check, expectation["meta"], critical, by_check.pop(check), len(derived), examples
                )
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
