"""The content store: items round-trip under hashed, sharded names, writes are atomic and bounded, retention
purges, other URI schemes are refused, and the serving client's hook never fails a request."""

from __future__ import annotations

import json
import os
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from core.common.constants import (
    DEFAULT_POLICIES,
    TRITON_OUTPUT_DECISION,
    TRITON_OUTPUT_FLAGS,
    TRITON_OUTPUT_SCORES,
)
from serving.client import ContentSafetyClient, ServerUnavailableError
from serving.content_store import (
    ContentStore,
    LocalContentStore,
    StoredContent,
    content_key,
    open_content_store,
)
from tests.monitoring.records import png

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_items_round_trip_under_hashed_sharded_names(tmp_path: Path):
    store = LocalContentStore(tmp_path / "content")
    image = png(8, 8)
    hostile = ["../../etc/passwd", "a/b\\c", "x" * 5000, "nul\x00byte", "é🙂"]
    for request_id in hostile:
        store.put(request_id, 3, text=f"text of {request_id}", image=image, timestamp=NOW)
    store.put("text-only", 0, "just text", None)
    store.put("image-only", 1, None, image)
    for request_id in hostile:
        got = store.get(request_id, 3)
        assert got == StoredContent(request_id, 3, f"text of {request_id}", image, NOW.isoformat())
    assert store.get("text-only", 0).image is None and store.get("image-only", 1).text is None
    assert store.get("text-only", 1) is None and store.get("unknown", 0) is None
    assert isinstance(store, ContentStore)
    for path in _files(tmp_path / "content"):  # names come from the hash only, two folder levels down
        relative = path.relative_to(tmp_path / "content")
        assert len(relative.parts) == 3 and relative.stem == content_key(*_key_of(path))
        assert relative.parts[:2] == (relative.stem[:2], relative.stem[2:4])
        assert path.suffix in (".json", ".txt", ".bin") and (path.stat().st_mode & 0o077) == 0
    assert store.counts == {"stored": 7, "truncated_texts": 0, "skipped_images": 0}


def _key_of(path: Path) -> tuple[str, int]:
    record = json.loads(path.with_suffix(".json").read_text())
    return record["request_id"], record["item"]


def test_a_replaced_item_loses_what_it_no_longer_has(tmp_path: Path):
    store = LocalContentStore(tmp_path)
    store.put("r", 0, "first", png(4, 4))
    store.put("r", 0, "second", None)
    assert store.get("r", 0).text == "second" and store.get("r", 0).image is None
    assert [p.suffix for p in _files(tmp_path)] == [".json", ".txt"]


def test_sizes_are_bounded_and_counted_not_raised(tmp_path: Path, caplog):
    store = LocalContentStore(tmp_path)
    store.max_text_chars, store.max_image_bytes = 10, 20
    store.put("r", 0, "0123456789abcdef", b"\x89PNG" + b"\0" * 100)
    got = store.get("r", 0)
    assert got.text == "0123456789" and got.image is None
    assert store.counts == {"stored": 1, "truncated_texts": 1, "skipped_images": 1}
    assert "not stored" in caplog.text and "cut to 10" in caplog.text


def test_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    store = LocalContentStore(tmp_path)

    def failing_replace(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        store.put("r", 0, "text", png(4, 4))
    monkeypatch.undo()
    assert _files(tmp_path) == [] and store.get("r", 0) is None  # no partial file, no record


def test_purge_deletes_what_is_older_than_the_retention(tmp_path: Path):
    store = LocalContentStore(tmp_path, retention_days=30)
    store.put("old", 0, "old text", png(4, 4), timestamp=NOW - timedelta(days=31))
    store.put("new", 0, "new text", None, timestamp=NOW - timedelta(days=29))
    assert store.purge(now=NOW) == 1
    assert store.get("old", 0) is None and store.get("new", 0).text == "new text"
    assert len(_files(tmp_path)) == 2
    assert LocalContentStore(tmp_path / "missing").purge() == 0
    with pytest.raises(ValueError, match="positive"):
        LocalContentStore(tmp_path, retention_days=0)


def test_open_content_store_takes_local_paths_only(tmp_path: Path):
    assert isinstance(open_content_store(tmp_path), LocalContentStore)
    assert open_content_store(str(tmp_path)).root == tmp_path
    assert open_content_store(f"file://{tmp_path}/c", retention_days=7).root == tmp_path / "c"
    for uri in ("s3://bucket/content", "gs://b/c", "file://otherhost/x"):
        with pytest.raises(ValueError, match="ContentStore|file:///"):
            open_content_store(uri)


# The serving client's hook ---------------------------------------------------------------------------------
class _Result:
    """What tritonclient's infer returns, for `rows` items (every score 0.25, nothing flagged)."""

    def __init__(self, rows: int) -> None:
        policies = list(DEFAULT_POLICIES)
        decision = {
            "action": "allow",
            "policies": dict.fromkeys(policies, {}),
            "model_name": "m",
            "model_version": "1",
        }
        self.outputs = {
            TRITON_OUTPUT_SCORES: np.full((rows, len(policies)), 0.25, dtype=np.float32),
            TRITON_OUTPUT_FLAGS: np.zeros((rows, len(policies)), dtype=bool),
            TRITON_OUTPUT_DECISION: np.array([[json.dumps(decision).encode()]] * rows, dtype=object),
        }

    def as_numpy(self, name: str):
        return self.outputs[name]


def _client(store, answer=True) -> tuple[ContentSafetyClient, list[dict]]:
    logged: list[dict] = []
    client = ContentSafetyClient("127.0.0.1:1", retries=0, inference_log=logged.extend, content_store=store)
    client._serves_embeddings = False

    def infer(inputs, request_id):
        if not answer:
            raise ServerUnavailableError("down")
        return _Result(inputs[0].shape()[0])

    client._infer_with_retries = lambda texts, images, request_id: infer(
        client._inputs(texts, images), request_id
    )
    return client, logged


def test_the_client_stores_content_under_the_log_key_after_a_successful_request(tmp_path: Path):
    store = LocalContentStore(tmp_path)
    client, logged = _client(store)
    image = png(6, 6)
    client.classify(["first", None, "third"], [None, image, image])
    assert [(r["item"], r["error"]) for r in logged] == [(0, None), (1, None), (2, None)]
    for record in logged:
        stored = store.get(record["request_id"], record["item"])
        assert (stored.text, stored.image) == (record["text"], record["image"])
        assert stored.stored_at == record["timestamp"].isoformat()

    failing, logged = _client(LocalContentStore(tmp_path / "down"), answer=False)
    with pytest.raises(ServerUnavailableError):
        failing.classify_one("never answered")
    assert logged[0]["error"] and not (tmp_path / "down").exists()  # a failed request stores nothing


def test_a_failed_content_write_is_counted_and_never_fails_the_request(caplog):
    broken = types.SimpleNamespace(put=lambda *args, **kwargs: (_ for _ in ()).throw(OSError("read-only")))
    client, logged = _client(broken)
    predictions = client.classify(["a", "b"])
    assert len(predictions) == 2 and len(logged) == 2 and client.content_store_failures == 2
    assert "read-only" in caplog.text
