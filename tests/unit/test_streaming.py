"""Training that streams the dataset's shards: the same statistics as the in-memory path, split lookup by id
hash, per-shard feature caches that a restarted process reuses, and the choice between the two paths."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from test_distributed_training import _config

from core.config.run import RunConfig
from core.data.split import read_split_frame
from core.training.distributed import World
from core.training.model import build_model
from core.training.preprocessing import TOKENIZER_FILE, Preprocessor
from core.training.sources import InMemoryData
from core.training.streaming import CALIBRATING, EARLY_STOPPING, OTHER, TRAIN, SplitLookup, StreamedData
from core.training.trainer import _preprocessing_spec, open_training_data, train_model


def test_split_lookup_gives_each_id_its_split_and_calibration_part(sharded_tiny_dataset):
    _, splits_dir = sharded_tiny_dataset
    table = pd.read_parquet(splits_dir / "splits.parquet")
    lookup = SplitLookup.from_splits(splits_dir, calibration_share=0.5)
    codes = lookup.codes_of([*table["id"].astype(str), "not-an-id"])
    assert codes[-1] == OTHER
    for split, code in zip(table["split"], codes[:-1], strict=True):
        expected = {"train": {TRAIN}, "validation": {EARLY_STOPPING, CALIBRATING}, "test": {OTHER}}[split]
        assert code in expected
    validation = codes[:-1][(table["split"] == "validation").to_numpy()]
    assert (validation == EARLY_STOPPING).any() and (validation == CALIBRATING).any()


def test_streaming_sees_the_rows_and_counts_the_in_memory_path_sees(
    sharded_tiny_dataset, tiny_text_encoder, tiny_vit_encoder, tmp_path
):
    dataset_dir, splits_dir = sharded_tiny_dataset
    config = _config(tiny_text_encoder, tiny_vit_encoder)
    memory = train_model(dataset_dir, read_split_frame(dataset_dir, splits_dir), config, tmp_path / "memory")
    streamed_config = config.with_overrides(**{"train.stream_above_rows": 0})
    streamed = train_model(dataset_dir, splits_dir, streamed_config, tmp_path / "streamed")
    # the same train rows every epoch (one process reads every shard), the same calibration rows
    assert streamed.train_samples_per_second > 0 and streamed.epochs_run == memory.epochs_run == 2
    frame = read_split_frame(dataset_dir, splits_dir)
    train_rows = int((frame["split"] == "train").sum())
    assert streamed.steps == memory.steps == 2 * -(-train_rows // 16)
    assert {p: c["rows"] for p, c in streamed.calibration.items()} == {
        p: c["rows"] for p, c in memory.calibration.items()
    }
    # statistics of the train split: the n-gram IDF is stored in the model and must be identical
    one, two = (
        load_file(tmp_path / "memory" / "model.safetensors"),
        load_file(tmp_path / "streamed" / "model.safetensors"),
    )
    assert torch.equal(one["lexical.idf"], two["lexical.idf"])


def _encoder(config: RunConfig):
    from core.training.model import resolve_text_encoder

    folder = resolve_text_encoder(config.train.text_encoder)
    spec = _preprocessing_spec(config.train, folder, config.validation)
    model, _ = build_model(
        config.policies, config.train.text_encoder, config.train.image_encoder, 16, 0.0, spec
    )
    return model, Preprocessor(spec, folder / TOKENIZER_FILE)


def test_feature_caches_are_per_shard_and_reused_without_the_shards(
    sharded_tiny_dataset, tiny_text_encoder, tiny_vit_encoder, tmp_path
):
    dataset_dir, splits_dir = sharded_tiny_dataset
    copy = tmp_path / "dataset"
    shutil.copytree(dataset_dir, copy)
    config = _config(tiny_text_encoder, tiny_vit_encoder, **{"train.stream_above_rows": 0})
    model, preprocessor = _encoder(config)
    cpu = torch.device("cpu")
    first = StreamedData(copy, splits_dir, config, World(), cpu, tmp_path / "cache")
    first.encode(model, preprocessor, freeze_text=True, freeze_image=True)
    assert len(first.files) == 5 and all(path.is_file() for path in first.files)
    cached = load_file(first.files[0])
    assert "text_features" in cached and "image_features" in cached and "pixels" not in cached
    counts = first.label_counts()

    (copy / "shards" / "part-00000.parquet").unlink(missing_ok=True)
    again = StreamedData(copy, splits_dir, config, World(), cpu, tmp_path / "cache")
    again.encode(
        model, preprocessor, freeze_text=True, freeze_image=True
    )  # a restart: the caches, not the shard
    assert all(torch.equal(a, b) for a, b in zip(again.label_counts(), counts, strict=True))

    fresh = StreamedData(copy, splits_dir, config, World(), cpu, tmp_path / "other-cache")
    with pytest.raises(Exception, match="part-00000.parquet"):
        fresh.encode(model, preprocessor, freeze_text=True, freeze_image=True)


def test_the_trainer_streams_above_the_row_threshold(
    sharded_tiny_dataset, tiny_text_encoder, tiny_vit_encoder
):
    dataset_dir, splits_dir = sharded_tiny_dataset
    rows = int(pd.read_parquet(splits_dir / "splits.parquet")["split"].isin(["train", "validation"]).sum())
    cpu = torch.device("cpu")
    for threshold, kind in ((rows, InMemoryData), (rows - 1, StreamedData)):
        config = _config(tiny_text_encoder, tiny_vit_encoder, **{"train.stream_above_rows": threshold})
        data = open_training_data(dataset_dir, splits_dir, config, World(), cpu)
        assert isinstance(data, kind)
        data.close(finished=True)


def test_scoring_from_the_shards_gives_the_scores_of_the_image_files(
    sharded_tiny_dataset, tiny_text_encoder, tiny_vit_encoder, tmp_path
):
    from core.evaluation.scoring import score_frame

    dataset_dir, splits_dir = sharded_tiny_dataset
    frame = read_split_frame(dataset_dir, splits_dir)
    config = _config(tiny_text_encoder, tiny_vit_encoder, **{"train.epochs": 1})
    train_model(dataset_dir, frame, config, tmp_path / "model")
    test = frame[frame["split"] == "test"].sample(frac=1.0, random_state=1)  # any order: the table keeps it
    from_files = score_frame(tmp_path / "model", dataset_dir, test)
    from_shards = score_frame(tmp_path / "model", dataset_dir, test, loader_workers=2)
    assert from_shards["id"].tolist() == from_files["id"].tolist() == test["id"].astype(str).tolist()
    pd.testing.assert_frame_equal(from_shards, from_files, atol=1e-5, rtol=1e-4)
    assert from_files.filter(like="score_no_image_").notna().any().any()

    foreign = pd.concat([test.head(2), test.head(1).assign(id="not-in-the-shards")])
    with pytest.raises(ValueError, match="1 of 3 rows to score are not in the shards"):
        score_frame(tmp_path / "model", dataset_dir, foreign, loader_workers=0)
