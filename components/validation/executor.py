"""Validation step: what the KFP component calls."""

from __future__ import annotations

from pathlib import Path

from components.common.config import RunConfig
from components.validation.report import markdown_summary, write_html_report
from components.validation.runner import DataValidationError, ValidationOutcome, validate_dataset


def validate_step(
    dataset_dir: str | Path, config: RunConfig, html_path: str | Path
) -> tuple[ValidationOutcome, str]:
    """Validates an ingested dataset and writes the HTML report.

    Returns:
        The outcome and its Markdown summary.

    Raises:
        DataValidationError: When a critical check fails (after the report is written).
    """
    outcome = validate_dataset(Path(dataset_dir), config)
    write_html_report(outcome, Path(html_path))
    if not outcome.success:
        raise DataValidationError(outcome)
    return outcome, markdown_summary(outcome)
