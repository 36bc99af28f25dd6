"""Corrupted datasets stop the pipeline at validation with exit 1, name the failed check with its counts, and
leave no registered model version behind."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from components.common.constants import EXIT_FAILED
from components.data.generate import GenerateSpec, generate_dataset
from tests.pipelines.helpers import model_versions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clean_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clean")
    generate_dataset(folder, GenerateSpec(rows=80, seed=5))
    return folder


def _rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]


def _write(folder: Path, rows: list[dict]) -> None:
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _first_with(rows: list[dict], *keys: str) -> dict:
    return next(r for r in rows if all(r.get(k) is not None for k in keys))


def undecodable_image(folder: Path) -> None:
    (folder / _first_with(_rows(folder), "image")["image"]).write_bytes(b"this is not an image")


def duplicate_id(folder: Path) -> None:
    rows = _rows(folder)
    rows[1]["id"] = rows[0]["id"]
    _write(folder, rows)


def label_of_two(folder: Path) -> None:
    rows = _rows(folder)
    rows[3]["hate"] = 2
    _write(folder, rows)


def no_modality(folder: Path) -> None:
    rows = _rows(folder)
    rows[4]["text"], rows[4]["image"] = None, None
    _write(folder, rows)


def train_test_leak(folder: Path) -> None:
    rows = _rows(folder)
    source = _first_with(rows, "text", "image")
    for row in rows:
        row["split"] = None
    source["split"] = "train"
    rows.append({**source, "id": "leaked-copy", "split": "test"})
    _write(folder, rows)


def empty_manifest(folder: Path) -> None:
    (folder / "manifest.jsonl").write_text("", encoding="utf-8")


def missing_policy_column(folder: Path) -> None:
    rows = _rows(folder)
    for row in rows:
        row.pop("spam")
    _write(folder, rows)


CASES: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "undecodable_image": (undecodable_image, ["image_decodable", "1 of 80 rows"]),
    "duplicate_id": (duplicate_id, ["ids_unique", "2 of 80 rows"]),
    "label_of_two": (label_of_two, ["labels_binary[hate]", "1 of 80 rows", "hate=2"]),
    "no_modality": (no_modality, ["has_modality", "1 of 80 rows"]),
    "train_test_leak": (train_test_leak, ["no_split_leakage", "2 of 81 rows", "leaked-copy"]),
    "empty_manifest": (empty_manifest, ["row_count", "0 rows"]),
    "missing_policy_column": (missing_policy_column, ["column_exists[spam]", "'spam'"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_corrupted_dataset_fails_validation(case, clean_dataset, tmp_path, run_tns, tns_home):
    corrupt, expected = CASES[case]
    folder = tmp_path / case
    shutil.copytree(clean_dataset, folder)
    corrupt(folder)

    result = run_tns("run", "training", "--data", str(folder))

    assert result.returncode == EXIT_FAILED, result.output[-3000:]
    assert "FAILED at step 'validate'" in result.output
    for fragment in expected:
        assert fragment in result.output, f"{fragment!r} missing from:\n{result.output[-3000:]}"
    assert "validation report:" in result.output
    assert model_versions(tns_home) == []
    assert not list((tns_home / "kfp").glob("*/train-model"))
