"""In-process scoring with an exported Triton repository, exactly as the served `content_safety` ensemble scores.

`RepositoryScorer` runs the three steps of the ensemble without a server: the `preprocess/<v>` preprocessor
(`Preprocessor.serving_inputs`: the saved tokenizer and image settings, tokens padded to the text limit),
onnxruntime on `classifier/<v>/model.onnx` (probabilities plus the projected text and image embeddings) and
`postprocess/<v>`'s `apply_thresholds` with that version's thresholds. The monitoring tools use it to score logged or
simulated traffic when no tritonserver runs.

    scorer = RepositoryScorer(Path("model_repository"))       # or champion_scorer("content-safety")
    items = scorer.score(["buy followers now", None], [None, png_bytes])
    items[0].scores["spam"], items[0].action, items[1].image_embedding

Like the served ensemble, an item with neither text nor image (or with an image that cannot be decoded) is
rejected: `score` raises `InvalidItem` naming the item's position in the call, before anything is scored for
that batch. Callers that may hold such items filter them out first (see `scorable`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.common.constants import (
    DEFAULT_MODEL_NAME,
    ONNX_MODEL_FILE,
    PREPROCESSING_FILE,
    SERVING_METADATA_FILE,
    TENSOR_HAS_IMAGE,
    TENSOR_HAS_TEXT,
    TRITON_CLASSIFIER,
    TRITON_ENSEMBLE,
    TRITON_POSTPROCESS,
    TRITON_PREPROCESS,
)
from core.training.preprocessing import InvalidItem
from serving.client import Prediction

DEFAULT_BATCH_SIZE = 32


class RepositoryScoringError(RuntimeError):
    """The folder is not an exported repository that can be scored (the message names what is missing)."""


def scorable(text: str | None, image: bytes | None) -> bool:
    """Whether an item has something to score (non-blank text or non-empty image bytes), as the server checks."""
    return bool(text is not None and text.strip()) or bool(image)


def ensemble_versions(repository: Path) -> list[str]:
    """The numeric version folders of the repository's ensemble, lowest first."""
    ensemble = repository / TRITON_ENSEMBLE
    if not ensemble.is_dir():
        return []
    return sorted((p.name for p in ensemble.iterdir() if p.is_dir() and p.name.isdigit()), key=int)


class RepositoryScorer:
    """Scores (text, image) items in process with one version of an exported Triton repository.

    Args:
        repository: The repository folder (`<repo>/content_safety`, `preprocess`, `classifier`, `postprocess`).
        version: The version folder to use; default the highest version of the `content_safety` ensemble.
        threads: onnxruntime intra-op threads (0: onnxruntime's default).
        classifier_file: The classifier's ONNX file in its version folder (the int8 one of a CPU config, say).

    Raises:
        RepositoryScoringError: When the folder holds no such version or a file the ensemble needs is missing.
    """

    def __init__(
        self,
        repository: str | Path,
        version: str | int | None = None,
        threads: int = 0,
        classifier_file: str = ONNX_MODEL_FILE,
    ) -> None:
        from core.export.onnx_export import onnx_session
        from serving.models.preprocess import load_preprocessor

        self.repository = Path(repository).expanduser().resolve()
        versions = ensemble_versions(self.repository)
        if not versions:
            raise RepositoryScoringError(
                f"{self.repository} is not an exported Triton repository: no {TRITON_ENSEMBLE}/<version>/ folder"
            )
        self.version = str(version) if version is not None else versions[-1]
        if self.version not in versions:
            raise RepositoryScoringError(
                f"{self.repository} has no version {self.version} of {TRITON_ENSEMBLE} (it has {', '.join(versions)})"
            )
        preprocess_dir = self.repository / TRITON_PREPROCESS / self.version
        onnx_path = self.repository / TRITON_CLASSIFIER / self.version / classifier_file
        metadata_path = self.repository / TRITON_POSTPROCESS / self.version / SERVING_METADATA_FILE
        for needed in (preprocess_dir / PREPROCESSING_FILE, onnx_path, metadata_path):
            if not needed.is_file():
                raise RepositoryScoringError(f"{needed} is missing: the repository is incomplete")
        self.preprocessor = load_preprocessor(preprocess_dir)
        self.session = onnx_session(onnx_path, threads)
        self.metadata: dict[str, Any] = json.loads(metadata_path.read_text(encoding="utf-8"))
        self.policies: list[str] = list(self.metadata["policies"])

    @property
    def model_name(self) -> str:
        """The registered model's name (as the served decision reports it)."""
        return str(self.metadata["model_name"])

    @property
    def model_version(self) -> str:
        """The registered model's version (as the served decision reports it)."""
        return str(self.metadata["model_version"])

    def score(
        self,
        texts: Sequence[str | None],
        images: Sequence[bytes | None] | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> list[Prediction]:
        """Scores items in batches of `batch_size`, as the ensemble would answer them.

        Args:
            texts: One text per item (None or blank: no text).
            images: One encoded image per item (None or empty: no image); default no images.
            batch_size: Items per onnxruntime run (results do not depend on it beyond float rounding).

        Returns:
            One `Prediction` per item, in order.

        Raises:
            InvalidItem: An item has neither text nor image, or its image cannot be decoded; `index` is its
                position in `texts`.
            ValueError: `texts` and `images` differ in length, or `batch_size` < 1.
        """
        images = list(images) if images is not None else [None] * len(texts)
        if len(images) != len(texts):
            raise ValueError(f"got {len(texts)} texts and {len(images)} images")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        for index, (text, image) in enumerate(zip(texts, images, strict=True)):
            if not scorable(text, image):
                raise InvalidItem(
                    index, "has neither text nor image (empty text and no image bytes)", "empty"
                )
        scored: list[Prediction] = []
        for start in range(0, len(texts), batch_size):
            scored.extend(
                self._score_batch(
                    list(texts[start : start + batch_size]), images[start : start + batch_size], start
                )
            )
        return scored

    def _score_batch(
        self, texts: list[str | None], images: list[bytes | None], offset: int
    ) -> list[Prediction]:
        from core.export.onnx_export import INPUT_NAMES, OUTPUT_NAMES
        from serving.models.postprocess import apply_thresholds

        try:
            tensors = self.preprocessor.serving_inputs(texts, images)
        except InvalidItem as error:  # renumber the item from its batch position to its position in the call
            problem = str(error).split(": ", 1)[-1]
            raise InvalidItem(offset + error.index, problem, error.reason) from error
        probabilities, text_embeddings, image_embeddings = self.session.run(
            list(OUTPUT_NAMES), {name: tensors[name] for name in INPUT_NAMES}
        )
        scores, flags, decisions = apply_thresholds(probabilities, self.metadata)
        has_text = tensors[TENSOR_HAS_TEXT].reshape(-1) > 0
        has_image = tensors[TENSOR_HAS_IMAGE].reshape(-1) > 0
        items = []
        for row, decision in enumerate(decisions):
            answer = json.loads(decision)
            items.append(
                Prediction(
                    scores={p: float(scores[row, j]) for j, p in enumerate(self.policies)},
                    flags={p: bool(flags[row, j]) for j, p in enumerate(self.policies)},
                    action=str(answer["action"]),
                    text_embedding=np.asarray(text_embeddings[row], dtype=np.float32)
                    if has_text[row]
                    else None,
                    image_embedding=(
                        np.asarray(image_embeddings[row], dtype=np.float32) if has_image[row] else None
                    ),
                    model_name=str(answer["model_name"]),
                    model_version=str(answer["model_version"]),
                    decision=answer,
                )
            )
        return items


def champion_scorer(
    model_name: str = DEFAULT_MODEL_NAME, tracking_uri: str = "", threads: int = 0
) -> RepositoryScorer:
    """A scorer for the registered model's `champion`, whose exported repository is fetched from MLflow.

    Args:
        model_name: The registered model.
        tracking_uri: The MLflow tracking URI ('' = `$MLFLOW_TRACKING_URI` or the local store).
        threads: onnxruntime intra-op threads (0: default).

    Raises:
        serving.store.ServingStoreError: No champion, no exported repository, or the download failed.
    """
    from serving.store import champion_repository

    return RepositoryScorer(champion_repository(model_name, tracking_uri), threads=threads)
