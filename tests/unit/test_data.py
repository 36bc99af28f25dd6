"""Data: the synthetic generator, manifest formats, Hateful Memes layout, ingest and the stratified split."""

from __future__ import annotations

import hashlib
import io
import json
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.common.constants import (
    DATASET_FINGERPRINT,
    DATASET_TABLE,
    DEFAULT_POLICIES,
    HATEFUL_MEMES_POLICY,
    MODALITY_BOTH,
    MODALITY_IMAGE,
    MODALITY_TEXT,
    SPLITS,
    SPLITS_TABLE,
)
from core.config.run import RunConfig, SplitConfig
from core.data.formats import DatasetFormatError, find_manifest, load_dataset
from core.data.generate import (
    EMOJI,
    GRID_SIZE,
    GenerateSpec,
    combination_policy,
    generate_dataset,
)
from core.data.ingest import (
    COL_IMAGE_FILE_STATUS,
    IMAGE_ABSENT,
    IMAGE_MISSING_FILE,
    IMAGE_OK,
    IMAGE_UNSAFE_PATH,
    ingest_dataset,
    read_fingerprint,
    read_ingested,
)
from core.data.split import assign_splits, read_split_frame, split_dataset

POLICIES = list(DEFAULT_POLICIES)


def _png(color: tuple[int, int, int], size: tuple[int, int] = (16, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def _tree_bytes(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


# Generator ------------------------------------------------------------------------------------------------
def test_generation_is_deterministic_per_seed(tmp_path: Path):
    spec = GenerateSpec(rows=60, seed=5)
    first = generate_dataset(tmp_path / "a", spec)
    second = generate_dataset(tmp_path / "b", spec)
    other = generate_dataset(tmp_path / "c", GenerateSpec(rows=60, seed=6))
    assert first.name == second.name == "manifest.jsonl"
    files_a, files_b = _tree_bytes(tmp_path / "a"), _tree_bytes(tmp_path / "b")
    assert files_a.keys() == files_b.keys()
    assert len([name for name in files_a if name.startswith("images/")]) > 30
    for name, data in files_a.items():
        assert data == files_b[name], f"{name} differs between two runs with the same seed"
    assert other.read_bytes() != first.read_bytes()
    files_c = _tree_bytes(tmp_path / "c")
    shared = [name for name in files_a if name.startswith("images/") and name in files_c]
    assert any(files_a[name] != files_c[name] for name in shared)


def test_generator_rejects_bad_specs(tmp_path: Path):
    with pytest.raises(ValueError, match="rows must be positive"):
        generate_dataset(tmp_path, GenerateSpec(rows=0))
    with pytest.raises(ValueError, match="policies"):
        generate_dataset(tmp_path, GenerateSpec(rows=5, policies=("a", "b")))


@pytest.fixture(scope="module")
def mixture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    folder = tmp_path_factory.mktemp("mixture")
    generate_dataset(folder, GenerateSpec(rows=1000))
    frame, root = load_dataset(folder, POLICIES)
    assert root == folder.resolve()
    return folder, frame


def test_default_mixture_properties(mixture):
    folder, frame = mixture
    assert len(frame) == 1000
    assert frame["id"].is_unique
    for policy in POLICIES:
        assert set(frame[policy].unique()) <= {0.0, 1.0}
        rate = frame[policy].mean()
        assert 0.05 <= rate <= 0.25, f"{policy} positive rate {rate:.3f}"
    text_only = (frame["text"].notna() & frame["image"].isna()).mean()
    image_only = (frame["text"].isna() & frame["image"].notna()).mean()
    neither = (frame["text"].isna() & frame["image"].isna()).sum()
    assert 0.07 <= text_only <= 0.13
    assert 0.07 <= image_only <= 0.13
    assert neither == 0
    assert frame["language"].dropna().nunique() >= 3
    # Image-only rows carry no language; every row with text does.
    assert frame.loc[frame["text"].notna(), "language"].notna().all()
    texts = frame["text"].dropna().tolist()
    assert any(any(emoji in text for emoji in EMOJI) for text in texts)
    assert any("https://" in text for text in texts)
    assert any(any(c.isupper() for c in text) for text in texts)
    assert any(text.isupper() for text in texts)  # fully upper-cased captions exist
    assert frame["created_at"].is_monotonic_increasing and frame["created_at"].is_unique


def test_generated_images_are_referenced_and_readable(mixture):
    folder, frame = mixture
    referenced = frame["image"].dropna()
    assert len(referenced) == len(list((folder / "images").glob("*.png")))
    for relative in referenced.head(10):
        with Image.open(folder / relative) as image:
            assert image.size == (64, 64)
            assert image.mode == "RGB"


def test_latin_square_each_theme_and_concept_maps_to_each_policy_once():
    n_policies = len(DEFAULT_POLICIES)
    for theme in range(GRID_SIZE):
        mapped = [combination_policy(theme, concept) for concept in range(GRID_SIZE)]
        assert sorted(p for p in mapped if p is not None) == list(range(n_policies))
        assert mapped.count(None) == GRID_SIZE - n_policies  # benign confounders
    for concept in range(GRID_SIZE):
        mapped = [combination_policy(theme, concept) for theme in range(GRID_SIZE)]
        assert sorted(p for p in mapped if p is not None) == list(range(n_policies))
    assert combination_policy(0, 0) == 0
    assert combination_policy(1, 0) == 1
    assert combination_policy(0, 1) is None  # (0 - 1) mod 6 = 5 >= 4 policies


def test_default_size_generates_under_30_seconds(tmp_path: Path):
    started = time.perf_counter()
    manifest = generate_dataset(tmp_path)
    elapsed = time.perf_counter() - started
    lines = manifest.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4000
    assert json.loads(lines[0])["id"] == "syn-000000"
    assert elapsed < 30, f"generating the default dataset took {elapsed:.1f} s"


# Formats --------------------------------------------------------------------------------------------------
FORMAT_ROWS = [
    {"id": "a1", "text": "hello world", "image": "img/a.png", "hate": 0, "spam": 1, "language": "en"},
    {"id": "a2", "text": "   ", "image": "img/b.png", "hate": 1, "spam": 0, "language": "en"},
    {"id": "a3", "text": "only text 😂", "image": None, "hate": 0, "spam": 0, "language": "fr"},
    {"id": "a4", "text": None, "image": "img/c.png", "hate": 0, "spam": 1, "language": None},
    {"id": "a5", "text": "bad label", "image": "img/a.png", "hate": "yes", "spam": 0, "language": "de"},
]


def _write_manifest(folder: Path, kind: str, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"manifest.{kind}"
    if kind == "jsonl":
        _write_jsonl(path, rows)
    elif kind == "csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    else:
        frame = pd.DataFrame(rows)
        frame["hate"] = frame["hate"].astype(str)  # parquet needs one type per column
        frame.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("kind", ["jsonl", "csv", "parquet"])
def test_manifest_formats_load_the_same_normalised_frame(tmp_path: Path, kind: str):
    reference, _ = load_dataset(
        _write_manifest(tmp_path / "ref", "jsonl", FORMAT_ROWS).parent, ["hate", "spam"]
    )
    frame, root = load_dataset(_write_manifest(tmp_path / kind, kind, FORMAT_ROWS).parent, ["hate", "spam"])
    assert root == (tmp_path / kind).resolve()
    columns = ["id", "text", "image", "hate", "spam"]
    pd.testing.assert_frame_equal(frame[columns], reference[columns])
    assert frame["id"].tolist() == ["a1", "a2", "a3", "a4", "a5"]
    assert frame["text"].tolist() == ["hello world", None, "only text 😂", None, "bad label"]
    assert frame["image"].tolist() == ["img/a.png", "img/b.png", None, "img/c.png", "img/a.png"]
    assert frame["hate"].dtype == float and frame["spam"].dtype == float
    assert np.isnan(frame.loc[4, "hate"])  # "yes" is not a label: missing, and kept as written
    assert json.loads(frame.loc[4, "invalid_labels"]) == {"hate": '"yes"'}
    assert frame["invalid_labels"].iloc[:4].isna().all()
    assert frame["hate"].tolist()[:4] == [0.0, 1.0, 0.0, 0.0]


def test_manifest_file_path_and_missing_policy_column(tmp_path: Path):
    path = _write_manifest(tmp_path / "ds", "csv", FORMAT_ROWS)
    frame, root = load_dataset(path, ["hate", "violence"])
    assert root == path.parent.resolve()
    assert "violence" not in frame.columns  # left missing for validation to name
    assert len(frame) == 5


def test_numeric_ids_become_strings(tmp_path: Path):
    _write_jsonl(tmp_path / "manifest.jsonl", [{"id": 7, "text": "x", "hate": 1}, {"id": 8, "text": "y"}])
    frame, _ = load_dataset(tmp_path, ["hate"])
    assert frame["id"].tolist() == ["7", "8"]
    assert frame["image"].tolist() == [None, None]  # missing column is created empty
    assert np.isnan(frame.loc[1, "hate"])


def test_numeric_ids_stay_integral_next_to_a_missing_id(tmp_path: Path):
    _write_jsonl(tmp_path / "manifest.jsonl", [{"id": 7, "text": "x"}, {"id": None, "text": "y"}])
    frame, _ = load_dataset(tmp_path, ["hate"])
    assert frame["id"].tolist() == ["7", None]


def test_jsonl_manifest_wins_over_csv(tmp_path: Path):
    _write_manifest(tmp_path, "csv", FORMAT_ROWS[:2])
    _write_manifest(tmp_path, "jsonl", FORMAT_ROWS)
    assert find_manifest(tmp_path) == tmp_path / "manifest.jsonl"


def test_hateful_memes_layout(tmp_path: Path):
    _write_jsonl(
        tmp_path / "train.jsonl",
        [
            {"id": 42953, "img": "img/42953.png", "label": 0, "text": "its their character not their color"},
            {"id": 23058, "img": "img/23058.png", "label": 1, "text": "  "},
        ],
    )
    _write_jsonl(tmp_path / "dev.jsonl", [{"id": 8291, "img": "img/08291.png", "label": 1, "text": "white"}])
    _write_jsonl(tmp_path / "test.jsonl", [{"id": 16395, "img": "img/16395.png", "label": "?", "text": "x"}])
    assert find_manifest(tmp_path) is None
    frame, root = load_dataset(tmp_path, [HATEFUL_MEMES_POLICY])
    assert root == tmp_path.resolve()
    assert frame["split"].tolist() == ["train", "train", "validation", "test"]
    assert frame["id"].tolist() == ["42953", "23058", "8291", "16395"]
    assert frame["image"].tolist()[0] == "img/42953.png"
    assert frame["text"].tolist()[1] is None  # blank text
    assert frame[HATEFUL_MEMES_POLICY].tolist()[:3] == [0.0, 1.0, 1.0]
    assert np.isnan(frame[HATEFUL_MEMES_POLICY].iloc[3])
    assert json.loads(frame["invalid_labels"].iloc[3]) == {HATEFUL_MEMES_POLICY: '"?"'}
    assert "label" not in frame.columns and "img" not in frame.columns


def test_hateful_memes_with_only_some_files(tmp_path: Path):
    _write_jsonl(tmp_path / "dev.jsonl", [{"id": 1, "img": "img/1.png", "label": 0, "text": "a"}])
    frame, _ = load_dataset(tmp_path, [HATEFUL_MEMES_POLICY])
    assert frame["split"].tolist() == ["validation"]


def test_missing_manifest_names_the_folder(tmp_path: Path):
    folder = tmp_path / "empty_dataset"
    folder.mkdir()
    (folder / "notes.txt").write_text("nothing here", encoding="utf-8")
    with pytest.raises(DatasetFormatError) as caught:
        load_dataset(folder, POLICIES)
    assert str(folder.resolve()) in str(caught.value)
    assert "manifest.jsonl" in str(caught.value)


def test_missing_path_and_bad_files_are_format_errors(tmp_path: Path):
    with pytest.raises(DatasetFormatError, match="does not exist"):
        load_dataset(tmp_path / "nope", POLICIES)
    bad = tmp_path / "bad" / "manifest.jsonl"
    bad.parent.mkdir()
    bad.write_text('{"id": "1"}\n{not json\n', encoding="utf-8")
    with pytest.raises(DatasetFormatError) as caught:
        load_dataset(bad.parent, POLICIES)
    assert str(caught.value).startswith(f"{bad.resolve()}: line 2 (byte offset 12) is not valid JSON")
    other = tmp_path / "data.txt"
    other.write_text("id,text\n", encoding="utf-8")
    with pytest.raises(DatasetFormatError, match="unsupported manifest type"):
        load_dataset(other, POLICIES)


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_byte_order_mark_and_crlf_read_like_plain_utf8(tmp_path: Path, kind: str):
    rows = [
        {"id": "a", "text": "línea uno", "image": None, "hate": 1, "spam": None},
        {"id": "b", "text": "say \u2028 what", "image": None, "hate": 0, "spam": 1},
    ]
    plain = _write_manifest(tmp_path / "plain", kind, rows)
    messy = tmp_path / "messy" / plain.name
    messy.parent.mkdir()
    text = plain.read_text(encoding="utf-8").replace("\r\n", "\n").replace("\n", "\r\n")
    messy.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    expected, _ = load_dataset(plain.parent, ["hate", "spam"])
    frame, _ = load_dataset(messy.parent, ["hate", "spam"])
    pd.testing.assert_frame_equal(frame, expected)
    assert list(frame.columns[:2]) == ["id", "text"]  # no BOM glued to the first column name
    assert frame["text"].tolist() == ["línea uno", "say \u2028 what"]
    assert frame["hate"].tolist() == [1.0, 0.0] and np.isnan(frame.loc[0, "spam"])


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_non_utf8_file_names_line_and_byte_offset(tmp_path: Path, kind: str):
    path = tmp_path / f"manifest.{kind}"
    header = b"id,text,hate\r\n" if kind == "csv" else b""
    line = b'{"id": "1", "text": "ok", "hate": 0}\r\n' if kind == "jsonl" else b"1,ok,0\r\n"
    bad = b'{"id": "2", "text": "caf\xe9", "hate": 1}\r\n' if kind == "jsonl" else b"2,caf\xe9,1\r\n"
    path.write_bytes(header + line + bad)
    with pytest.raises(DatasetFormatError) as caught:
        load_dataset(tmp_path, ["hate"])
    offset = len(header + line) + bad.index(b"\xe9")
    assert f"{path.resolve()}: line {2 if kind == 'jsonl' else 3} (byte offset {offset}) is not UTF-8" in str(
        caught.value
    )
    assert "save the file as UTF-8" in str(caught.value)


def test_label_spellings_and_values_as_written(tmp_path: Path):
    values = [1, 0, True, False, "1", "0", " 1.0 ", "true", None, "", "yes", "no", 2, -1, 0.5]
    _write_jsonl(
        tmp_path / "manifest.jsonl", [{"id": str(i), "text": "t", "hate": v} for i, v in enumerate(values)]
    )
    frame, _ = load_dataset(tmp_path, ["hate"])
    assert frame["hate"].tolist()[:8] == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0]
    assert frame["hate"].iloc[8:].isna().all()
    written = [json.loads(v)["hate"] if isinstance(v, str) else None for v in frame["invalid_labels"]]
    assert written == [None] * 10 + ['"yes"', '"no"', "2", "-1", "0.5"]  # null and "" are just not annotated


def test_rows_without_optional_keys_get_none_not_nan(tmp_path: Path):
    _write_jsonl(
        tmp_path / "manifest.jsonl",
        [{"id": "1", "text": "a", "hate": 1, "split": "train"}, {"id": "2", "text": "b", "hate": 0}],
    )
    out = ingest_dataset(tmp_path, tmp_path / "out", RunConfig(policies=["hate"]))
    assert out.rows == 2
    assert read_ingested(tmp_path / "out")["split"].tolist() == ["train", None]


def test_empty_csv_gives_an_empty_frame(tmp_path: Path):
    (tmp_path / "manifest.csv").write_bytes(b"")
    frame, _ = load_dataset(tmp_path, POLICIES)
    assert len(frame) == 0
    assert {"text", "image"} <= set(frame.columns)


# Ingest ---------------------------------------------------------------------------------------------------
RED, BLUE = _png((255, 0, 0)), _png((0, 0, 255))
# r1 and r2 are copies (same text, same image bytes): these tests look at both rows, so copies are kept.
KEEP_COPIES = RunConfig.from_dict({"policies": ["hate", "spam"], "split": {"deduplicate": False}})


@pytest.fixture
def raw_dataset(tmp_path: Path) -> Path:
    folder = tmp_path / "raw"
    (folder / "img").mkdir(parents=True)
    (folder / "img" / "red.png").write_bytes(RED)
    (folder / "img" / "red_copy.PNG").write_bytes(RED)
    (folder / "img" / "blue.png").write_bytes(BLUE)
    (tmp_path / "outside.png").write_bytes(BLUE)
    (folder / "img" / "link.png").symlink_to(tmp_path / "outside.png")
    rows = [
        {"id": "r1", "text": "same post", "image": "img/red.png", "hate": 0, "spam": 1},
        {"id": "r2", "text": "same post", "image": "img/red_copy.PNG", "hate": 0, "spam": 1},
        {"id": "r3", "text": "other post", "image": "img/blue.png", "hate": 1, "spam": 0},
        {"id": "r4", "text": "escape", "image": "../outside.png", "hate": 0, "spam": 0},
        {"id": "r5", "text": "gone", "image": "img/missing.png", "hate": 0, "spam": 0},
        {"id": "r6", "text": "text only", "image": None, "hate": 0, "spam": 0},
        {"id": "r7", "text": None, "image": "img/blue.png", "hate": 0, "spam": 1},
        {"id": "r8", "text": "absolute", "image": str(tmp_path / "outside.png"), "hate": 0, "spam": 0},
        {"id": "r9", "text": "symlink", "image": "img/link.png", "hate": 0, "spam": 0},
    ]
    _write_jsonl(folder / "manifest.jsonl", rows)
    return folder


def test_ingest_copies_images_by_content_hash(raw_dataset: Path, tmp_path: Path):
    out = tmp_path / "out"
    result = ingest_dataset(raw_dataset, out, KEEP_COPIES)
    frame = read_ingested(out).set_index("id")
    assert result.rows == 9
    red_hash, blue_hash = hashlib.sha256(RED).hexdigest(), hashlib.sha256(BLUE).hexdigest()
    assert frame.loc["r1", "image"] == f"images/{red_hash[:2]}/{red_hash}.png"
    assert frame.loc["r2", "image"] == frame.loc["r1", "image"]  # suffix lower-cased, content deduplicated
    assert frame.loc["r1", "image_sha256"] == red_hash
    assert frame.loc["r3", "image_sha256"] == blue_hash
    assert (out / frame.loc["r3", "image"]).read_bytes() == BLUE
    stored = sorted(p.name for p in (out / "images").rglob("*") if p.is_file())
    assert stored == sorted([f"{red_hash}.png", f"{blue_hash}.png"])


def test_ingest_marks_unsafe_missing_and_absent_images(raw_dataset: Path, tmp_path: Path):
    out = tmp_path / "out"
    ingest_dataset(raw_dataset, out, KEEP_COPIES)
    frame = read_ingested(out).set_index("id")
    status = frame[COL_IMAGE_FILE_STATUS].to_dict()
    assert status["r1"] == IMAGE_OK
    assert status["r4"] == IMAGE_UNSAFE_PATH  # ../outside.png
    assert status["r8"] == IMAGE_UNSAFE_PATH  # absolute path
    assert status["r9"] == IMAGE_UNSAFE_PATH  # symlink that resolves outside the dataset
    assert status["r5"] == IMAGE_MISSING_FILE
    assert status["r6"] == IMAGE_ABSENT
    # Unusable references are kept verbatim for the validation message, never copied or hashed.
    assert frame.loc["r4", "image"] == "../outside.png"
    assert frame.loc["r5", "image"] == "img/missing.png"
    assert frame.loc[["r4", "r5", "r8", "r9"], "image_sha256"].isna().all()
    assert frame.loc["r6", "modality"] == MODALITY_TEXT
    assert frame.loc["r7", "modality"] == MODALITY_IMAGE
    assert frame.loc["r1", "modality"] == MODALITY_BOTH


def test_item_hash_equal_for_identical_text_and_image_bytes(raw_dataset: Path, tmp_path: Path):
    out = tmp_path / "out"
    ingest_dataset(raw_dataset, out, KEEP_COPIES)
    frame = read_ingested(out).set_index("id")
    assert frame.loc["r1", "item_hash"] == frame.loc["r2", "item_hash"]  # different files, same bytes
    assert frame.loc["r3", "item_hash"] != frame.loc["r7", "item_hash"]  # same image, text differs
    assert frame["item_hash"].nunique() == len(frame) - 1


def test_fingerprint_is_stable_and_tracks_labels(raw_dataset: Path, tmp_path: Path):
    first = ingest_dataset(raw_dataset, tmp_path / "one", KEEP_COPIES)
    second = ingest_dataset(raw_dataset, tmp_path / "two", KEEP_COPIES)
    assert first.fingerprint == second.fingerprint
    assert len(first.fingerprint) == 64
    assert read_fingerprint(tmp_path / "one") == first.to_dict()
    assert json.loads((tmp_path / "one" / DATASET_FINGERPRINT).read_text())["rows"] == 9
    assert (tmp_path / "one" / DATASET_TABLE).is_file()

    manifest = raw_dataset / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
    random.Random(0).shuffle(rows)
    _write_jsonl(manifest, rows)
    shuffled = ingest_dataset(raw_dataset, tmp_path / "shuffled", KEEP_COPIES)
    assert shuffled.fingerprint == first.fingerprint  # row order does not matter

    rows[0]["spam"] = 1 - rows[0]["spam"]
    _write_jsonl(manifest, rows)
    relabelled = ingest_dataset(raw_dataset, tmp_path / "relabelled", KEEP_COPIES)
    assert relabelled.fingerprint != first.fingerprint


def test_fingerprint_tracks_image_bytes(raw_dataset: Path, tmp_path: Path):
    before = ingest_dataset(raw_dataset, tmp_path / "before", KEEP_COPIES)
    (raw_dataset / "img" / "blue.png").write_bytes(_png((0, 0, 250)))
    after = ingest_dataset(raw_dataset, tmp_path / "after", KEEP_COPIES)
    assert after.fingerprint != before.fingerprint


def test_ingest_hateful_memes_resolves_images(tmp_path: Path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "1.png").write_bytes(RED)
    _write_jsonl(tmp_path / "train.jsonl", [{"id": 1, "img": "img/1.png", "label": 1, "text": "a"}])
    _write_jsonl(tmp_path / "dev.jsonl", [{"id": 2, "img": "img/1.png", "label": 0, "text": "b"}])
    result = ingest_dataset(tmp_path, tmp_path / "out", RunConfig(policies=[HATEFUL_MEMES_POLICY]))
    frame = read_ingested(tmp_path / "out")
    assert result.policies == [HATEFUL_MEMES_POLICY]
    assert frame[COL_IMAGE_FILE_STATUS].tolist() == [IMAGE_OK, IMAGE_OK]
    assert frame["split"].tolist() == ["train", "validation"]


# Split ----------------------------------------------------------------------------------------------------
def _synthetic_frame(n: int, seed: int = 0, rare_positives: int = 10) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    modality = rng.choice([MODALITY_BOTH, MODALITY_TEXT, MODALITY_IMAGE], size=n, p=[0.8, 0.1, 0.1])
    rare = np.zeros(n, dtype=int)
    rare[rng.choice(n, size=rare_positives, replace=False)] = 1
    return pd.DataFrame(
        {
            "id": [f"i{k}" for k in range(n)],
            "item_hash": [f"h{k}" for k in range(n)],
            "modality": modality,
            "common": (rng.random(n) < 0.3).astype(int),
            "rare": rare,
        }
    )


def test_split_fractions_are_approximately_honoured():
    frame = _synthetic_frame(2000)
    splits = assign_splits(
        frame, ["common", "rare"], SplitConfig(validation_fraction=0.15, test_fraction=0.2)
    )
    assert splits["id"].tolist() == frame["id"].tolist()
    assert set(splits["split"]) == set(SPLITS)
    shares = splits["split"].value_counts(normalize=True)
    assert shares["test"] == pytest.approx(0.2, abs=0.02)
    assert shares["validation"] == pytest.approx(0.15, abs=0.02)
    assert shares["train"] == pytest.approx(0.65, abs=0.02)


def test_split_is_seeded():
    frame = _synthetic_frame(500)
    first = assign_splits(frame, ["common", "rare"], SplitConfig(seed=1))
    again = assign_splits(frame, ["common", "rare"], SplitConfig(seed=1))
    other = assign_splits(frame, ["common", "rare"], SplitConfig(seed=2))
    assert first["split"].tolist() == again["split"].tolist()
    assert first["split"].tolist() != other["split"].tolist()


def test_identical_items_never_straddle_splits():
    frame = _synthetic_frame(600)
    frame["item_hash"] = [f"h{k // 3}" for k in range(len(frame))]  # every item three times
    for column in ("modality", "common", "rare"):  # duplicates share content, so labels and modality
        frame[column] = frame.groupby("item_hash")[column].transform("first")
    splits = assign_splits(frame, ["common", "rare"], SplitConfig())
    merged = frame.assign(split=splits["split"].to_numpy())
    assert merged.groupby("item_hash")["split"].nunique().max() == 1
    assert merged["split"].nunique() == 3


def test_manifest_fixed_splits_are_respected_and_pull_their_duplicates():
    frame = _synthetic_frame(300)
    frame["split"] = None
    frame.loc[:49, "split"] = "test"
    frame.loc[50:59, "split"] = "validation"
    frame.loc[60, "item_hash"] = frame.loc[0, "item_hash"]  # an unlabelled duplicate of a fixed test item
    splits = assign_splits(frame, ["common", "rare"], SplitConfig())
    assert (splits.loc[:49, "split"] == "test").all()
    assert (splits.loc[50:59, "split"] == "validation").all()
    assert splits.loc[60, "split"] == "test"
    assert set(splits.loc[61:, "split"]) == set(SPLITS)


def test_stratification_puts_rare_positives_and_slices_in_every_split():
    for seed in range(10):
        frame = _synthetic_frame(1000, seed=seed, rare_positives=20)  # 2% positives, spread over strata
        splits = assign_splits(frame, ["common", "rare"], SplitConfig(seed=seed))
        merged = frame.assign(split=splits["split"].to_numpy())
        for split in SPLITS:
            part = merged[merged["split"] == split]
            assert part["rare"].sum() >= 1, f"seed {seed}: no rare positive in {split}"
            assert set(part["modality"]) == {MODALITY_BOTH, MODALITY_TEXT, MODALITY_IMAGE}


def test_rare_positives_in_one_stratum_reach_every_split():
    frame = _synthetic_frame(1000, rare_positives=0)
    frame.loc[:6, ["rare", "common", "modality"]] = [1, 0, MODALITY_BOTH]  # 7 positives: 1.4 test, 1.05 val
    splits = assign_splits(frame, ["common", "rare"], SplitConfig())
    merged = frame.assign(split=splits["split"].to_numpy())
    per_split = merged.groupby("split")["rare"].sum()
    assert per_split.sum() == 7
    assert (per_split.reindex(list(SPLITS)).fillna(0) >= 1).all(), per_split.to_dict()


def test_eight_rare_positives_over_several_strata_reach_every_split():
    frame = _synthetic_frame(1000, seed=2, rare_positives=8)
    splits = assign_splits(frame, ["common", "rare"], SplitConfig(seed=2))
    merged = frame.assign(split=splits["split"].to_numpy())
    assert (merged.groupby("split")["rare"].sum() >= 1).all()


def test_split_dataset_writes_the_table_and_joins(tiny_dataset):
    dataset_dir, splits_dir = tiny_dataset
    assert (splits_dir / SPLITS_TABLE).is_file()
    frame = read_split_frame(dataset_dir, splits_dir)
    assert len(frame) == len(read_ingested(dataset_dir))
    assert frame["split"].notna().all()
    for policy in RunConfig().policies:
        for split in SPLITS:
            assert frame.loc[frame["split"] == split, policy].sum() >= 1, f"no {policy} positive in {split}"


def test_split_dataset_counts(tmp_path: Path, tiny_dataset):
    dataset_dir, _ = tiny_dataset
    counts = split_dataset(dataset_dir, tmp_path / "splits", POLICIES, SplitConfig(seed=4))
    assert set(counts) == set(SPLITS)
    assert sum(counts.values()) == len(read_ingested(dataset_dir))
    written = pd.read_parquet(tmp_path / "splits" / SPLITS_TABLE)
    assert written["split"].value_counts().to_dict() == {k: v for k, v in counts.items() if v}


def test_ingest_marks_generated_data_as_synthetic_and_manifests_as_not(tmp_path: Path):
    from core.data.generate import GenerateSpec, generate_dataset
    from core.data.ingest import ingest_dataset

    generate_dataset(tmp_path / "generated", GenerateSpec(rows=20, seed=1))
    assert (
        ingest_dataset(tmp_path / "generated", tmp_path / "a", RunConfig(policies=list(POLICIES))).synthetic
        is True
    )
    (tmp_path / "generated" / "generator.json").unlink()
    assert (
        ingest_dataset(tmp_path / "generated", tmp_path / "b", RunConfig(policies=list(POLICIES))).synthetic
        is False
    )
