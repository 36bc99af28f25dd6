"""The inference log: one versioned record per served item, written by day, read back as a flat table.

Record (JSON object, one per line; schema version `LOG_SCHEMA_VERSION`):

| field | type | meaning |
|---|---|---|
| `schema_version` | int | this schema's version; readers refuse other versions |
| `request_id`, `item` | str, int | the request and the item's position in it (together: the item's key) |
| `timestamp` | str | ISO 8601 UTC time the answer came back |
| `model_name`, `model_version` | str | the served model (registered name and version) |
| `text_present` | bool | the item had text |
| `text_length`, `text_words` | int | characters and whitespace-separated words (0 without text) |
| `text_non_letter_share`, `text_upper_share` | float | share of non-letter characters; of upper-case letters |
| `text_url_count`, `text_emoji_count` | int | URLs and emoji in the text (descriptors read its first `MAX_TEXT_CHARS`, 20,000, characters) |
| `text_language` | str or null | `detect_language` of the text (`en`, `es`, `fr`, `de`, `unknown`) |
| `text_sha256` | str or null | SHA-256 of the UTF-8 text; the raw text itself is not logged by default |
| `text` | str or null | the raw text's first `MAX_TEXT_CHARS` characters, only when the logger is told to keep it |
| `image_present` | bool | the item had an image |
| `image_width`, `image_height` | int or null | pixel size from the image header |
| `image_format` | str or null | `PNG`, `JPEG`, ... from the header (`unreadable`: not an image; `too_large`: a bomb) |
| `image_bytes`, `image_sha256` | int, str or null | encoded size and hash; image bytes are never logged |
| `text_embedding`, `image_embedding` | list[float] or null | the model's pooled encoder features, projected to `EMBEDDING_DIM` dims |
| `scores`, `flags` | {policy: float}, {policy: bool} | per-policy probability and whether it crossed the threshold |
| `action` | str | the served decision (`allow`, `review`, `block`, ...) |
| `latency_ms` | float or null | the request's round trip |
| `error` | str or null | set (and scores absent) when the request failed |
| `labels` | {policy: 0/1} or null | the moderator's delayed label, when it arrived |

Files: `<root>/date=YYYY-MM-DD/<name>.jsonl` (one partition per UTC day of `timestamp`; a line longer than
`MAX_LOG_LINE_BYTES`, 1 MiB, is malformed). Delayed labels may also
arrive later as `<root>/labels/*.jsonl` lines `{"request_id", "item", "labels": {...}}`, joined on read.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from datetime import UTC, datetime
from typing import Any

from core.common.constants import EMBEDDING_DIM, MAX_TEXT_CHARS
from core.common.images import IMAGE_FORMATS

LOG_SCHEMA_VERSION = 1
PARTITION_PREFIX = "date="
LABELS_DIR = "labels"
MAX_LOG_LINE_BYTES = 1 << 20  # a longer line is skipped and counted as malformed (a record is a few kB)
LANGUAGE_UNKNOWN = "unknown"
IMAGE_FORMAT_UNREADABLE = "unreadable"
IMAGE_FORMAT_TOO_LARGE = "too_large"

# Flat table columns (`read_logs` output) ------------------------------------------------------------------
TEXT_NUMERIC_COLUMNS: tuple[str, ...] = (
    "text_length",
    "text_words",
    "text_non_letter_share",
    "text_upper_share",
    "text_url_count",
    "text_emoji_count",
)
IMAGE_NUMERIC_COLUMNS: tuple[str, ...] = ("image_width", "image_height", "image_bytes")
CATEGORICAL_COLUMNS: tuple[str, ...] = (
    "text_present",
    "image_present",
    "text_language",
    "image_format",
)
TEXT_EMBEDDING_PREFIX = "text_embedding_"
IMAGE_EMBEDDING_PREFIX = "image_embedding_"
SCORE_PREFIX = "score_"
FLAG_PREFIX = "flag_"
LABEL_PREFIX = "label_"
META_COLUMNS: tuple[str, ...] = (
    "request_id",
    "item",
    "timestamp",
    "model_name",
    "model_version",
    "text_sha256",
    "action",
    "latency_ms",
)


def embedding_columns(prefix: str) -> list[str]:
    """`prefix0` ... `prefix{EMBEDDING_DIM-1}`: one column per embedding dimension (what Evidently expects)."""
    return [f"{prefix}{index}" for index in range(EMBEDDING_DIM)]


class LogSchemaError(ValueError):
    """A log file is not in this schema (wrong version or missing fields)."""


# Text features ----------------------------------------------------------------------------------------------
# URLs are counted per whitespace-separated token with two patterns of fixed length, so that counting is linear
# in the text (a backtracking `[\w-]+\.(com|...)` took 7.5 s on 32,000 characters of "a-a-a-...").
_URL_START = re.compile(r"https?://|www\.", re.IGNORECASE)
_URL_DOMAIN = re.compile(r"[\w-]\.(?:com|ly|co|gl|io|net|org)/", re.IGNORECASE)
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
# The most frequent function words of the languages the embedded data uses; enough to tell them apart.
_STOPWORDS: dict[str, frozenset[str]] = {
    "en": frozenset(
        [
            "the",
            "a",
            "an",
            "is",
            "are",
            "was",
            "who",
            "what",
            "this",
            "that",
            "they",
            "some",
            "just",
            "in",
            "on",
            "of",
            "and",
            "to",
            "it",
            "me",
            "you",
            "new",
        ]
    ),
    "es": frozenset(
        [
            "el",
            "la",
            "los",
            "las",
            "es",
            "son",
            "que",
            "quién",
            "esto",
            "lo",
            "por",
            "un",
            "una",
            "y",
            "de",
            "en",
            "del",
            "se",
            "nunca",
            "me",
            "nuevos",
        ]
    ),
    "fr": frozenset(
        [
            "le",
            "la",
            "les",
            "est",
            "sont",
            "qui",
            "ce",
            "ça",
            "que",
            "un",
            "une",
            "et",
            "de",
            "du",
            "des",
            "en",
            "ne",
            "pas",
            "vient",
            "voilà",
            "nouveaux",
        ]
    ),
    "de": frozenset(
        [
            "der",
            "die",
            "das",
            "ist",
            "sind",
            "wer",
            "was",
            "es",
            "und",
            "ein",
            "eine",
            "zu",
            "nicht",
            "mal",
            "da",
            "sie",
            "gerade",
            "haben",
            "neuen",
        ]
    ),
}


def _is_emoji(char: str) -> bool:
    return unicodedata.category(char) == "So" or 0x1F000 <= ord(char) <= 0x1FAFF


def detect_language(text: str | None) -> str | None:
    """The language whose function words the text uses most (`unknown` when none match; None without text)."""
    if not text:
        return None
    words = [word.lower() for word in _WORD.findall(text)]
    counts = {language: sum(word in stop for word in words) for language, stop in _STOPWORDS.items()}
    best = max(counts, key=lambda language: counts[language])
    return best if counts[best] > 0 else LANGUAGE_UNKNOWN


def count_urls(text: str) -> int:
    """Whitespace-separated tokens that hold a URL (`http(s)://`, `www.`, or a short-link domain and a path)."""
    return sum(1 for token in text.split() if _URL_START.search(token) or _URL_DOMAIN.search(token))


def text_features(text: str | None) -> dict[str, Any]:
    """The text fields of a record (descriptors, language, hash), computed from the raw text: length and hash of
    the whole text, the descriptors of its first `MAX_TEXT_CHARS` characters (linear time, bounded work)."""
    if not text:
        return {
            "text_present": False,
            "text_length": 0,
            "text_words": 0,
            "text_non_letter_share": 0.0,
            "text_upper_share": 0.0,
            "text_url_count": 0,
            "text_emoji_count": 0,
            "text_language": None,
            "text_sha256": None,
        }
    length, digest = len(text), hashlib.sha256(text.encode("utf-8")).hexdigest()
    text = text[:MAX_TEXT_CHARS]
    letters = [char for char in text if char.isalpha()]
    visible = [char for char in text if not char.isspace()]
    return {
        "text_present": True,
        "text_length": length,
        "text_words": len(text.split()),
        "text_non_letter_share": round(1 - len(letters) / len(visible), 4) if visible else 0.0,
        "text_upper_share": round(sum(c.isupper() for c in letters) / len(letters), 4) if letters else 0.0,
        "text_url_count": count_urls(text),
        "text_emoji_count": sum(_is_emoji(char) for char in text),
        "text_language": detect_language(text),
        "text_sha256": digest,
    }


def image_features(image: bytes | None) -> dict[str, Any]:
    """The image fields of a record, read from the header only (no pixel decoding, so no decompression bomb)."""
    if not image:
        return {
            "image_present": False,
            "image_width": None,
            "image_height": None,
            "image_format": None,
            "image_bytes": 0,
            "image_sha256": None,
        }
    import io

    from PIL import Image, UnidentifiedImageError

    width = height = None
    try:
        # Lazy: reads the header, not the pixels; the formats the server decodes, others are unreadable.
        with Image.open(io.BytesIO(image), formats=IMAGE_FORMATS) as opened:
            width, height = opened.size
            image_format = opened.format or IMAGE_FORMAT_UNREADABLE
    except Image.DecompressionBombError:
        image_format = IMAGE_FORMAT_TOO_LARGE  # the server rejects these too; the size stays unknown
    except (UnidentifiedImageError, OSError, ValueError):
        image_format = IMAGE_FORMAT_UNREADABLE
    return {
        "image_present": True,
        "image_width": width,
        "image_height": height,
        "image_format": image_format,
        "image_bytes": len(image),
        "image_sha256": hashlib.sha256(image).hexdigest(),
    }


def make_record(
    *,
    request_id: str,
    item: int,
    timestamp: datetime | str,
    model_name: str,
    model_version: str,
    text: str | None,
    image: bytes | None,
    scores: dict[str, float] | None,
    flags: dict[str, bool] | None,
    action: str | None,
    text_embedding: Any = None,
    image_embedding: Any = None,
    latency_ms: float | None = None,
    error: str | None = None,
    labels: dict[str, int] | None = None,
    keep_text: bool = False,
) -> dict[str, Any]:
    """One log record in this schema, from a served (or in-process scored) item.

    Args:
        request_id: The request's id.
        item: The item's position in the request.
        timestamp: When the answer came back (a timezone-aware datetime or an ISO 8601 string).
        model_name: Registered model name.
        model_version: Registered model version that answered.
        text: The item's text (hashed and described; kept only with `keep_text`).
        image: The item's encoded image (described from its header and hashed; never kept).
        scores: Per-policy probabilities (None for a failed request).
        flags: Per-policy flags (None for a failed request).
        action: The served decision (None for a failed request).
        text_embedding: Projected pooled text features (`EMBEDDING_DIM` floats) or None.
        image_embedding: Projected pooled image features or None.
        latency_ms: The request's round trip.
        error: Why the request failed, if it did.
        labels: A moderator's per-policy labels, if known.
        keep_text: Log the raw text too, its first `MAX_TEXT_CHARS` characters (off by default: a hash and
            descriptors are enough for drift).

    Returns:
        A JSON-serialisable dict.
    """
    stamp = timestamp.isoformat() if isinstance(timestamp, datetime) else str(timestamp)
    return {
        "schema_version": LOG_SCHEMA_VERSION,
        "request_id": request_id,
        "item": int(item),
        "timestamp": stamp,
        "model_name": model_name,
        "model_version": str(model_version),
        **text_features(text),
        "text": text[:MAX_TEXT_CHARS] if keep_text and text else None,
        **image_features(image),
        "text_embedding": _embedding(text_embedding) if text else None,
        "image_embedding": _embedding(image_embedding) if image else None,
        "scores": {policy: round(float(value), 6) for policy, value in scores.items()} if scores else None,
        "flags": {policy: bool(value) for policy, value in flags.items()} if flags else None,
        "action": action,
        "latency_ms": None if latency_ms is None else round(float(latency_ms), 3),
        "error": error,
        "labels": {policy: int(value) for policy, value in labels.items()} if labels else None,
    }


def _embedding(values: Any) -> list[float] | None:
    if values is None:
        return None
    floats = [round(float(value), 5) for value in values]
    if len(floats) != EMBEDDING_DIM:
        raise LogSchemaError(f"an embedding has {len(floats)} dimensions, the schema says {EMBEDDING_DIM}")
    return floats


def partition_name(timestamp: str) -> str:
    """The day partition folder (`date=YYYY-MM-DD`, the UTC day) of an ISO 8601 timestamp.

    Raises:
        ValueError: When `timestamp` is not ISO 8601 (the folder name is built from the parsed date only, so
            no string from a record or dataset ever becomes part of a path).
    """
    moment = datetime.fromisoformat(timestamp)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return f"{PARTITION_PREFIX}{moment.date().isoformat()}"
