"""`RepositoryScorer`: in-process scores and embeddings equal the PyTorch model's, per modality."""

from __future__ import annotations

import numpy as np
import pytest

from core.common.constants import EMBEDDING_DIM, MODALITY_BOTH, MODALITY_IMAGE, MODALITY_TEXT
from core.training.preprocessing import InvalidItem
from serving.in_process import RepositoryScorer, RepositoryScoringError, champion_scorer, ensemble_versions
from tests.serving.helpers import MODEL_NAME, png_bytes

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def scorer(exported_repository) -> RepositoryScorer:
    return RepositoryScorer(exported_repository.path, threads=1)


def _pytorch_reference(exported_repository, texts, images) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities and projected embeddings of the saved PyTorch model, fed the served tensors."""
    import torch

    from core.export.onnx_export import INPUT_NAMES, probability_model
    from core.training.model import load_model
    from core.training.preprocessing import Preprocessor

    served = probability_model(load_model(exported_repository.model_dir))
    tensors = Preprocessor.from_model_dir(exported_repository.model_dir).serving_inputs(texts, images)
    with torch.no_grad():
        outputs = served(*(torch.from_numpy(tensors[name]) for name in INPUT_NAMES))
    return tuple(output.numpy() for output in outputs)


@pytest.mark.parametrize("batch_size", [1, 4, 32])
def test_scores_and_embeddings_equal_pytorch_for_every_modality(scorer, exported_repository, batch_size):
    golden = exported_repository.golden
    scored = scorer.score(golden.texts, golden.images, batch_size=batch_size)
    probabilities, text_embeddings, image_embeddings = _pytorch_reference(
        exported_repository, golden.texts, golden.images
    )
    policies = exported_repository.policies
    assert {golden.modalities[row] for row in range(len(golden))} == {
        MODALITY_TEXT,
        MODALITY_IMAGE,
        MODALITY_BOTH,
    }
    for row, item in enumerate(scored):
        modality = golden.modalities[row]
        scores = np.asarray([item.scores[p] for p in policies])
        assert list(item.scores) == policies
        np.testing.assert_allclose(
            scores, probabilities[row], atol=TOLERANCE, err_msg=f"{modality} row {row}"
        )
        # and the PyTorch reference of the export (training-time padding)
        np.testing.assert_allclose(scores, golden.probabilities[row], atol=TOLERANCE)
        assert item.flags == {p: item.scores[p] >= exported_repository.thresholds[p] for p in policies}
        assert item.action == ("flag" if any(item.flags.values()) else "allow")
        assert (item.model_name, item.model_version) == (MODEL_NAME, str(exported_repository.version))
        if modality == MODALITY_IMAGE:
            assert item.text_embedding is None
        else:
            assert item.text_embedding.shape == (EMBEDDING_DIM,)
            np.testing.assert_allclose(item.text_embedding, text_embeddings[row], atol=TOLERANCE)
        if modality == MODALITY_TEXT:
            assert item.image_embedding is None
        else:
            assert item.image_embedding.shape == (EMBEDDING_DIM,)
            np.testing.assert_allclose(item.image_embedding, image_embeddings[row], atol=TOLERANCE)


def test_item_without_text_or_image_or_with_a_broken_image_is_rejected_at_its_position(scorer):
    with pytest.raises(InvalidItem, match="item 2: has neither text nor image") as caught:
        scorer.score(["fine", None, "   "], [None, png_bytes(8, 8, 1), None], batch_size=1)
    assert caught.value.index == 2 and caught.value.reason == "empty"
    with pytest.raises(InvalidItem, match="item 3: image rejected") as caught:
        scorer.score(["a", "b", "c", "d"], [None, None, None, b"not an image"], batch_size=2)
    assert caught.value.index == 3
    with pytest.raises(ValueError, match="2 texts and 1 images"):
        scorer.score(["a", "b"], [None])


def test_version_defaults_to_the_highest_and_a_missing_version_or_folder_fails(tmp_path, exported_repository):
    for name in ("2", "10", "9", "notes"):
        (tmp_path / "content_safety" / name).mkdir(parents=True)
    assert ensemble_versions(tmp_path) == ["2", "9", "10"]
    with pytest.raises(RepositoryScoringError, match="preprocessing.json is missing"):
        RepositoryScorer(tmp_path)
    with pytest.raises(RepositoryScoringError, match="no version 7 .*has 3"):
        RepositoryScorer(exported_repository.path, version=7)
    with pytest.raises(RepositoryScoringError, match="not an exported Triton repository"):
        RepositoryScorer(tmp_path / "content_safety")
    assert RepositoryScorer(exported_repository.path).version == str(exported_repository.version)


def test_champion_scorer_scores_with_the_champion_repository(monkeypatch, exported_repository):
    import serving.store

    calls = []

    def fake_champion_repository(model_name, tracking_uri):
        calls.append((model_name, tracking_uri))
        return exported_repository.path

    monkeypatch.setattr(serving.store, "champion_repository", fake_champion_repository)
    scorer = champion_scorer("my-model", "sqlite:///x.db")
    assert calls == [("my-model", "sqlite:///x.db")]
    assert scorer.repository == exported_repository.path.resolve()
