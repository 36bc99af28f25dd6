"""ONNX export of the fusion classifier and the PyTorch-vs-onnxruntime parity check.

The exported graph takes the preprocessed tensors (names from `core.common.constants`) with dynamic
batch and sequence axes and returns per-policy probabilities plus the pooled text and image encoder features
projected to `EMBEDDING_DIM` dims (logged for drift monitoring). Presence flags are shaped (N, 1) because Triton
dims exclude the batch axis and cannot be empty.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from core.common.constants import (
    EMBEDDING_DIM,
    EMBEDDING_PROJECTION_SEED,
    MODEL_INPUTS,
    TENSOR_ATTENTION_MASK,
    TENSOR_HAS_IMAGE,
    TENSOR_HAS_TEXT,
    TENSOR_IMAGE_EMBEDDING,
    TENSOR_INPUT_IDS,
    TENSOR_NGRAM_IDS,
    TENSOR_PIXEL_VALUES,
    TENSOR_PROBABILITIES,
    TENSOR_TEXT_EMBEDDING,
)
from core.export.golden import GoldenSet, abs_difference

INPUT_NAMES: tuple[str, ...] = MODEL_INPUTS
DYNAMIC_AXES: dict[str, dict[int, str]] = {
    TENSOR_INPUT_IDS: {0: "batch", 1: "sequence"},
    TENSOR_ATTENTION_MASK: {0: "batch", 1: "sequence"},
    TENSOR_PIXEL_VALUES: {0: "batch"},
    TENSOR_HAS_TEXT: {0: "batch"},
    TENSOR_HAS_IMAGE: {0: "batch"},
    TENSOR_NGRAM_IDS: {0: "batch", 1: "ngrams"},
    TENSOR_PROBABILITIES: {0: "batch"},
    TENSOR_TEXT_EMBEDDING: {0: "batch"},
    TENSOR_IMAGE_EMBEDDING: {0: "batch"},
}
OUTPUT_NAMES: tuple[str, ...] = (TENSOR_PROBABILITIES, TENSOR_TEXT_EMBEDDING, TENSOR_IMAGE_EMBEDDING)


class ExportError(RuntimeError):
    """The model could not be exported, or the export does not answer like the PyTorch model."""


def embedding_projection(in_dim: int) -> np.ndarray:
    """The fixed (in_dim, EMBEDDING_DIM) Gaussian random projection of pooled encoder features.

    Random projections keep distances between points approximately (Johnson-Lindenstrauss), need no fitting
    and are the same for every model version with the same encoder width, so logged embeddings stay comparable.
    """
    rng = np.random.default_rng(EMBEDDING_PROJECTION_SEED + in_dim)
    return (rng.standard_normal((in_dim, EMBEDDING_DIM)) / np.sqrt(EMBEDDING_DIM)).astype(np.float32)


def probability_model(model):
    """Wraps a `FusionClassifier` as served: (N, 1) presence flags in; calibrated sigmoid probabilities and the
    projected pooled text and image features out."""
    import torch
    from torch import nn

    class ServedModel(nn.Module):
        def __init__(self, classifier: nn.Module) -> None:
            super().__init__()
            self.classifier = classifier
            for name, encoder in (("text", classifier.text_encoder), ("image", classifier.image_encoder)):
                projection = torch.from_numpy(embedding_projection(int(encoder.output_dim)))
                self.register_buffer(f"{name}_projection", projection, persistent=False)

        def forward(self, input_ids, attention_mask, pixel_values, has_text, has_image, ngram_ids):
            text_features = self.classifier.text_encoder(input_ids, attention_mask)
            image_features = self.classifier.image_encoder(pixel_values)
            logits = self.classifier.fuse(
                text_features, image_features, has_text.reshape(-1), has_image.reshape(-1), ngram_ids
            )
            if self.classifier.lexical is None:  # keep the input in the graph: Triton's config declares it
                logits = logits + 0.0 * ngram_ids[:, :1].to(logits.dtype)
            return (
                torch.sigmoid(self.classifier.calibrate(logits)),
                text_features @ self.text_projection,
                image_features @ self.image_projection,
            )

    return ServedModel(model).eval()


def export_onnx(model_dir: str | Path, onnx_path: str | Path, opset: int) -> Path:
    """Exports a saved model to one ONNX file (weights inside), checked by `onnx.checker`.

    The file is written under a temporary name and renamed when complete, so a failed export leaves nothing.

    Args:
        model_dir: A folder written by `save_model`.
        onnx_path: Where to write the `.onnx` file.
        opset: ONNX opset version.

    Returns:
        The path of the exported file.
    """
    import warnings

    import onnx
    import torch

    from core.training.model import load_model

    model = load_model(model_dir)
    wrapper = probability_model(model)
    side = int(model.spec.preprocessing["image_size"])
    example = (
        torch.ones(2, 8, dtype=torch.int64),
        torch.ones(2, 8, dtype=torch.int64),
        torch.zeros(2, 3, side, side, dtype=torch.float32),
        torch.ones(2, 1, dtype=torch.float32),
        torch.ones(2, 1, dtype=torch.float32),
        torch.ones(2, 8, dtype=torch.int64),
    )
    onnx_path = Path(onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    partial = onnx_path.with_name(onnx_path.name + ".partial")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
            torch.onnx.export(
                wrapper,
                example,
                str(partial),
                input_names=list(INPUT_NAMES),
                output_names=list(OUTPUT_NAMES),
                dynamic_axes=DYNAMIC_AXES,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        onnx.checker.check_model(str(partial))
        os.replace(partial, onnx_path)
    except Exception as error:
        partial.unlink(missing_ok=True)
        raise ExportError(f"ONNX export (opset {opset}) failed: {type(error).__name__}: {error}") from error
    return onnx_path


def reference_probabilities(model_dir: str | Path, golden: GoldenSet) -> np.ndarray:
    """PyTorch probabilities of the golden items, preprocessed exactly as in training and evaluation."""
    import torch

    from core.training.model import load_model
    from core.training.preprocessing import Preprocessor

    model = load_model(model_dir)
    tensors = Preprocessor.from_model_dir(model_dir)(golden.texts, golden.images)
    with torch.no_grad():
        logits = model(*(torch.from_numpy(tensors[name]) for name in INPUT_NAMES))
    return torch.sigmoid(logits).numpy().astype(np.float32)


def onnx_session(onnx_path: str | Path, threads: int = 0):
    """An onnxruntime CPU session for the exported file."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


@dataclass
class ParityReport:
    """How far onnxruntime's probabilities are from PyTorch's on the golden batch."""

    tolerance: float
    items: int
    max_abs_diff: float = 0.0
    by_batch_size: dict[str, float] = field(default_factory=dict)
    by_modality: dict[str, float] = field(default_factory=dict)
    worst: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}

    def describe(self) -> str:
        verdict = "<=" if self.passed else ">"
        text = (
            f"max |PyTorch - onnxruntime| = {self.max_abs_diff:.2e} {verdict} tolerance {self.tolerance:.0e} "
            f"on {self.items} golden items at batch sizes {', '.join(self.by_batch_size)}"
        )
        if not self.passed and self.worst:
            text += (
                f" (worst: item {self.worst['id']} ({self.worst['modality']}), policy {self.worst['policy']}, "
                f"batch size {self.worst['batch_size']}, {self.worst['padding']} padding)"
            )
        return text


def check_parity(
    model_dir: str | Path,
    onnx_path: str | Path,
    golden: GoldenSet,
    batch_sizes: list[int],
    tolerance: float,
) -> ParityReport:
    """Compares onnxruntime with PyTorch on the golden items at several batch sizes.

    Each batch is fed both as training pads it (to the longest text in the batch) and as serving pads it (to
    the text limit), so the dynamic sequence axis is exercised too.

    Args:
        model_dir: The saved PyTorch model.
        onnx_path: Its ONNX export.
        golden: Items with `probabilities` from `reference_probabilities`.
        batch_sizes: Batch sizes to try.
        tolerance: Largest allowed absolute probability difference.

    Returns:
        The report; `passed` says whether every difference is within `tolerance`.
    """
    from core.training.preprocessing import Preprocessor

    if golden.probabilities is None:
        raise ValueError("the golden set has no reference probabilities")
    preprocessor = Preprocessor.from_model_dir(model_dir)
    session = onnx_session(onnx_path)
    report = ParityReport(tolerance=tolerance, items=len(golden))
    for batch_size in batch_sizes:
        worst_in_batch_size = 0.0
        for start in range(0, len(golden), batch_size):
            rows = list(range(start, min(start + batch_size, len(golden))))
            texts = [golden.texts[i] for i in rows]
            images = [golden.images[i] for i in rows]
            trained = preprocessor(texts, images)
            for name in (TENSOR_HAS_TEXT, TENSOR_HAS_IMAGE):
                trained[name] = trained[name].reshape(-1, 1)
            feeds = {"training": trained, "serving": preprocessor.serving_inputs(texts, images)}
            for padding, tensors in feeds.items():
                (probabilities,) = session.run([TENSOR_PROBABILITIES], {n: tensors[n] for n in INPUT_NAMES})
                diff = abs_difference(probabilities, golden.probabilities[rows])
                worst_in_batch_size = max(worst_in_batch_size, float(diff.max()))
                for offset, row in enumerate(rows):
                    modality = golden.modalities[row]
                    row_diff = float(diff[offset].max())
                    report.by_modality[modality] = max(report.by_modality.get(modality, 0.0), row_diff)
                    if row_diff > report.max_abs_diff:
                        report.max_abs_diff = row_diff
                        report.worst = {
                            "id": golden.ids[row],
                            "modality": modality,
                            "policy": golden.policies[int(diff[offset].argmax())],
                            "batch_size": batch_size,
                            "padding": padding,
                        }
        report.by_batch_size[str(batch_size)] = worst_in_batch_size
    return report
