"""Ingest and split steps: what the KFP components call."""

from __future__ import annotations

import tempfile
from pathlib import Path

from core.config.run import RunConfig
from core.data.generate import generate_dataset
from core.data.ingest import ingest_dataset
from core.data.split import split_dataset


def ingest_step(data_uri: str, config: RunConfig, out_dir: str | Path) -> dict:
    """Ingests `data_uri`, or the embedded default dataset when it is empty; returns the ingest summary."""
    if data_uri:
        return ingest_dataset(data_uri, out_dir, config).to_dict()
    with tempfile.TemporaryDirectory(prefix="tns-default-data-") as folder:
        generate_dataset(folder)  # all default policies; ingest keeps the configured ones
        summary = ingest_dataset(folder, out_dir, config).to_dict()
    summary["source"] = "embedded default dataset (tns data generate)"
    return summary


def split_step(dataset_dir: str | Path, config: RunConfig, out_dir: str | Path) -> dict:
    """Assigns train/validation/test and returns rows per split.

    Raises:
        ValueError: When a split ends up empty (e.g. a manifest that fixes every row to train).
    """
    counts = split_dataset(dataset_dir, out_dir, config.policies, config.split)
    empty = [name for name, rows in counts.items() if rows == 0]
    if empty:
        raise ValueError(
            f"split: no rows in {', '.join(empty)} (rows per split: {counts}); "
            "leave some `split` values empty or add rows"
        )
    return counts
