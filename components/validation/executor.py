"""Validation step: what the KFP component calls; and the same ingest + validation alone (`tns data check`)."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from components.data.executor import ingest_step
from core.config.run import RunConfig
from core.validation.outcome import DataValidationError, ValidationOutcome
from core.validation.runner import validate_dataset
from core.validation.validation_report import markdown_summary, write_html_report

CHECK_REPORT_FILE = "report.html"
CHECK_SUMMARY_FILE = "validation.json"


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


@dataclass
class DataCheck:
    """What `check_data` found: the ingest summary, the validation outcome and where the report is."""

    ingest: dict
    outcome: ValidationOutcome
    report: Path
    summary: Path


def check_data(data_uri: str, config: RunConfig, out_dir: str | Path) -> DataCheck:
    """Ingests and validates a dataset exactly as a training run would, without training.

    The ingested copy goes to a temporary folder and is removed; the HTML report and the outcome as JSON stay
    in `out_dir`.

    Args:
        data_uri: Dataset folder or manifest ('' = the embedded default dataset).
        config: Run configuration (policies, preparation, validation bounds and severities, split).
        out_dir: Folder for `report.html` and `validation.json` (created).

    Raises:
        DatasetFormatError: When the dataset cannot be read at all.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tns-data-check-") as folder:
        ingest = ingest_step(data_uri, config, Path(folder) / "dataset")
        outcome = validate_dataset(Path(folder) / "dataset", config)
    report, summary = out_dir / CHECK_REPORT_FILE, out_dir / CHECK_SUMMARY_FILE
    write_html_report(outcome, report)
    summary.write_text(json.dumps({"ingest": ingest, **outcome.to_dict()}, indent=2), encoding="utf-8")
    return DataCheck(ingest=ingest, outcome=outcome, report=report, summary=summary)
