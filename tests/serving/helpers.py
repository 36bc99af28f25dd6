"""Shared pieces of the serving tests: the tiny model's settings, encoded test images, the golden items."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.common.constants import DEFAULT_POLICIES, MODALITY_BOTH, MODALITY_IMAGE, MODALITY_TEXT
from core.export.golden import GoldenSet

MODEL_NAME = "content-safety"
MODEL_VERSION = 3
MAX_TEXT_LENGTH = 16  # tokens; small so that truncation is easy to provoke
IMAGE_SIZE = 32
TOLERANCE = 1e-4  # largest |Triton - PyTorch| accepted, as `export.parity_tolerance`
GOLDEN_TEXTS = {
    MODALITY_TEXT: ["buy followers now, cheap!!!", "I will hurt you tomorrow", "a quiet walk in the park"],
    MODALITY_BOTH: [
        "look at this meme",
        "Über straße ça va? 😂",
        "limited offer https://bit.ly/3xYz click",
        "those people should all leave",
    ],
}


def png_bytes(width: int, height: int, seed: int, mode: str = "RGB", image_format: str = "PNG") -> bytes:
    """An encoded image of the given size: a random base colour with noise (PNG by default)."""
    from PIL import Image

    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=channels)
    noise = rng.integers(-40, 41, size=(height, width, channels))
    pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode=mode)
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def golden_items() -> GoldenSet:
    """Text-only, image-only and text+image items, images of several sizes and modes (the golden batch)."""
    images_only = [png_bytes(40, 30, 1), png_bytes(32, 32, 2, "RGBA"), png_bytes(17, 50, 3, "L")]
    images_both = [png_bytes(64, 48, 4), png_bytes(32, 32, 5), png_bytes(9, 9, 6), png_bytes(100, 20, 7)]
    texts: list[str | None] = [*GOLDEN_TEXTS[MODALITY_TEXT], None, None, None, *GOLDEN_TEXTS[MODALITY_BOTH]]
    images: list[bytes | None] = [None, None, None, *images_only, *images_both]
    modalities = [MODALITY_TEXT] * 3 + [MODALITY_IMAGE] * 3 + [MODALITY_BOTH] * 4
    return GoldenSet(
        ids=[f"golden-{i:02d}" for i in range(len(texts))],
        modalities=modalities,
        texts=texts,
        images=images,
        policies=list(DEFAULT_POLICIES),
    )


@dataclass(frozen=True)
class ExportedRepository:
    """A Triton repository exported from a tiny saved model, with what the tests compare against."""

    path: Path
    model_dir: Path
    onnx_path: Path
    golden: GoldenSet  # with PyTorch `probabilities`
    version: int
    policies: list[str]
    thresholds: dict[str, float]

    @property
    def max_text_length(self) -> int:
        return MAX_TEXT_LENGTH


def url_of(server, protocol: str) -> str:
    """The server's endpoint for a protocol ("http" or "grpc")."""
    return server.http_url if protocol == "http" else server.grpc_url
