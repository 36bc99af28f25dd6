"""The one preprocessing implementation: raw text and encoded image bytes to model tensors.

Training, evaluation, ONNX export and the Triton python-backend models all call `Preprocessor`, so the
tensors a model sees in production are the ones it was trained on. It depends on numpy, Pillow and
`tokenizers` only (no torch), so a serving environment can import it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from core.common.constants import (
    MAX_TEXT_CHARS,
    TENSOR_ATTENTION_MASK,
    TENSOR_HAS_IMAGE,
    TENSOR_HAS_TEXT,
    TENSOR_INPUT_IDS,
    TENSOR_NGRAM_IDS,
    TENSOR_PIXEL_VALUES,
)
from core.common.images import DEFAULT_MAX_PIXELS, ImageDecodeError, decode_image
from core.training.lexical import ngram_ids, normalize_text

TOKENIZER_FILE = "tokenizer.json"
DEFAULT_MAX_TEXT_BYTES = 1_000_000


@dataclass(frozen=True)
class PreprocessingSpec:
    """Everything needed to turn raw inputs into tensors; saved with the model."""

    max_text_length: int = 64
    image_size: int = 64
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES  # `validation.text_max_bytes`: larger texts are refused
    pad_token_id: int = 0
    normalize_evasions: bool = True  # `lexical.normalize_text` before tokenizing and hashing
    max_text_chars: int = MAX_TEXT_CHARS  # read up to this many characters (0: all), before anything else
    ngram_buckets: int = 2**20  # hash space of the lexical branch (`train.lexical_buckets`)
    max_ngrams: int = 4096  # distinct n-grams kept per text; served batches are padded to it
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (3, 5)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessingSpec:
        data = dict(data)
        # Saved before the lexical branch existed: neither normalisation nor n-grams, as it was trained.
        data.setdefault("normalize_evasions", False)
        data.setdefault("ngram_buckets", 0)
        data.setdefault("max_text_chars", 0)  # older models read whole texts
        for key in ("image_mean", "image_std", "word_ngrams", "char_ngrams"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


class Preprocessor:
    """Turns texts and encoded images into the model's named input arrays.

    Args:
        spec: Sizes and normalisation.
        tokenizer_file: A Hugging Face `tokenizer.json` (fast tokenizer) of the text encoder.
    """

    def __init__(self, spec: PreprocessingSpec, tokenizer_file: str | Path) -> None:
        from tokenizers import Tokenizer

        self.spec = spec
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=spec.max_text_length)
        self._mean = np.asarray(spec.image_mean, dtype=np.float32).reshape(3, 1, 1)
        self._std = np.asarray(spec.image_std, dtype=np.float32).reshape(3, 1, 1)

    @classmethod
    def from_model_dir(cls, model_dir: str | Path) -> Preprocessor:
        """Builds the preprocessor saved inside a model folder."""
        from core.common.constants import MODEL_SPEC, TEXT_ENCODER_DIR

        model_dir = Path(model_dir)
        spec = json.loads((model_dir / MODEL_SPEC).read_text(encoding="utf-8"))
        return cls(
            PreprocessingSpec.from_dict(spec["preprocessing"]), model_dir / TEXT_ENCODER_DIR / TOKENIZER_FILE
        )

    # Text -------------------------------------------------------------------------------------------------
    def encode_texts(
        self, texts: Sequence[str | None], pad_to_length: int | None = None
    ) -> dict[str, np.ndarray]:
        """Tokenizes texts (None or blank means no text) and hashes their n-grams, padding to the longest in
        the batch, or to `pad_to_length` tokens and `max_ngrams` n-grams (serving).

        Texts longer than `max_text_length` tokens are truncated; n-gram id 0 is padding.
        """
        present = [text is not None and text.strip() != "" for text in texts]
        kept = [self.clean(text) if ok else "" for text, ok in zip(texts, present, strict=True)]
        encodings = self.tokenizer.encode_batch(kept)
        length = pad_to_length or max((len(e.ids) for e in encodings), default=2)
        input_ids = np.full((len(texts), length), self.spec.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((len(texts), length), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            input_ids[row, : len(encoding.ids)] = encoding.ids
            attention_mask[row, : len(encoding.ids)] = 1
        grams = [self.ngrams(text) for text in kept]
        width = self.spec.max_ngrams if pad_to_length else max((len(g) for g in grams), default=1)
        ngram_matrix = np.zeros((len(texts), max(width, 1)), dtype=np.int64)
        for row, ids in enumerate(grams):
            ngram_matrix[row, : len(ids)] = ids
        return {
            TENSOR_INPUT_IDS: input_ids,
            TENSOR_ATTENTION_MASK: attention_mask,
            TENSOR_HAS_TEXT: np.asarray(present, dtype=np.float32),
            TENSOR_NGRAM_IDS: ngram_matrix,
        }

    def clean(self, text: str) -> str:
        """The text both the tokenizer and the n-gram hashing read: its first `max_text_chars` characters,
        evasions normalised when the spec says."""
        if self.spec.max_text_chars > 0:
            text = text[: self.spec.max_text_chars]
        return normalize_text(text) if self.spec.normalize_evasions else text

    def ngrams(self, cleaned: str) -> np.ndarray:
        """Distinct hashed n-gram ids of an already `clean`ed text (empty when the spec has no buckets)."""
        if self.spec.ngram_buckets <= 0:
            return np.zeros(0, dtype=np.int64)
        return ngram_ids(
            cleaned,
            self.spec.ngram_buckets,
            self.spec.max_ngrams,
            self.spec.word_ngrams,
            self.spec.char_ngrams,
            normalize=False,
        )

    # Images -----------------------------------------------------------------------------------------------
    def image_to_uint8(self, data: bytes) -> np.ndarray:
        """Decodes (bounded) and resizes one encoded image to a `uint8` array of shape (3, S, S)."""
        image = decode_image(data, max_pixels=self.spec.max_image_pixels)
        side = self.spec.image_size
        if image.size != (side, side):
            image = image.resize((side, side), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """Scales `uint8` pixels (..., 3, S, S) to normalised `float32`."""
        return ((pixels.astype(np.float32) / 255.0) - self._mean) / self._std

    def images_to_uint8(self, images: Sequence[bytes | None]) -> tuple[np.ndarray, np.ndarray]:
        """Decodes a batch to `uint8` pixels (N, 3, S, S) and presence flags (N,); None or empty bytes means no
        image (zeros, flag 0).

        Raises:
            InvalidItem: Naming the first item whose image is undecodable or too large (`reason` from
                `ImageDecodeError`).
        """
        side = self.spec.image_size
        pixels = np.zeros((len(images), 3, side, side), dtype=np.uint8)
        present = np.zeros(len(images), dtype=np.float32)
        for row, data in enumerate(images):
            if data:
                try:
                    pixels[row] = self.image_to_uint8(data)
                except ImageDecodeError as error:
                    raise InvalidItem(row, f"image rejected: {error}", reason=error.reason) from error
                present[row] = 1.0
        return pixels, present

    def encode_images(self, images: Sequence[bytes | None]) -> dict[str, np.ndarray]:
        """Decodes and normalises encoded images; None or empty bytes means no image (zeros)."""
        pixels, present = self.images_to_uint8(images)
        values = self.normalize(pixels) * present.reshape(-1, 1, 1, 1)
        return {TENSOR_PIXEL_VALUES: values.astype(np.float32), TENSOR_HAS_IMAGE: present}

    def __call__(self, texts: Sequence[str | None], images: Sequence[bytes | None]) -> dict[str, np.ndarray]:
        """Returns all model inputs for a batch of (text, image) pairs."""
        if len(texts) != len(images):
            raise ValueError(f"got {len(texts)} texts and {len(images)} images")
        return {**self.encode_texts(texts), **self.encode_images(images)}

    # Serving ----------------------------------------------------------------------------------------------
    def serving_inputs(
        self, texts: Sequence[str | None], images: Sequence[bytes | None]
    ) -> dict[str, np.ndarray]:
        """The classifier's inputs as served: what `__call__` returns, with token arrays padded to
        `max_text_length` (equal shapes let Triton's dynamic batcher join requests) and the presence flags
        shaped (N, 1) (Triton dims exclude the batch axis and cannot be empty).

        Raises:
            InvalidItem: When an item has neither text nor image, a text over `max_text_bytes`, or an image
                that cannot be used.
        """
        if len(texts) != len(images):
            raise ValueError(f"got {len(texts)} texts and {len(images)} images")
        for index, (text, image) in enumerate(zip(texts, images, strict=True)):
            if (text is None or text.strip() == "") and not image:
                raise InvalidItem(
                    index, "has neither text nor image (empty text and no image bytes)", "empty"
                )
            size = len(text.encode("utf-8")) if text is not None else 0
            if size > self.spec.max_text_bytes:
                raise InvalidItem(
                    index,
                    f"text of {size} bytes exceeds the limit of {self.spec.max_text_bytes}",
                    "too_large",
                )
        image_tensors = self.encode_images(images)
        tensors = {**self.encode_texts(texts, pad_to_length=self.spec.max_text_length), **image_tensors}
        for name in (TENSOR_HAS_TEXT, TENSOR_HAS_IMAGE):
            tensors[name] = tensors[name].reshape(-1, 1)
        return tensors


class InvalidItem(ValueError):
    """One item of a serving request cannot be scored; `index` is its position in the request."""

    def __init__(self, index: int, problem: str, reason: str = "invalid") -> None:
        super().__init__(f"item {index}: {problem}")
        self.index = index
        self.reason = reason
