"""Model build/save/load (safetensors only), training runs on the tiny dataset, scoring, modality dropout."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from core.common.constants import (
    COL_MODALITY,
    IMAGE_ENCODER_DIR,
    MODALITY_BOTH,
    MODALITY_IMAGE,
    MODALITY_TEXT,
    MODEL_SPEC,
    MODEL_WEIGHTS,
    TEXT_ENCODER_DIR,
)
from core.config.run import RunConfig
from core.data.split import read_split_frame
from core.evaluation.scoring import score_frame
from core.training.model import FusionClassifier, build_model, load_model, save_model
from core.training.preprocessing import PreprocessingSpec
from core.training.trainer import (
    _modality_dropout,
    macro_roc_auc,
    masked_bce_loss,
    positive_weights,
    train_model,
)

POLICIES = list(RunConfig().policies)
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}


def _config(text_encoder: Path, **overrides) -> RunConfig:
    values = {
        "train.text_encoder": str(text_encoder),
        "train.image_encoder": "cnn",
        "train.lexical_buckets": 4096,
        "train.image_size": 16,
        "train.hidden_dim": 16,
        "train.epochs": 2,
        **overrides,
    }
    return RunConfig().with_overrides(**values)


def _inputs(batch: int, side: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, 7, dtype=torch.int64)
    mask[0, 4:] = 0
    return {
        "input_ids": torch.randint(1000, 2000, (batch, 7), generator=generator),
        "attention_mask": mask,
        "pixel_values": torch.randn(batch, 3, side, side, generator=generator),
        "has_text": torch.tensor([1.0, 0.0, 1.0])[:batch],
        "has_image": torch.tensor([1.0, 1.0, 0.0])[:batch],
    }


def _pickle_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES]


# Build / save / load --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built(tiny_text_encoder) -> tuple[FusionClassifier, dict]:
    torch.manual_seed(0)
    model, sources = build_model(
        POLICIES, str(tiny_text_encoder), "cnn", 16, 0.1, PreprocessingSpec(max_text_length=16, image_size=32)
    )
    return model.eval(), sources


def test_build_loads_the_pretrained_text_weights(built, tiny_text_encoder):
    model, sources = built
    assert sources["text"] == tiny_text_encoder
    saved = load_file(str(tiny_text_encoder / "model.safetensors"))
    embedding = model.text_encoder.backbone.state_dict()["embeddings.word_embeddings.weight"]
    assert torch.equal(embedding, saved["embeddings.word_embeddings.weight"])
    assert model.spec.text_encoder == {"kind": "hf", "source": str(tiny_text_encoder), "hidden_size": 32}
    assert model.spec.image_encoder["kind"] == "cnn"
    assert model.spec.policies == POLICIES


def test_save_load_round_trip_without_pickle(built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    model, sources = built
    save_model(model, tmp_path, sources)
    assert (tmp_path / MODEL_WEIGHTS).is_file()
    assert (tmp_path / MODEL_SPEC).is_file()
    assert (tmp_path / TEXT_ENCODER_DIR / "tokenizer.json").is_file()
    assert (tmp_path / TEXT_ENCODER_DIR / "config.json").is_file()
    assert not (tmp_path / f"{MODEL_WEIGHTS}.partial").exists()
    assert _pickle_files(tmp_path) == []

    def refuse(*_args, **_kwargs):
        raise AssertionError("load_model must not unpickle anything")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    loaded = load_model(tmp_path)
    monkeypatch.undo()

    assert not loaded.training
    assert loaded.spec.to_dict() == json.loads(json.dumps(model.spec.to_dict()))
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    for name in original:
        assert torch.equal(original[name], restored[name]), name
    inputs = _inputs(3, 32)
    with torch.no_grad():
        assert torch.equal(model(**inputs), loaded(**inputs))


def test_interrupted_save_leaves_no_spec(built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    model, sources = built

    def crash():
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(model.spec, "to_dict", crash)  # dies right before the spec would be written
    with pytest.raises(KeyboardInterrupt):
        save_model(model, tmp_path, sources)
    monkeypatch.undo()
    assert (tmp_path / MODEL_WEIGHTS).is_file()
    assert not (tmp_path / MODEL_SPEC).exists()
    with pytest.raises(FileNotFoundError, match="incomplete save"):
        load_model(tmp_path)


def test_interrupted_weights_write_leaves_no_weights(built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import safetensors.torch

    model, sources = built

    def half_write(_state, filename, *args, **kwargs):
        Path(filename).write_bytes(b"\x00" * 10)
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", half_write)
    with pytest.raises(OSError, match="disk full"):
        save_model(model, tmp_path, sources)
    assert not (tmp_path / MODEL_WEIGHTS).exists()
    assert not (tmp_path / MODEL_SPEC).exists()
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path)


def test_load_model_of_a_folder_without_spec(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=MODEL_SPEC):
        load_model(tmp_path)


def test_unknown_text_encoder_folder_is_named(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        build_model(POLICIES, str(tmp_path), "cnn", 16, 0.1, PreprocessingSpec())


# Training -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def split_frame(tiny_dataset) -> pd.DataFrame:
    dataset_dir, splits_dir = tiny_dataset
    return read_split_frame(dataset_dir, splits_dir)


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory, tiny_dataset, tiny_text_encoder, split_frame):
    """A 2-epoch run with the CNN image encoder: (model_dir, result, callback calls)."""
    dataset_dir, _ = tiny_dataset
    out = tmp_path_factory.mktemp("two_epochs")
    calls: list[tuple[int, dict]] = []
    result = train_model(
        dataset_dir,
        split_frame,
        _config(tiny_text_encoder),
        out,
        on_epoch_end=lambda e, m: calls.append((e, m)),
    )
    return out, result, calls


def test_two_epoch_run_reports_history_and_writes_the_model(two_epochs, tiny_text_encoder):
    out, result, calls = two_epochs
    assert result.epochs_run == 2
    assert [entry["epoch"] for entry in result.history] == [1, 2]
    for entry in result.history:
        assert np.isfinite(entry["train_loss"]) and entry["train_loss"] > 0
        assert np.isfinite(entry["validation_loss"])
        assert 0.0 <= entry["validation_macro_roc_auc"] <= 1.0
    assert [epoch for epoch, _ in calls] == [1, 2]
    assert set(calls[0][1]) == {
        "train_loss", "validation_loss", "validation_macro_roc_auc", "learning_rate", "epoch_seconds"
    }  # fmt: skip
    assert result.best_epoch in (1, 2)
    assert result.device == "cpu"
    assert not result.stopped_early
    assert (out / MODEL_WEIGHTS).is_file() and (out / MODEL_SPEC).is_file()
    assert _pickle_files(out) == []
    spec = json.loads((out / MODEL_SPEC).read_text(encoding="utf-8"))
    assert spec["policies"] == POLICIES
    assert spec["text_encoder"]["source"] == str(tiny_text_encoder)
    assert spec["preprocessing"]["image_size"] == 16
    assert json.loads(json.dumps(result.to_dict()))["epochs_run"] == 2


def test_steps_match_batches(two_epochs, split_frame):
    _, result, _ = two_epochs
    train_rows = int((split_frame["split"] == "train").sum())
    assert result.steps == 2 * int(np.ceil(train_rows / 64))


def test_training_is_deterministic_per_seed(
    two_epochs, tmp_path, tiny_dataset, tiny_text_encoder, split_frame
):
    dataset_dir, _ = tiny_dataset
    first_dir, first, _ = two_epochs
    again = train_model(dataset_dir, split_frame, _config(tiny_text_encoder), tmp_path / "again")
    reference = load_file(str(first_dir / MODEL_WEIGHTS))
    repeated = load_file(str(tmp_path / "again" / MODEL_WEIGHTS))
    assert reference.keys() == repeated.keys()
    for name in reference:
        assert torch.equal(reference[name], repeated[name]), f"{name} differs between identical runs"
    assert [h["train_loss"] for h in again.history] == [h["train_loss"] for h in first.history]

    other = train_model(
        dataset_dir, split_frame, _config(tiny_text_encoder, **{"train.seed": 7, "train.epochs": 1}),
        tmp_path / "other",
    )  # fmt: skip
    changed = load_file(str(tmp_path / "other" / MODEL_WEIGHTS))
    assert other.epochs_run == 1
    assert any(not torch.equal(reference[name], changed[name]) for name in reference)


def test_max_steps_stops_after_one_step(tmp_path, tiny_dataset, tiny_text_encoder, split_frame):
    dataset_dir, _ = tiny_dataset
    config = _config(tiny_text_encoder, **{"train.epochs": 5, "train.max_steps": 1})
    result = train_model(dataset_dir, split_frame, config, tmp_path)
    assert result.steps == 1
    assert result.epochs_run == 1
    assert len(result.history) == 1
    assert (tmp_path / MODEL_WEIGHTS).is_file()


def test_training_needs_train_and_validation_rows(tmp_path, tiny_dataset, tiny_text_encoder, split_frame):
    dataset_dir, _ = tiny_dataset
    only_train = split_frame[split_frame["split"] == "train"]
    with pytest.raises(ValueError, match="need train and validation rows"):
        train_model(dataset_dir, only_train, _config(tiny_text_encoder), tmp_path)
    assert not (tmp_path / MODEL_SPEC).exists()


@pytest.fixture(scope="module")
def vit_model(tmp_path_factory, tiny_dataset, tiny_text_encoder, tiny_vit_encoder, split_frame):
    dataset_dir, _ = tiny_dataset
    out = tmp_path_factory.mktemp("vit_model")
    config = _config(
        tiny_text_encoder,
        **{
            "train.image_encoder": str(tiny_vit_encoder),
            "train.epochs": 1,
            "train.freeze_text_encoder": False,
        },
    )
    result = train_model(dataset_dir, split_frame, config, out)
    return out, result


def test_vit_image_encoder_trains_and_reloads(vit_model, tiny_vit_encoder):
    out, result = vit_model
    assert result.epochs_run == 1 and result.steps >= 1
    assert (out / IMAGE_ENCODER_DIR / "config.json").is_file()
    spec = json.loads((out / MODEL_SPEC).read_text(encoding="utf-8"))
    assert spec["image_encoder"] == {"kind": "hf", "source": str(tiny_vit_encoder), "feature_dim": 32}
    assert spec["preprocessing"]["image_size"] == 32  # the ViT's own input size, not train.image_size
    model = load_model(out)
    inputs = _inputs(3, 32)
    with torch.no_grad():
        logits = model(**inputs)
    assert logits.shape == (3, len(POLICIES))
    assert torch.isfinite(logits).all()


def test_fine_tuned_text_encoder_changes_its_weights(vit_model, tiny_text_encoder):
    out, _ = vit_model
    original = load_file(str(tiny_text_encoder / "model.safetensors"))
    trained = load_file(str(out / MODEL_WEIGHTS))
    name = "embeddings.word_embeddings.weight"
    assert not torch.equal(original[name], trained[f"text_encoder.backbone.{name}"])


def test_frozen_text_encoder_keeps_its_weights(two_epochs, tiny_text_encoder):
    out, _, _ = two_epochs
    original = load_file(str(tiny_text_encoder / "model.safetensors"))
    trained = load_file(str(out / MODEL_WEIGHTS))
    for name, tensor in original.items():
        key = f"text_encoder.backbone.{name}"
        if key in trained:
            assert torch.equal(tensor, trained[key]), name


# Scoring --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("modality", [MODALITY_TEXT, MODALITY_IMAGE])
def test_single_modality_frames_score_with_nan_ablations(two_epochs, tiny_dataset, split_frame, modality):
    out, _, _ = two_epochs
    dataset_dir, _ = tiny_dataset
    rows = split_frame[split_frame[COL_MODALITY] == modality]
    assert len(rows) >= 5
    table = score_frame(out, dataset_dir, rows)
    assert len(table) == len(rows)
    assert table["id"].tolist() == rows["id"].astype(str).tolist()
    for policy in POLICIES:
        scores = table[f"score_{policy}"].to_numpy()
        assert np.isfinite(scores).all() and ((scores > 0) & (scores < 1)).all()
        assert table[f"score_no_image_{policy}"].isna().all()
        assert table[f"score_no_text_{policy}"].isna().all()
        assert set(table[f"label_{policy}"].unique()) <= {0, 1}


def test_mixed_frame_scores_ablations_for_multimodal_rows_only(two_epochs, tiny_dataset, split_frame):
    out, _, _ = two_epochs
    dataset_dir, _ = tiny_dataset
    rows = split_frame[split_frame["split"] == "test"]
    table = score_frame(out, dataset_dir, rows)
    multimodal = (table[COL_MODALITY] == MODALITY_BOTH).to_numpy()
    assert multimodal.any() and (~multimodal).any()
    for policy in POLICIES:
        for removed in ("image", "text"):
            column = table[f"score_no_{removed}_{policy}"].to_numpy()
            assert np.isfinite(column[multimodal]).all()
            assert np.isnan(column[~multimodal]).all()
    # Removing a modality changes the scores (the model uses both).
    assert not np.allclose(table["score_hate"][multimodal], table["score_no_image_hate"][multimodal])

    # Scores do not depend on what else is in the batch.
    alone = score_frame(out, dataset_dir, rows[rows[COL_MODALITY] == MODALITY_TEXT], ablations=False)
    together = table[table[COL_MODALITY] == MODALITY_TEXT]
    assert np.allclose(alone["score_spam"].to_numpy(), together["score_spam"].to_numpy(), atol=1e-5)
    assert not any(c.startswith("score_no_") for c in alone.columns)


def test_unlabelled_rows_score_without_label_columns(two_epochs, tiny_dataset, split_frame):
    out, _, _ = two_epochs
    dataset_dir, _ = tiny_dataset
    rows = split_frame.head(12).drop(columns=POLICIES)
    table = score_frame(out, dataset_dir, rows, ablations=False)
    assert not any(c.startswith("label_") for c in table.columns)
    assert all(f"score_{p}" in table.columns for p in POLICIES)


# Modality dropout -----------------------------------------------------------------------------------------
def test_modality_dropout_never_drops_both():
    n = 20_000
    generator = torch.Generator().manual_seed(0)
    has_text = (torch.rand(n, generator=generator) < 0.8).float()
    has_image = (torch.rand(n, generator=generator) < 0.8).float()
    has_image[has_text == 0] = 1.0  # every item has at least one modality
    for rate in (0.1, 0.3, 0.49):
        text, image = _modality_dropout(has_text, has_image, rate, torch.Generator().manual_seed(1))
        assert ((text + image) >= 1).all(), f"an item lost both modalities at rate {rate}"
        assert (text <= has_text).all() and (image <= has_image).all()  # never adds a modality
        single = (has_text + has_image) == 1
        assert torch.equal(text[single], has_text[single]) and torch.equal(image[single], has_image[single])
        both = (has_text + has_image) == 2
        dropped_text = ((text == 0) & both).float().sum() / both.sum()
        dropped_image = ((image == 0) & both).float().sum() / both.sum()
        assert float(dropped_text) == pytest.approx(rate, abs=0.02)
        assert float(dropped_image) == pytest.approx(rate, abs=0.02)


def test_modality_dropout_rate_zero_is_identity():
    has_text, has_image = torch.ones(10), torch.ones(10)
    text, image = _modality_dropout(has_text, has_image, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(text, has_text) and torch.equal(image, has_image)


@pytest.mark.parametrize("total_steps", [1, 2, 3, 4, 5, 10, 11, 19, 40])
def test_learning_rate_schedule_runs_every_step_of_short_runs(total_steps):
    import torch

    from core.training.trainer import learning_rate_schedule

    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([parameter], lr=0.003)
    schedule = learning_rate_schedule(optimizer, 0.003, total_steps)
    rates = []
    for _ in range(total_steps):
        optimizer.step()
        schedule.step()
        rates.append(schedule.get_last_lr()[0])
    assert all(rate > 0 for rate in rates[:-1]) and max(rates) <= 0.003 + 1e-12


def test_missing_labels_give_zero_gradient():
    torch.manual_seed(0)
    logits = torch.randn(6, 3, requires_grad=True)
    labels = torch.tensor(
        [[1, 0, 1], [0, 0, 0], [1, 1, 0], [0, 1, 1], [1, 0, 0], [0, 0, 1]], dtype=torch.float32
    )
    mask = torch.ones(6, 3)
    mask[1, 0] = mask[3, :] = mask[5, 2] = 0.0
    pos_weight = torch.tensor([2.0, 1.0, 3.0])
    masked_bce_loss(logits, labels, mask, pos_weight).backward()
    grad = logits.grad
    assert torch.all(grad[mask == 0] == 0.0)
    assert torch.all(grad[mask == 1] != 0.0)
    # What a masked cell holds does not matter, and with every cell annotated it is the usual weighted BCE.
    flipped = labels.clone()
    flipped[mask == 0] = 1 - flipped[mask == 0]
    assert masked_bce_loss(logits, flipped, mask, pos_weight) == masked_bce_loss(
        logits, labels, mask, pos_weight
    )
    full = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)(logits, labels)
    assert torch.allclose(masked_bce_loss(logits, labels, torch.ones(6, 3), pos_weight), full)


def test_class_weights_and_validation_auc_count_annotated_rows_only():
    labels = torch.tensor([[1, 0], [0, 0], [0, 1], [0, 0], [1, 0]], dtype=torch.float32)
    mask = torch.tensor([[1, 1], [1, 0], [0, 1], [0, 1], [1, 1]], dtype=torch.float32)
    # hate: 2 positives of 3 annotated -> weight clipped to 1; spam: 1 of 4 -> 3.
    assert positive_weights((labels * mask).sum(0), mask.sum(0), enabled=True).tolist() == [1.0, 3.0]
    scores = np.array([[0.9, 0.2], [0.1, 0.9], [0.2, 0.8], [0.3, 0.1], [0.8, 0.3]])
    # Unmasked, row 1 (spam label 0, score 0.9) would make spam's AUC imperfect; it is not annotated for spam.
    assert macro_roc_auc(labels.numpy(), scores, mask.numpy()) == 1.0
    assert macro_roc_auc(labels.numpy(), scores) < 1.0


def test_training_on_partially_annotated_rows(tmp_path, tiny_dataset, tiny_text_encoder, split_frame):
    dataset_dir, _ = tiny_dataset
    frame = split_frame.copy()
    frame.loc[frame.index % 2 == 0, "hate"] = np.nan  # every other row not annotated for hate
    frame.loc[frame.index % 3 == 0, "spam"] = np.nan
    result = train_model(dataset_dir, frame, _config(tiny_text_encoder, **{"train.epochs": 1}), tmp_path)
    entry = result.history[0]
    assert np.isfinite(entry["train_loss"]) and np.isfinite(entry["validation_loss"])
    assert 0.0 <= entry["validation_macro_roc_auc"] <= 1.0
