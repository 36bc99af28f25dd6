"""Triton python-backend model `preprocess`: raw `TEXT` and encoded `IMAGE` bytes to classifier tensors.

Export copies this file into `preprocess/<version>/model.py` together with the training code it imports
(`core/training/preprocessing.py` and the helpers it imports, byte for byte) and the model's tokenizer and
preprocessing settings, so the served model sees exactly the tensors it was trained on. It runs in the serving
environment (numpy<2, tokenizers, Pillow), not in the training one.

Per request: an item with neither text nor image, text that is not UTF-8, or an image that is undecodable or
over the pixel limit (checked on the header, before decoding) fails that request only, with a message naming
the item. Texts longer than the model's token limit are truncated to it, as in training.
"""

from __future__ import annotations

import json
from pathlib import Path

from core.common.constants import (
    MODEL_INPUTS,
    PREPROCESSING_FILE,
    TRITON_INPUT_IMAGE,
    TRITON_INPUT_TEXT,
)
from core.training.preprocessing import TOKENIZER_FILE, InvalidItem, PreprocessingSpec, Preprocessor

OUTPUT_NAMES = MODEL_INPUTS


def load_preprocessor(version_dir: str | Path) -> Preprocessor:
    """The preprocessor saved in a `preprocess/<version>` folder."""
    version_dir = Path(version_dir)
    spec = json.loads((version_dir / PREPROCESSING_FILE).read_text(encoding="utf-8"))
    return Preprocessor(PreprocessingSpec.from_dict(spec), version_dir / TOKENIZER_FILE)


def decode_request(texts, images) -> tuple[list[str | None], list[bytes | None]]:
    """Turns Triton BYTES arrays of shape (N, 1) into Python texts and image bytes.

    Raises:
        InvalidItem: When a text is not valid UTF-8 or the two inputs hold different numbers of items.
    """
    raw_texts = [value for value in texts.reshape(-1)]
    raw_images = [value for value in images.reshape(-1)]
    if len(raw_texts) != len(raw_images):
        raise InvalidItem(0, f"{len(raw_texts)} texts but {len(raw_images)} images in one request")
    decoded: list[str | None] = []
    for index, value in enumerate(raw_texts):
        try:
            text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        except UnicodeDecodeError:
            raise InvalidItem(index, "text is not valid UTF-8", "bad_text") from None
        decoded.append(text if text.strip() else None)
    return decoded, [bytes(value) if value else None for value in raw_images]


class TritonPythonModel:
    """Triton's python backend calls `initialize` once per instance and `execute` per batch of requests."""

    def initialize(self, args: dict) -> None:
        self.preprocessor = load_preprocessor(Path(args["model_repository"]) / args["model_version"])

    def execute(self, requests: list) -> list:
        import triton_python_backend_utils as pb_utils

        responses = []
        for request in requests:
            try:
                texts, images = decode_request(
                    pb_utils.get_input_tensor_by_name(request, TRITON_INPUT_TEXT).as_numpy(),
                    pb_utils.get_input_tensor_by_name(request, TRITON_INPUT_IMAGE).as_numpy(),
                )
                tensors = self.preprocessor.serving_inputs(texts, images)
            except InvalidItem as error:
                # INVALID_ARG: HTTP 400 / gRPC INVALID_ARGUMENT, so clients know not to retry.
                failure = pb_utils.TritonError(f"bad request: {error}", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=failure))
                continue
            except Exception as error:  # noqa: BLE001 (a decoder bug on one request must not fail its batch)
                failure = pb_utils.TritonError(
                    f"preprocessing failed: {type(error).__name__}: {error}", pb_utils.TritonError.INTERNAL
                )
                responses.append(pb_utils.InferenceResponse(error=failure))
                continue
            outputs = [pb_utils.Tensor(name, tensors[name]) for name in OUTPUT_NAMES]
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses
