"""Corrupted datasets stop the pipeline at validation with exit 1, name the failed check with its counts, and
leave no registered model version behind; `tns data check` finds the same on its own, without training."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from core.common.constants import EXIT_FAILED, EXIT_OK
from core.data.generate import GenerateSpec, generate_dataset
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


def string_label(folder: Path) -> None:
    rows = _rows(folder)
    rows[2]["spam"] = "yes"
    _write(folder, rows)


def broken_line(folder: Path) -> None:
    lines = (folder / "manifest.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    lines[6] = lines[6][: len(lines[6]) // 2] + "\n"
    (folder / "manifest.jsonl").write_text("".join(lines), encoding="utf-8")


def null_label(folder: Path) -> None:
    rows = _rows(folder)
    rows[7]["violence"] = None
    _write(folder, rows)


# Copies across a fixed split are collapsed by default (a remedy, see test_real_data_runs.py); with
# split.deduplicate=false they are refused as before. A null label is "not annotated" unless refused.
KEEP_COPIES = ["--set", "split.deduplicate=false"]
REFUSE_MISSING = ["--set", "data.missing_labels=refuse"]
CASES: dict[str, tuple[Callable[[Path], None], list[str], list[str]]] = {
    "undecodable_image": (undecodable_image, [], ["image_decodable", "1 of 80 rows"]),
    "duplicate_id": (duplicate_id, [], ["ids_unique", "2 of 80 rows"]),
    "label_of_two": (label_of_two, [], ["labels_binary[hate]", "1 of 80 rows", "hate=2"]),
    "no_modality": (no_modality, [], ["has_modality", "1 of 80 rows"]),
    "train_test_leak": (train_test_leak, KEEP_COPIES, ["no_split_leakage", "2 of 81 rows", "leaked-copy"]),
    "empty_manifest": (empty_manifest, [], ["row_count", "0 rows"]),
    "missing_policy_column": (missing_policy_column, [], ["column_exists[spam]", "'spam'"]),
}
# Cases that `tns data check` covers too (no pipeline run each).
CHECK_CASES = {
    **CASES,
    "string_label": (string_label, [], ["labels_binary[spam]", "1 of 80 rows", 'spam="yes"']),
    "null_label_refused": (null_label, REFUSE_MISSING, ["labels_binary[violence]", "violence=null"]),
}


def _corrupted(clean: Path, tmp_path: Path, case: str) -> Path:
    folder = tmp_path / case
    shutil.copytree(clean, folder)
    CHECK_CASES[case][0](folder)
    return folder


@pytest.mark.parametrize("case", sorted(CASES))
def test_corrupted_dataset_fails_validation(case, clean_dataset, tmp_path, run_tns, tns_home):
    _, settings, expected = CASES[case]
    folder = _corrupted(clean_dataset, tmp_path, case)

    result = run_tns("run", "training", "--data", str(folder), *settings)

    assert result.returncode == EXIT_FAILED, result.output[-3000:]
    assert "FAILED at step 'validate'" in result.output
    for fragment in expected:
        assert fragment in result.output, f"{fragment!r} missing from:\n{result.output[-3000:]}"
    assert "validation report:" in result.output and "how to go on:" in result.output
    assert model_versions(tns_home) == []
    assert not list((tns_home / "kfp").glob("*/train-model"))


@pytest.fixture
def data_check(monkeypatch: pytest.MonkeyPatch, tns_home: Path, capsys: pytest.CaptureFixture):
    """`tns data check ARGS...` in this process (the command is the same as on the command line): (code, output)."""
    from tns.main import main

    monkeypatch.setenv("TNS_HOME", str(tns_home))

    def check(*args: str) -> tuple[int, str]:
        code = main(["data", "check", *args])
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    return check


@pytest.mark.parametrize("case", sorted(CHECK_CASES))
def test_data_check_names_the_failed_check(case, clean_dataset, tmp_path, data_check):
    _, settings, expected = CHECK_CASES[case]
    code, output = data_check(str(_corrupted(clean_dataset, tmp_path, case)), *settings)
    assert code == EXIT_FAILED, output
    assert output.startswith("tns data check: FAIL")
    for fragment in expected:
        assert fragment in output, f"{fragment!r} missing from:\n{output}"
    assert "how to go on:" in output
    report = Path(output.split("report    ")[1].split()[0])
    assert report.is_file() and expected[0] in report.read_text(encoding="utf-8")


def test_data_check_of_a_broken_line_names_file_and_line(clean_dataset, tmp_path, data_check):
    folder = tmp_path / "broken_line"
    shutil.copytree(clean_dataset, folder)
    broken_line(folder)
    code, output = data_check(str(folder))
    assert code == EXIT_FAILED
    assert (
        f"{folder.resolve() / 'manifest.jsonl'}: line 7 (byte offset " in output
        and "not valid JSON" in output
    )


def test_data_check_applies_the_remedies_by_default(clean_dataset, tmp_path, data_check):
    leak = _corrupted(clean_dataset, tmp_path, "train_test_leak")
    code, output = data_check(str(leak), "--set", "validation.min_split_positives=1")
    assert code == EXIT_OK, output
    assert "warning   duplicate_items: 1 of 81 rows were copies" in output
    assert "validation/test copies of a train item (train keeps it)" in output
    null = _corrupted(clean_dataset, tmp_path, "null_label_refused")
    code, output = data_check(str(null), "--set", "validation.min_split_positives=1")
    assert code == EXIT_OK, output
    assert "violence" in output.split("labels")[1]
