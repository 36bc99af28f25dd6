"""Bounded image decoding shared by validation, training and serving.

The pixel count is read from the image header and checked before any pixel is decoded, which defeats
decompression bombs (a tiny PNG that inflates to gigabytes).
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 25_000_000
# The formats decoded (GIF: its first frame). Pillow's other decoders (TIFF, PSD, EPS through Ghostscript, ...)
# are attack surface that uploads to a content platform do not need.
IMAGE_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF", "BMP")


class ImageDecodeError(ValueError):
    """An image could not be used; `reason` is one of `empty`, `too_large`, `too_small`, `undecodable`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = 1) -> Image.Image:
    """Decodes encoded image bytes to an RGB image, refusing oversized or broken input.

    Args:
        data: Encoded image in one of `IMAGE_FORMATS`.
        max_pixels: Largest width*height accepted, checked on the header before decoding.
        min_side: Smallest width or height accepted.

    Returns:
        The decoded image in RGB mode.

    Raises:
        ImageDecodeError: With `reason` naming what was wrong.
    """
    if not data:
        raise ImageDecodeError("empty", "no image bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise ImageDecodeError("too_large", f"{width}x{height} exceeds {max_pixels} pixels")
            if min(width, height) < min_side:
                raise ImageDecodeError("too_small", f"{width}x{height} is below {min_side} pixels per side")
            image.load()
            return image.convert("RGB")
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageDecodeError("too_large", str(error)) from error
    except UnidentifiedImageError:
        raise ImageDecodeError(
            "undecodable", f"not an image in an accepted format ({', '.join(IMAGE_FORMATS)})"
        ) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageDecodeError("undecodable", f"{type(error).__name__}: {error}") from error
