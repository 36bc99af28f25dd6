"""The retraining dataset: the champion's training data (through its lineage) plus trusted new labels."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from core.common.constants import (
    COL_DATA_ORIGIN,
    COL_SPLIT,
    DATASET_LINEAGE_FILE,
    ORIGIN_NEW,
    ORIGIN_ORIGINAL,
    SPLIT_TEST,
    SPLIT_TRAIN,
)
from core.config.retrain_rules import RetrainingDataRules, RetrainRules
from core.config.run import RunConfig
from core.data.lineage import DataLineage, LineageError
from monitoring.retraining_data import RetrainingDataError, build_retraining_data, retraining_data_uri
from serving.content_store import LocalContentStore

POLICIES = list(RunConfig().policies)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> DataLineage:
    """A small ingested and split dataset, as a champion's lineage records it."""
    from core.data.generate import GenerateSpec, generate_dataset
    from core.data.ingest import ingest_dataset
    from core.data.split import split_dataset

    root = tmp_path_factory.mktemp("base")
    generate_dataset(root / "raw", GenerateSpec(rows=80, seed=3))
    config = RunConfig()
    result = ingest_dataset(root / "raw", root / "dataset", config)
    split_dataset(root / "dataset", root / "splits", config.policies, config.split)
    return DataLineage(str(root / "dataset"), str(root / "splits"), result.fingerprint, result.sources)


def _label(request_id: str, labels: dict, source: str = "delayed", stratum: str = "uniform", **extra) -> str:
    entry = {"request_id": request_id, "item": 0, "labels": labels, "source": source,
             "sampling": {"stratum": stratum, "weight": 2.0}, **extra}  # fmt: skip
    return json.dumps(entry) + "\n"


def _window(tmp_path: Path, lines: list[str], contents: dict[str, str]) -> tuple[Path, LocalContentStore]:
    log_root = tmp_path / "logs"
    (log_root / "labels").mkdir(parents=True)
    (log_root / "labels" / "labels.jsonl").write_text("".join(lines), encoding="utf-8")
    store = LocalContentStore(tmp_path / "content")
    for request_id, text in contents.items():
        store.put(request_id, 0, text, None)
    return log_root, store


def _manifest(folder: Path) -> pd.DataFrame:
    return pd.read_json(folder / "manifest.jsonl", lines=True, dtype=False)


def test_keeps_the_champions_rows_and_splits_and_adds_trusted_new_rows(tmp_path: Path, base: DataLineage):
    lines = [_label(f"u{i}", {"spam": i % 2, "hate": 0}) for i in range(40)]
    lines += [
        _label(f"q{i}", {"spam": 1}, source="review", stratum="uncertainty", gold_disagreement=0.05)
        for i in range(10)
    ]
    lines += [_label("evil", {"spam": 0}, source="anonymous")]  # not a trusted source
    # review batches whose gold items disagreed too much, or that had no gold: left out
    lines += [_label("sloppy", {"spam": 0}, source="review", gold_disagreement=0.5)]
    lines += [_label("unchecked", {"spam": 0}, source="review")]
    lines += [_label("gone", {"spam": 1})]  # no content in the store
    contents = {f"u{i}": f"new slang post {i}" for i in range(40)}
    contents |= {f"q{i}": f"borderline post {i}" for i in range(10)} | {"evil": "planted"}
    contents |= {"sloppy": "careless label", "unchecked": "no gold in its batch"}
    log_root, store = _window(tmp_path, lines, contents)

    result = build_retraining_data(base, log_root, store, tmp_path / "out", POLICIES, RetrainingDataRules())

    frame = _manifest(tmp_path / "out")
    original = frame[frame[COL_DATA_ORIGIN] == ORIGIN_ORIGINAL]
    champion_splits = pd.read_parquet(Path(base.splits_uri) / "splits.parquet")
    merged = original.merge(champion_splits, on="id", suffixes=("", "_champion"))
    assert len(merged) == len(champion_splits) == result.original_rows  # every original row, in its split
    assert (merged[COL_SPLIT] == merged[f"{COL_SPLIT}_champion"]).all()
    new = frame[frame[COL_DATA_ORIGIN] == ORIGIN_NEW]
    assert result.new_rows == len(new) == 50
    assert result.dropped == {
        "untrusted_source": 1,
        "no_content": 1,
        "gold_disagreement": 1,
        "no_gold_check": 1,
    }
    assert "planted" not in set(new["text"])
    # Only uniformly sampled rows enter test; the uncertainty-picked ones train.
    assert set(new.loc[new["sampling_stratum"] == "uncertainty", COL_SPLIT]) == {SPLIT_TRAIN}
    assert SPLIT_TEST in set(new.loc[new["sampling_stratum"] == "uniform", COL_SPLIT])
    # A policy a label line does not give stays unannotated (masked), not negative.
    assert new.loc[new["label_source"] == "review", "hate"].isna().all()
    lineage = json.loads((tmp_path / "out" / DATASET_LINEAGE_FILE).read_text(encoding="utf-8"))
    assert lineage["sources"] == [base.uri, str(log_root / "labels" / "labels.jsonl")]


def test_the_result_ingests_with_its_fixed_splits_and_origins(tmp_path: Path, base: DataLineage):
    from core.data.ingest import ingest_dataset, read_ingested
    from core.data.split import assign_splits

    log_root, store = _window(tmp_path, [_label(f"u{i}", {"spam": 1}) for i in range(12)],
                              {f"u{i}": f"fresh text {i}" for i in range(12)})  # fmt: skip
    build_retraining_data(base, log_root, store, tmp_path / "out", POLICIES, RetrainingDataRules())
    config = RunConfig()
    result = ingest_dataset(tmp_path / "out", tmp_path / "ingested", config)
    frame = read_ingested(tmp_path / "ingested")
    assert set(frame[COL_DATA_ORIGIN]) == {ORIGIN_ORIGINAL, ORIGIN_NEW}
    assert result.sources[1:] == [base.uri, str(log_root / "labels" / "labels.jsonl")]
    splits = assign_splits(frame, config.policies, config.split).merge(frame[["id", COL_SPLIT]], on="id")
    assert (splits[f"{COL_SPLIT}_x"] == splits[f"{COL_SPLIT}_y"]).all()  # every split was fixed


def test_caps_the_new_share_and_drops_copies_of_original_items(tmp_path: Path, base: DataLineage):
    from core.data.ingest import read_ingested

    ingested = read_ingested(base.uri)
    original_text = ingested.loc[ingested["modality"] == "text-only", "text"].iloc[0]
    lines = [_label(f"u{i}", {"spam": 1}) for i in range(200)] + [_label("copy", {"spam": 1})]
    contents = {f"u{i}": f"flood {i}" for i in range(200)} | {"copy": original_text}
    log_root, store = _window(tmp_path, lines, contents)
    result = build_retraining_data(
        base, log_root, store, tmp_path / "out", POLICIES, RetrainingDataRules(max_new_share=0.25)
    )
    total = result.original_rows + result.new_rows
    assert result.new_rows / total <= 0.25 and result.new_rows >= 0.25 * total - 2
    assert result.dropped == {"same_as_original": 1, "over_cap": 200 - result.new_rows}
    frame = _manifest(tmp_path / "out")
    assert (frame["text"] == original_text).sum() == (ingested["text"] == original_text).sum()


def test_refuses_a_used_folder_and_leaves_nothing_half_written(tmp_path: Path, base: DataLineage):
    log_root, store = _window(tmp_path, [], {})
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x", encoding="utf-8")
    with pytest.raises(RetrainingDataError, match="already holds files"):
        build_retraining_data(base, log_root, store, tmp_path / "used", POLICIES, RetrainingDataRules())
    with pytest.raises(RetrainingDataError, match="no rows"):
        build_retraining_data(None, log_root, store, tmp_path / "empty", POLICIES, RetrainingDataRules())
    assert not (tmp_path / "empty").exists() and not list(tmp_path.glob(".*partial"))
    changed = DataLineage(base.uri, base.splits_uri, "0" * 64, base.sources)
    with pytest.raises(LineageError, match="changed since the model was trained"):
        build_retraining_data(changed, log_root, store, tmp_path / "x", POLICIES, RetrainingDataRules())
    assert not (tmp_path / "x").exists()


def test_the_trigger_builds_it_only_when_the_rules_name_a_content_store(tmp_path: Path, base: DataLineage):
    log_root, store = _window(tmp_path, [_label("u1", {"spam": 1})], {"u1": "hello"})
    rules = RetrainRules(
        retraining_data=RetrainingDataRules(content_store_uri=str(tmp_path / "content"),
                                            output_dir=str(tmp_path / "built"))
    )  # fmt: skip
    window = "a" * 64
    uri, reason = retraining_data_uri(
        rules, window, str(log_root), build=False, champion=lambda _: ("4", base)
    )
    assert "dry run, not built" in reason and not Path(uri).exists()
    uri, reason = retraining_data_uri(
        rules, window, str(log_root), build=True, champion=lambda _: ("4", base)
    )
    assert Path(uri).parent == tmp_path / "built" and "+ 1 new labeled rows" in reason
    again, reason = retraining_data_uri(
        rules, window, str(log_root), build=True, champion=lambda _: ("4", base)
    )
    assert again == uri and "reused" in reason
    uri, reason = retraining_data_uri(RetrainRules(), window, str(log_root), build=True)
    assert uri == "" and "default dataset" in reason
