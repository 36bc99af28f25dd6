"""Bounded image reading and decoding shared by ingestion, validation, training, reference data and serving.

Every image file the project opens goes through `read_image_file`: the path must stay inside its dataset folder
(no absolute path, no `..`, no symlink out), the file must exist and be at most `max_bytes`, and it is read
with that bound, so a file that grows while read cannot exhaust memory. Every image decoded goes through
`decode_image`: only `IMAGE_FORMATS`, and the pixel count is read from the header and checked before any pixel
is decoded, which defeats decompression bombs (a tiny PNG that inflates to gigabytes).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from core.common.constants import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS

DEFAULT_MAX_PIXELS = MAX_IMAGE_PIXELS
DEFAULT_MAX_IMAGE_BYTES = MAX_IMAGE_BYTES
# The formats decoded (GIF: its first frame). Pillow's other decoders (TIFF, PSD, EPS through Ghostscript, ...)
# are attack surface that uploads to a content platform do not need.
IMAGE_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF", "BMP")


class ImageDecodeError(ValueError):
    """An image could not be used; `reason` is one of `empty`, `too_large`, `too_small`, `undecodable`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class ImageFileError(ValueError):
    """An image file could not be read; `reason` is one of `unsafe_path`, `missing_file`, `too_many_bytes`,
    `unreadable`, `problem` says what was wrong without the path."""

    def __init__(self, reason: str, path: str | Path, problem: str) -> None:
        super().__init__(f"{reason}: {path} {problem}")
        self.reason = reason
        self.path = str(path)
        self.problem = problem


def contained_image_path(root: Path, relative: str | Path) -> Path:
    """The file `relative` names inside `root`, resolved.

    Raises:
        ImageFileError: `unsafe_path` for an absolute path, a `..` or a link leading outside `root`;
            `missing_file` when no file is there.
    """
    root = Path(root).resolve()
    candidate = Path(relative)
    if candidate.is_absolute() or ".." in candidate.parts:
        raise ImageFileError("unsafe_path", relative, "is absolute or climbs out of the dataset folder")
    try:
        path = (root / candidate).resolve()
        inside = path.is_relative_to(root)
        is_file = inside and path.is_file()
    except (OSError, ValueError) as error:  # a NUL byte, a name too long for the filesystem, a link loop
        raise ImageFileError(
            "unsafe_path", repr(str(relative))[:200], f"is not a usable path ({error})"
        ) from None
    if not inside:
        raise ImageFileError("unsafe_path", relative, "leads outside the dataset folder")
    if not is_file:
        raise ImageFileError("missing_file", relative, f"is not a file in {root}")
    return path


def read_image_file(
    root: Path | None, relative: str | Path, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES
) -> bytes:
    """The encoded bytes of an image file, contained and bounded.

    Args:
        root: The folder the path must stay inside (None: `relative` is a path the user named themselves).
        relative: The path, relative to `root`.
        max_bytes: Largest file accepted (`validation.image_max_bytes`).

    Raises:
        ImageFileError: Naming what was wrong (see `contained_image_path`; `too_many_bytes`, `unreadable`).
    """
    path = contained_image_path(root, relative) if root is not None else Path(relative)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ImageFileError("too_many_bytes", relative, f"has {size} bytes, more than {max_bytes}")
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise ImageFileError("missing_file", relative, "does not exist") from None
    except OSError as error:
        raise ImageFileError(
            "unreadable", relative, f"cannot be read ({type(error).__name__}: {error})"
        ) from error
    if len(data) > max_bytes:
        raise ImageFileError("too_many_bytes", relative, f"has more than {max_bytes} bytes")
    return data


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
