"""Data validation: the GX suite template, every named check on tiny corrupted datasets, and the reports."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

from PIL import Image

for _name, _value in {
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
}.items():
    os.environ.setdefault(_name, _value)

from core.config.fields import ConfigError  # noqa: E402
from core.config.run import RunConfig, default_severities  # noqa: E402
from core.data.ingest import ingest_dataset  # noqa: E402
from core.validation.outcome import CheckResult, DataValidationError, ValidationOutcome  # noqa: E402
from core.validation.runner import expand_suite, load_suite_template, validate_dataset  # noqa: E402
from core.validation.validation_report import markdown_summary, render_html, write_html_report  # noqa: E402

POLICIES = ["hate", "spam"]
ALL_CHECKS = [
    "row_count",
    "column_exists[id]",
    "column_exists[text]",
    "column_exists[image]",
    "column_exists[hate]",
    "column_exists[spam]",
    "ids_not_null",
    "ids_unique",
    "labels_binary[hate]",
    "labels_binary[spam]",
    "has_modality",
    "text_length",
    "text_size",
    "image_file_found",
    "image_decodable",
    "image_size",
    "positive_rate[hate]",
    "positive_rate[spam]",
    "split_values",
    "no_split_leakage",
    "language_present",
    "duplicate_items",
    "label_conflicts",
    "unannotated_rows",
    "split_labels[hate]",
    "split_labels[spam]",
]
SPLIT_OF = ["train", "train", "train", "train", "train", "train", "validation", "validation", "test", "test"]


def clean_rows() -> list[dict]:
    """Ten distinct items: 7 text+image, 2 text-only, 1 image-only; 4 hate and 4 spam positives, both classes of
    both policies in validation (rows 6, 7) and test (rows 8, 9)."""
    rows = []
    for i in range(10):
        rows.append(
            {
                "id": str(i),
                "text": f"caption number {i}" if i != 9 else None,
                "image": f"img/{i}.png" if i not in (7, 8) else None,
                "hate": int(i in (1, 4, 7, 8)),
                "spam": int(i in (0, 3, 6, 9)),
                "split": SPLIT_OF[i],
                "language": "en",
            }
        )
    return rows


def config_for(policies: list[str] | None = None, validation: dict | None = None, **sections) -> RunConfig:
    """The run configuration of these tests: tiny splits need tiny per-split minimums."""
    limits = {"min_rows": 5, "min_split_annotated": 2, "min_split_positives": 1, **(validation or {})}
    return RunConfig.from_dict({"policies": policies or POLICIES, "validation": limits, **sections})


def build(
    tmp_path: Path, rows: list[dict], files: dict[str, bytes] | None = None, config: RunConfig | None = None
) -> Path:
    """Writes PNGs for the referenced images (unless given as raw bytes), a manifest, and ingests it."""
    source = tmp_path / "source"
    (source / "img").mkdir(parents=True)
    files = files or {}
    for name, data in files.items():
        (source / name).write_bytes(data)
    for i, row in enumerate(rows):
        image = row.get("image")
        if image and image.startswith("img/") and image not in files and not image.startswith("img/missing"):
            Image.new("RGB", (16, 16), (i * 20 % 256, 40, 90)).save(source / image)
    (source / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    out = tmp_path / "ingested"
    ingest_dataset(source, out, config or config_for())
    return out


def run(
    dataset: Path, policies: list[str] | None = None, sections: dict | None = None, **validation
) -> ValidationOutcome:
    return validate_dataset(dataset, config_for(policies, validation, **(sections or {})))


def by_name(outcome: ValidationOutcome) -> dict[str, CheckResult]:
    return {c.check: c for c in outcome.checks}


def failed(outcome: ValidationOutcome) -> list[str]:
    return [c.check for c in outcome.failures()]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` but carries almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


# Suite template ---------------------------------------------------------------------------------------


def test_suite_template_expands_per_policy_and_loads_in_gx():
    import great_expectations as gx

    template = load_suite_template()
    for expectation in template["expectations"]:
        meta = expectation["meta"]
        assert meta["check"] and meta["remedy"], meta
        if meta.get("adjustable"):  # severity from the run configuration, not the suite
            assert "critical" not in meta and "severity" not in expectation
        else:
            assert meta["critical"] is True and expectation["severity"] == "critical"
    adjustable = {
        e["meta"]["check"].split("[")[0] for e in template["expectations"] if e["meta"].get("adjustable")
    }
    # The two checks that come from ingest's preparation record are adjustable too.
    assert adjustable | {"label_conflicts", "unannotated_rows"} == set(default_severities())
    suite = expand_suite(template, ["hate", "violence"])
    checks = [e["meta"]["check"] for e in suite["expectations"]]
    assert checks.count("labels_binary[hate]") == 1
    assert "positive_rate[violence]" in checks and not any("{policy}" in c for c in checks)
    columns = {e["kwargs"].get("column") for e in suite["expectations"]}
    assert {"hate", "violence"} <= columns and "{policy}" not in columns

    gx.get_context(mode="ephemeral")
    loaded = gx.ExpectationSuite(**suite)
    assert len(loaded.expectations) == len(suite["expectations"])
    assert [e.meta["check"] for e in loaded.expectations] == checks


# Clean dataset ----------------------------------------------------------------------------------------


def test_clean_dataset_passes_every_check(tmp_path):
    outcome = run(build(tmp_path, clean_rows()))
    assert outcome.success, outcome.failure_message()
    assert outcome.rows == 10
    assert [c.check for c in outcome.checks] == ALL_CHECKS  # suite order, whatever order GX returns
    assert all(c.success for c in outcome.checks), [c.message for c in outcome.checks if not c.success]
    assert outcome.failures() == [] and outcome.warnings() == []
    assert outcome.skipped == ["no_group_leakage"]  # no group column
    assert outcome.failure_message() == ""
    checks = by_name(outcome)
    assert checks["row_count"].message == "row_count: 10 rows, at least 5 required"
    assert checks["positive_rate[hate]"].message == "positive_rate[hate]: mean 0.4000 within [0.005, 0.6]"
    assert checks["image_decodable"].expectation == "expect_column_values_to_be_in_set"
    assert checks["split_labels[hate]"].message == (
        "split_labels[hate]: train 2 positive of 6 annotated, validation 1 positive of 2 annotated, "
        "test 1 positive of 2 annotated"
    )
    assert outcome.label_counts["spam"]["test"] == {"annotated": 2, "positives": 1}
    assert outcome.severity_overrides == {}
    summary = outcome.to_dict()
    assert json.loads(json.dumps(summary)) == summary
    assert summary["success"] is True and summary["critical_failures"] == 0
    assert len(summary["checks"]) == len(ALL_CHECKS)


def test_optional_columns_absent_skip_their_checks(tmp_path):
    rows = [{k: v for k, v in r.items() if k not in ("split", "language")} for r in clean_rows()]
    outcome = run(build(tmp_path, rows))
    # Ten rows assigned 65/15/20 leave one or two per split: only the per-split label counts can fail.
    assert all(c.startswith("split_labels[") for c in failed(outcome)), outcome.failure_message()
    assert outcome.skipped == ["split_values", "no_split_leakage", "no_group_leakage", "language_present"]


# One corruption per test ------------------------------------------------------------------------------


def test_undecodable_image(tmp_path):
    rows = clean_rows()
    rows[3]["image"] = "img/broken.png"
    outcome = run(build(tmp_path, rows, files={"img/broken.png": b"not an image"}))
    assert failed(outcome) == ["image_decodable"]
    check = by_name(outcome)["image_decodable"]
    assert check.unexpected_count == 1 and check.critical
    assert check.examples == [
        "id=3 image=undecodable: not an image in an accepted format (PNG, JPEG, WEBP, GIF, BMP)"
    ]
    assert check.message.startswith(
        "image_decodable: 1 of 10 rows have an image that cannot be decoded (e.g. id=3"
    )
    assert by_name(outcome)["image_size"].success


def test_empty_image_file_is_undecodable(tmp_path):
    rows = clean_rows()
    rows[2]["image"] = "img/empty.png"
    outcome = run(build(tmp_path, rows, files={"img/empty.png": b""}))
    assert failed(outcome) == ["image_decodable"]
    assert by_name(outcome)["image_decodable"].examples == ["id=2 image=empty: no image bytes"]


def test_duplicate_id(tmp_path):
    rows = clean_rows()
    rows[5]["id"] = "1"
    outcome = run(build(tmp_path, rows))
    assert failed(outcome) == ["ids_unique"]
    check = by_name(outcome)["ids_unique"]
    assert check.unexpected_count == 2
    assert check.examples == ["id=1 x2"]
    assert check.message == "ids_unique: 2 of 10 rows share their id with another row (e.g. id=1 x2)"


def test_null_id(tmp_path):
    rows = clean_rows()
    rows[4]["id"] = None
    outcome = run(build(tmp_path, rows))
    assert failed(outcome) == ["ids_not_null"]
    check = by_name(outcome)["ids_not_null"]
    assert check.unexpected_count == 1 and check.examples == ["row=4 id=None"]


def test_label_of_two(tmp_path):
    rows = clean_rows()
    rows[2]["hate"] = 2
    outcome = run(build(tmp_path, rows))
    assert failed(outcome) == ["labels_binary[hate]"]
    check = by_name(outcome)["labels_binary[hate]"]
    assert check.unexpected_count == 1
    assert check.examples == ["id=2 hate=2"]  # the value as written
    assert check.message.startswith("labels_binary[hate]: 1 of 10 rows have a label that is not 0/1")
    assert check.message.endswith("(e.g. id=2 hate=2)")
    assert "data.missing_labels=mask" in check.remedy
    assert "how to go on: write labels as 0/1" in outcome.failure_message()
    assert by_name(outcome)["labels_binary[spam]"].success


def test_labels_are_refused_as_written_and_missing_ones_follow_the_mode(tmp_path):
    rows = clean_rows()
    rows[2]["hate"] = "yes"
    rows[5]["hate"] = -1
    rows[0]["hate"] = None  # not annotated for hate
    rows[1]["hate"], rows[3]["spam"], rows[4]["spam"] = True, "1", "0"  # labels in other spellings
    outcome = run(build(tmp_path, rows))
    assert failed(outcome) == ["labels_binary[hate]"]
    check = by_name(outcome)["labels_binary[hate]"]
    assert check.unexpected_count == 2
    assert check.examples == ['id=2 hate="yes"', "id=5 hate=-1"]

    refuse = config_for(data={"missing_labels": "refuse"})
    outcome = validate_dataset(build(tmp_path / "refuse", rows, config=refuse), refuse)
    check = by_name(outcome)["labels_binary[hate]"]
    assert check.unexpected_count == 3
    assert check.examples == ["id=0 hate=null", 'id=2 hate="yes"', "id=5 hate=-1"]
    assert "unannotated_rows" not in by_name(outcome)


def test_missing_labels_as_negative_are_filled_and_counted(tmp_path):
    rows = clean_rows()
    rows[0]["hate"] = None
    rows[2]["spam"] = ""
    negative = config_for(data={"missing_labels": "negative"})
    dataset = build(tmp_path, rows, config=negative)
    outcome = validate_dataset(dataset, negative)
    assert outcome.success, outcome.failure_message()
    assert outcome.preparation["filled_as_negative"] == {"hate": 1, "spam": 1}
    from core.data.ingest import read_ingested

    frame = read_ingested(dataset).set_index("id")
    assert frame.loc["0", "hate"] == 0.0 and frame.loc["2", "spam"] == 0.0


def test_rows_annotated_for_no_policy_are_dropped_with_a_warning(tmp_path):
    rows = clean_rows()
    rows.append(
        {"id": "blank", "text": "nobody reviewed this", "image": None, "split": "train", "language": "en"}
    )
    outcome = run(build(tmp_path, rows))
    assert outcome.success, outcome.failure_message()
    check = by_name(outcome)["unannotated_rows"]
    assert not check.success and not check.critical and check.examples == ["id=blank"]
    assert check.message.startswith("unannotated_rows: 1 of 11 rows are annotated for none")
    assert outcome.rows == 10


def test_row_without_text_or_image(tmp_path):
    rows = clean_rows()
    rows[8]["text"] = "   "  # blank text counts as no text
    outcome = run(build(tmp_path, rows))
    assert failed(outcome) == ["has_modality"]
    check = by_name(outcome)["has_modality"]
    assert check.unexpected_count == 1
    assert check.message == (
        "has_modality: 1 of 10 rows have neither text nor image (e.g. id=8 text=None image=None)"
    )


def test_same_item_in_train_and_test_is_collapsed_by_default(tmp_path):
    rows = clean_rows()
    rows.append({**rows[0], "id": "copy", "split": "test", "hate": None, "spam": None})
    outcome = run(build(tmp_path, rows))
    assert outcome.success, outcome.failure_message()
    check = by_name(outcome)["duplicate_items"]
    assert not check.success and not check.critical and check.unexpected_count == 1
    assert check.examples == ["kept id=0 (train) ~ id=copy (test)"]
    assert "1 of them validation/test copies of a train item (train keeps it)" in check.message
    assert outcome.rows == 10 and outcome.preparation["cross_split_copies_dropped"] == 1
    assert by_name(outcome)["no_split_leakage"].success


def test_copies_merge_labels_and_conflicts_leave_the_policy_unannotated(tmp_path):
    from core.data.ingest import read_ingested

    rows = clean_rows()
    rows[0]["spam"] = None  # the copy below annotates spam; hate disagrees between the two
    rows.append({**rows[0], "id": "copy", "hate": 1, "spam": 1})
    dataset = build(tmp_path, rows)
    outcome = run(dataset)
    frame = read_ingested(dataset).set_index("id")
    assert "copy" not in frame.index and frame.loc["0", "spam"] == 1.0
    assert pd_isna(frame.loc["0", "hate"])
    check = by_name(outcome)["label_conflicts"]
    assert not check.success and check.unexpected_count == 1
    assert check.examples == ["id=0 ~ id=copy: copies disagree on hate"]
    strict = run(dataset, severity={"label_conflicts": "critical"})
    assert failed(strict) == ["label_conflicts"]
    assert strict.severity_overrides == {"label_conflicts": "critical"}


def pd_isna(value) -> bool:
    return value != value  # NaN


def test_same_item_in_train_and_test_without_deduplication(tmp_path):
    rows = clean_rows()
    rows.append({**rows[0], "id": "copy", "split": "test"})
    keep = config_for(split={"deduplicate": False})
    outcome = validate_dataset(build(tmp_path, rows, config=keep), keep)
    assert failed(outcome) == ["no_split_leakage"]
    check = by_name(outcome)["no_split_leakage"]
    assert check.unexpected_count == 2
    assert check.examples == ["id=0 (train) ~ id=copy (test)"]
    assert check.message == (
        "no_split_leakage: 2 of 11 rows hold an item that also appears in another split "
        "(e.g. id=0 (train) ~ id=copy (test))"
    )
    duplicates = by_name(outcome)["duplicate_items"]
    assert not duplicates.success and not duplicates.critical and duplicates.unexpected_count == 2
    assert duplicates.examples == ["id=0 ~ id=copy"]
    assert outcome.warnings() == [duplicates]
    assert "how to go on: --set split.deduplicate=true" in outcome.failure_message()


def test_duplicate_within_one_split_is_only_a_warning(tmp_path):
    rows = clean_rows()
    rows.append({**rows[1], "id": "again"})
    outcome = run(build(tmp_path, rows))
    assert outcome.success, outcome.failure_message()
    assert [c.check for c in outcome.warnings()] == ["duplicate_items"]


def test_unknown_split_value(tmp_path):
    rows = clean_rows()
    rows[6]["split"] = "dev"
    rows[7]["split"] = None  # no split is allowed
    outcome = run(build(tmp_path, rows))
    # Validation lost both its rows (one to "dev", one reassigned), so its label counts fail too.
    assert failed(outcome) == ["split_values", "split_labels[hate]", "split_labels[spam]"]
    check = by_name(outcome)["split_values"]
    assert check.unexpected_count == 1 and check.examples == ["id=6 split=dev"]


def test_empty_manifest(tmp_path):
    outcome = validate_dataset(build(tmp_path, []), RunConfig.from_dict({"policies": POLICIES}))
    assert not outcome.success and outcome.rows == 0
    checks = by_name(outcome)
    assert checks["row_count"].message == "row_count: 0 rows, at least 30 required"
    assert failed(outcome) == ["row_count", "column_exists[id]", "column_exists[hate]", "column_exists[spam]"]
    assert "ids_unique" in outcome.skipped and "labels_binary[hate]" in outcome.skipped
    assert outcome.failure_message().splitlines()[:2] == [
        "Data validation failed: 4 critical check(s)",
        "row_count: 0 rows, at least 30 required",
    ]


def test_missing_policy_column(tmp_path):
    outcome = run(build(tmp_path, clean_rows()), policies=["hate", "violence", "spam"])
    assert failed(outcome) == ["column_exists[violence]"]
    check = by_name(outcome)["column_exists[violence]"]
    assert check.message == "column_exists[violence]: required column 'violence' is missing from the dataset"
    assert check.unexpected_count == 0 and check.examples == []
    assert outcome.skipped == ["labels_binary[violence]", "positive_rate[violence]", "no_group_leakage"]
    assert "labels_binary[hate]" in by_name(outcome) and "positive_rate[spam]" in by_name(outcome)


def test_decompression_bomb_header_is_rejected_before_decoding(tmp_path):
    rows = clean_rows()
    rows[0]["image"] = "img/bomb.png"
    outcome = run(build(tmp_path, rows, files={"img/bomb.png": png_header_only(20_000, 20_000)}))
    assert failed(outcome) == ["image_size"]
    check = by_name(outcome)["image_size"]
    assert check.unexpected_count == 1
    assert check.examples[0].startswith("id=0 image=too_large: ")
    assert by_name(outcome)["image_decodable"].success


def test_large_pil_image_over_pixel_limit(tmp_path):
    rows = clean_rows()
    rows[1]["image"] = "img/big.png"
    source = tmp_path / "big.png"
    Image.new("1", (2000, 1000)).save(source)  # 1-bit: compresses to a few hundred bytes
    outcome = run(
        build(tmp_path, rows, files={"img/big.png": source.read_bytes()}), image_max_pixels=1_000_000
    )
    assert failed(outcome) == ["image_size"]
    assert by_name(outcome)["image_size"].examples == [
        "id=1 image=too_large: 2000x1000 exceeds 1000000 pixels"
    ]


def test_image_too_small_or_too_many_bytes(tmp_path):
    rows = clean_rows()
    rows[2]["image"] = "img/tiny.png"
    rows[3]["image"] = "img/noisy.png"
    tiny, noisy = tmp_path / "tiny.png", tmp_path / "noisy.png"
    Image.new("RGB", (4, 4)).save(tiny)
    Image.frombytes("L", (64, 64), os.urandom(64 * 64)).save(noisy)  # about 4 KB, incompressible
    files = {"img/tiny.png": tiny.read_bytes(), "img/noisy.png": noisy.read_bytes()}
    outcome = run(build(tmp_path, rows, files=files), image_max_bytes=2000)
    assert failed(outcome) == ["image_size"]
    check = by_name(outcome)["image_size"]
    assert check.unexpected_count == 2
    assert check.examples[0] == "id=2 image=too_small: 4x4 is below 8 pixels per side"
    assert check.examples[1].startswith("id=3 image=too_many_bytes: ") and check.examples[1].endswith(
        "bytes, more than 2000"
    )


def test_an_image_over_the_byte_limit_is_not_read_at_ingest_and_is_refused(tmp_path):
    """Ingestion reads image files bounded by validation.image_max_bytes: a larger one is neither read whole nor
    copied, and validation's image_size names it."""
    import pandas as pd

    rows = clean_rows()
    rows[3]["image"] = "img/noisy.png"
    noisy = tmp_path / "noisy.png"
    Image.frombytes("L", (64, 64), os.urandom(64 * 64)).save(noisy)  # about 4 KB
    config = config_for(validation={"image_max_bytes": 2000})
    dataset = build(tmp_path, rows, files={"img/noisy.png": noisy.read_bytes()}, config=config)
    ingested = pd.read_parquet(next(dataset.glob("*.parquet")))
    assert (
        ingested.loc[3, "image_file_status"] == "too_many_bytes"
        and ingested.loc[3, "image"] == "img/noisy.png"
    )
    assert not any(p.stat().st_size > 2000 for p in (dataset / "images").rglob("*.png"))
    outcome = validate_dataset(dataset, config)
    assert failed(outcome) == ["image_size"]
    assert by_name(outcome)["image_size"].examples == [
        "id=3 image=too_many_bytes: img/noisy.png has more than 2000 bytes"
    ]


def test_missing_image_file_and_unsafe_path(tmp_path):
    rows = clean_rows()
    rows[4]["image"] = "img/missing.png"
    rows[5]["image"] = "../outside.png"
    outcome = run(build(tmp_path, rows))
    assert failed(outcome) == ["image_file_found"]
    check = by_name(outcome)["image_file_found"]
    assert check.unexpected_count == 2
    assert check.examples == [
        "id=4 image=missing_file: img/missing.png",
        "id=5 image=unsafe_path: ../outside.png",
    ]
    assert by_name(outcome)["image_decodable"].success  # not decoded: reported once, by image_file_found


def test_long_text_is_a_warning_and_a_huge_one_is_refused(tmp_path):
    rows = clean_rows()
    rows[3]["text"] = "x" * 50
    rows[4]["text"] = "é" * 60  # 120 UTF-8 bytes
    dataset = build(tmp_path, rows)
    outcome = run(dataset, text_max_chars=40)
    assert failed(outcome) == [] and [c.check for c in outcome.warnings()] == ["text_length"]
    check = by_name(outcome)["text_length"]
    assert check.unexpected_count == 2 and check.examples == ["id=3 text_length=50", "id=4 text_length=60"]
    outcome = run(dataset, text_max_chars=40, text_max_bytes=100)
    assert failed(outcome) == ["text_size"]
    assert by_name(outcome)["text_size"].examples == ["id=4 text_bytes=120"]
    strict = run(dataset, text_max_chars=40, severity={"text_length": "critical"})
    assert failed(strict) == ["text_length"]


def test_positive_rate_out_of_bounds_is_a_warning_unless_configured(tmp_path):
    dataset = build(tmp_path, clean_rows())
    outcome = run(dataset, positive_rate_max=0.3)
    assert failed(outcome) == []
    check = by_name(outcome)["positive_rate[spam]"]
    assert not check.critical and check.message == "positive_rate[spam]: mean 0.4000 outside [0.005, 0.3]"
    strict = run(dataset, positive_rate_max=0.3, severity={"positive_rate": "critical"})
    assert failed(strict) == ["positive_rate[hate]", "positive_rate[spam]"]
    assert strict.severity_overrides == {"positive_rate": "critical"}


def test_structural_checks_cannot_be_downgraded():
    import pytest

    with pytest.raises(ConfigError, match="structural checks are always critical"):
        RunConfig().with_overrides(**{"validation.severity.ids_unique": "warning"})
    with pytest.raises(ConfigError, match="critical or warning"):
        RunConfig().with_overrides(**{"validation.severity.text_length": "ignore"})
    changed = RunConfig().with_overrides(**{"validation.severity.duplicate_items": "critical"})
    assert changed.validation.severity_overrides() == {"duplicate_items": "critical"}


def test_too_few_positives_in_a_split_names_the_counts(tmp_path):
    rows = clean_rows()
    rows[7]["hate"] = 0  # validation keeps no hate positive
    outcome = run(build(tmp_path, rows))
    assert failed(outcome) == ["split_labels[hate]"]
    check = by_name(outcome)["split_labels[hate]"]
    assert check.message.startswith("split_labels[hate]: too few labels in validation (train 2 positive of 6")
    assert "validation 0 positive of 2 annotated" in check.message
    assert "--policies" in check.remedy and "split.validation_fraction" in check.remedy


def test_group_fixed_to_two_splits_is_refused(tmp_path):
    rows = clean_rows()
    for row in rows:
        row["group"] = f"g{row['id']}"
    rows[0]["group"] = rows[8]["group"] = "template-7"  # train and test
    outcome = run(build(tmp_path, rows))
    assert failed(outcome) == ["no_group_leakage"]
    check = by_name(outcome)["no_group_leakage"]
    assert check.unexpected_count == 2
    assert check.examples == ["id=0 (train) ~ id=8 (test) in group=template-7"]


def test_too_few_rows(tmp_path):
    outcome = run(build(tmp_path, clean_rows()), min_rows=11)
    assert failed(outcome) == ["row_count"]
    assert by_name(outcome)["row_count"].message == "row_count: 10 rows, at least 11 required"


def test_language_mostly_missing_is_a_warning(tmp_path):
    rows = clean_rows()
    rows[0]["language"] = None
    outcome = run(build(tmp_path, rows))
    assert by_name(outcome)["language_present"].success  # 1 of 10 missing is within mostly=0.9
    rows[1]["language"] = None
    outcome = run(build(tmp_path / "second", rows))
    assert outcome.success
    check = by_name(outcome)["language_present"]
    assert not check.success and not check.critical and check.unexpected_count == 2


# Errors and reports -----------------------------------------------------------------------------------


def test_error_and_reports(tmp_path):
    rows = clean_rows()
    rows[2]["hate"] = 2
    rows[3]["text"] = "<script>alert(1)</script> | pipe"
    rows[3]["id"] = "<b>"
    rows[4]["id"] = "<b>"
    outcome = run(build(tmp_path, rows))
    error = DataValidationError(outcome)
    assert error.outcome is outcome
    assert str(error).splitlines()[0] == "Data validation failed: 2 critical check(s)"

    path = tmp_path / "report" / "validation.html"
    write_html_report(outcome, path, title="Validation of <test>")
    html = path.read_text(encoding="utf-8")
    assert html == render_html(outcome, title="Validation of <test>")
    assert "FAIL: 2 critical check(s) failed" in html
    assert "Validation of &lt;test&gt;" in html and "<b>" not in html and "id=&lt;b&gt; x2" in html
    assert "http" not in html and "<link" not in html and "<script" not in html
    for check in ALL_CHECKS:
        assert check in html

    markdown = markdown_summary(outcome)
    assert markdown.startswith("## Data validation: FAIL\n")
    assert "| `ids_unique` | yes | FAIL | 2 |" in markdown
    assert (
        "| `labels_binary[hate]` | yes | FAIL | 1 | labels\\_binary\\[hate\\]: 1 of 10 rows have a label"
        in markdown
    )


def test_passing_report(tmp_path):
    outcome = run(build(tmp_path, clean_rows()))
    html = render_html(outcome)
    assert "PASS: all critical checks passed" in html and "10 rows" in html
    assert markdown_summary(outcome).startswith("## Data validation: PASS\n")


def test_language_is_expected_of_rows_with_text_only(tmp_path):
    rows = clean_rows()
    image_only = next(r for r in rows if r["text"] is None)
    image_only["language"] = None
    rows[0]["language"] = None
    check = by_name(run(build(tmp_path, rows)))["language_present"]
    assert check.success and check.unexpected_count == 1
    assert check.examples == ["id=0 language=None"] or "id=0" in check.message


def test_report_shows_remedies_overrides_and_labels_per_split(tmp_path):
    rows = clean_rows()
    rows[2]["spam"] = "<b>yes</b>"
    outcome = run(build(tmp_path, rows), severity={"positive_rate": "critical"})
    html = render_html(outcome)
    assert "How to go on" in html and "write labels as 0/1" in html
    assert "Severity set by the run configuration (validation.severity): positive_rate is critical." in html
    assert "Labels per policy and split" in html and "2 / 6" in html  # hate in train: 2 positives of 6
    assert "&lt;b&gt;yes&lt;/b&gt;" in html and "<b>yes" not in html  # a value from the data, escaped
    assert "Severity set by the run configuration: `positive_rate` critical." in markdown_summary(outcome)
