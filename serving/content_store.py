"""The content store: the raw text and image bytes of served items, kept for human review.

The inference log keeps descriptors and hashes, never image bytes and (by default) not the raw text, but a
moderator reviewing an item needs to see it. The serving client (`ContentSafetyClient(content_store=...)`) writes
each item of a successful request here, keyed by the same `(request_id, item)` as its inference-log record; the
review queue (`tns review sample --content STORE`) reads it back to build labeling tasks.

    store = open_content_store("/var/lib/tns/content")          # a local folder or file:// URI
    store.put(request_id, 0, text="buy followers", image=png_bytes)
    store.get(request_id, 0).text

**Access.** The store holds raw user content, including content that violates the policies. Only the moderators'
review tool (the process that runs `tns review sample`) may read it: give its folder to that service account
alone (mode 0700 folders, 0600 files are what this module creates) and never serve it, index it or copy it into
logs, reports or pipelines' artifacts. Everything else in the monitoring loop works on the inference log.

**Retention.** Content is kept `retention_days` (default 30 days) after it was stored: `LocalContentStore.purge`
(`tns review purge --content STORE`, run daily by a scheduler) deletes older items. Reading does not check the
age; only purging deletes.

**Production.** A deployment points the client at its platform's own store (an object store with its access
policy, encryption and lifecycle rules): implement `ContentStore` (`put`, `get`) and pass that object. Only local
folders are built in; `open_content_store` refuses other URI schemes with a message saying so.

Local layout: `<root>/<aa>/<bb>/<key>.json` (a small record: request id, item, time, what is present) beside
`<key>.txt` (UTF-8 text) and `<key>.bin` (the encoded image as received), where `key` is the SHA-256 of the
request id and item: request ids come from clients and are never used as paths. Every file is written under a
temporary name and renamed, data files before the record, so a reader never sees half an item. Texts are kept
up to `MAX_TEXT_CHARS` characters (what the server reads; longer texts are cut and counted), images up to
`MAX_IMAGE_BYTES` (larger images are not stored, and counted); neither case raises into the serving path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import unquote, urlparse

from core.common.constants import MAX_IMAGE_BYTES, MAX_TEXT_CHARS

__all__ = [
    "DEFAULT_RETENTION_DAYS",
    "ContentStore",
    "LocalContentStore",
    "StoredContent",
    "open_content_store",
]

DEFAULT_RETENTION_DAYS = 30.0
RECORD_VERSION = 1
RECORD_SUFFIX = ".json"
TEXT_SUFFIX = ".txt"
IMAGE_SUFFIX = ".bin"
PARTIAL_SUFFIX = ".partial"
MAX_RECORD_BYTES = 1 << 16  # a record is a few hundred bytes; a larger file is not one of ours

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredContent:
    """One stored item.

    Attributes:
        request_id: The request's id (as in the inference log).
        item: The item's position in the request.
        text: The text (its first `MAX_TEXT_CHARS` characters), or None.
        image: The encoded image bytes as received, or None (also when it was too large to store).
        stored_at: When it was stored (ISO-8601 UTC).
    """

    request_id: str
    item: int
    text: str | None
    image: bytes | None
    stored_at: str


@runtime_checkable
class ContentStore(Protocol):
    """Where served content is kept for review. A deployment implements it on its platform's store."""

    def put(
        self,
        request_id: str,
        item: int,
        text: str | None,
        image: bytes | None,
        timestamp: datetime | None = None,
    ) -> None:
        """Stores an item's content (`timestamp`: when it was served, default now)."""
        ...

    def get(self, request_id: str, item: int) -> StoredContent | None:
        """The stored content of an item, or None when none is stored."""
        ...


def content_key(request_id: str, item: int) -> str:
    """The file-name key of an item: the SHA-256 of its request id and position (never the raw id)."""
    return hashlib.sha256(f"{request_id}\x1f{int(item)}".encode("utf-8", "surrogatepass")).hexdigest()


def _utc(moment: datetime | None) -> datetime:
    if moment is None:
        return datetime.now(UTC)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class LocalContentStore:
    """A `ContentStore` on a local folder (see the module docstring for layout, access and retention).

    Thread-safe; several processes may write to one folder (each file is renamed into place).

    Args:
        root: The folder (created, mode 0700).
        retention_days: How long items are kept before `purge` deletes them.

    Attributes:
        counts: `stored` items, `truncated_texts` (cut to `MAX_TEXT_CHARS`) and `skipped_images` (over
            `MAX_IMAGE_BYTES`, not stored), since this object was made.
    """

    def __init__(self, root: str | Path, retention_days: float = DEFAULT_RETENTION_DAYS) -> None:
        if not retention_days > 0:
            raise ValueError(f"retention_days must be positive, got {retention_days}")
        self.root = Path(root).expanduser()
        self.retention_days = float(retention_days)
        self.max_text_chars = MAX_TEXT_CHARS
        self.max_image_bytes = MAX_IMAGE_BYTES
        self.counts = {"stored": 0, "truncated_texts": 0, "skipped_images": 0}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalContentStore({str(self.root)!r}, retention_days={self.retention_days:g})"

    def _base(self, request_id: str, item: int) -> Path:
        key = content_key(request_id, item)
        return self.root / key[:2] / key[2:4] / key

    def _count(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1

    def put(
        self,
        request_id: str,
        item: int,
        text: str | None,
        image: bytes | None,
        timestamp: datetime | None = None,
    ) -> None:
        """Stores an item's text and image bytes (replacing what was stored under the same key).

        Raises:
            OSError: The folder cannot be written (the serving client counts it; the request is not failed).
        """
        base = self._base(request_id, item)
        record: dict = {
            "version": RECORD_VERSION,
            "request_id": str(request_id),
            "item": int(item),
            "stored_at": _utc(timestamp).isoformat(),
            "text": False,
            "image": False,
        }
        if text is not None and len(text) > self.max_text_chars:
            record["text_length"], text = len(text), text[: self.max_text_chars]
            record["text_truncated"] = True
            self._count("truncated_texts")
            logger.warning(
                "content store: text of %s item %d cut to %d characters", request_id, item, len(text)
            )
        if image is not None and len(image) > self.max_image_bytes:
            record["image_skipped"] = f"{len(image)} bytes > {self.max_image_bytes}"
            self._count("skipped_images")
            logger.warning(
                "content store: image of %s item %d not stored (%d bytes)", request_id, item, len(image)
            )
            image = None
        base.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if text is not None:
            _write_atomically(base.with_suffix(TEXT_SUFFIX), text.encode("utf-8", "surrogatepass"))
            record["text"] = True
        if image:
            _write_atomically(base.with_suffix(IMAGE_SUFFIX), bytes(image))
            record["image"] = True
        for suffix, kept in ((TEXT_SUFFIX, record["text"]), (IMAGE_SUFFIX, record["image"])):
            if not kept:  # a replaced item loses what it no longer has
                base.with_suffix(suffix).unlink(missing_ok=True)
        _write_atomically(base.with_suffix(RECORD_SUFFIX), json.dumps(record).encode())
        self._count("stored")

    def get(self, request_id: str, item: int) -> StoredContent | None:
        """The stored content of an item, or None when nothing (or something unreadable) is stored for it."""
        base = self._base(request_id, item)
        record = _read_record(base.with_suffix(RECORD_SUFFIX))
        if record is None or record.get("request_id") != str(request_id) or record.get("item") != int(item):
            return None
        try:
            text = (
                base.with_suffix(TEXT_SUFFIX).read_bytes().decode("utf-8", "surrogatepass")
                if record.get("text")
                else None
            )
            image = base.with_suffix(IMAGE_SUFFIX).read_bytes() if record.get("image") else None
        except (OSError, UnicodeDecodeError):
            return None
        return StoredContent(
            request_id=str(request_id),
            item=int(item),
            text=text,
            image=image,
            stored_at=str(record.get("stored_at", "")),
        )

    def purge(self, now: datetime | None = None) -> int:
        """Deletes items stored more than `retention_days` before `now` (default: the current time), and
        leftover temporary files as old; returns how many items were deleted."""
        cutoff = _utc(now) - timedelta(days=self.retention_days)
        deleted = 0
        if not self.root.is_dir():
            return 0
        for path in sorted(self.root.glob(f"*/*/*{RECORD_SUFFIX}")):
            record = _read_record(path)
            stored_at = _stored_at(record, path)
            if stored_at is None or stored_at >= cutoff:
                continue
            for suffix in (TEXT_SUFFIX, IMAGE_SUFFIX, RECORD_SUFFIX):
                path.with_suffix(suffix).unlink(missing_ok=True)
            deleted += 1
        for partial in self.root.glob(f"*/*/*{PARTIAL_SUFFIX}*"):
            if datetime.fromtimestamp(partial.stat().st_mtime, UTC) < cutoff:
                partial.unlink(missing_ok=True)
        return deleted


def _write_atomically(path: Path, data: bytes) -> None:
    """Writes `data` to a temporary file beside `path` (mode 0600) and renames it into place."""
    partial = path.with_name(f"{path.name}{PARTIAL_SUFFIX}-{os.getpid()}-{threading.get_ident()}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _read_record(path: Path) -> dict | None:
    try:
        if path.stat().st_size > MAX_RECORD_BYTES:
            return None
        record = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _stored_at(record: dict | None, path: Path) -> datetime | None:
    """When an item was stored: its record's time, else (an unreadable record) the file's modification time."""
    try:
        if record is not None:
            return _utc(datetime.fromisoformat(str(record["stored_at"])))
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except (KeyError, ValueError, OSError):
        return None


def open_content_store(uri: str | Path, retention_days: float = DEFAULT_RETENTION_DAYS) -> ContentStore:
    """The content store at `uri`: a local path or `file://` URI gives a `LocalContentStore`.

    Raises:
        ValueError: Another scheme (`s3://`, `gs://`, ...): a deployment plugs in its own store.
    """
    text = str(uri)
    parsed = urlparse(text)
    if isinstance(uri, Path) or not parsed.scheme or len(parsed.scheme) == 1:  # a path (or a drive letter)
        return LocalContentStore(Path(text), retention_days)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(
                f"content store URI {text!r}: a file:// URI names a local path (file:///abs/path)"
            )
        return LocalContentStore(Path(unquote(parsed.path)), retention_days)
    raise ValueError(
        f"content store URI {text!r}: only local folders (a path or file:// URI) are built in; for "
        f"'{parsed.scheme}://' implement serving.content_store.ContentStore (put, get) on your platform's store "
        "and pass that object (ContentSafetyClient(content_store=...)) instead of a URI"
    )
