"""Folders at a URI (`core.common.storage`): local paths as they are, object stores through fsspec (its in-memory
filesystem stands in for gs:// and s3://, whose fsspec packages only the GPU image installs)."""

from __future__ import annotations

import uuid
from pathlib import Path

import fsspec
import pytest

from core.common.storage import fetch, is_local, publish


def _folder(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "weights.safetensors").write_bytes(b"\x00\x01")
    (root / "images" / "a.png").write_bytes(b"png")
    return root


def test_local_uris_are_used_in_place(tmp_path):
    folder = _folder(tmp_path / "model")
    assert is_local(str(folder)) and is_local(f"file://{folder}")
    assert fetch(f"file://{folder}", tmp_path / "unused") == folder
    assert not (tmp_path / "unused").exists()


def test_publish_replaces_a_local_folder_whole(tmp_path):
    source = _folder(tmp_path / "new")
    target = tmp_path / "target"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    publish(source, str(target))
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == [
        "images",
        "images/a.png",
        "weights.safetensors",
    ]
    assert not target.with_name("target.staging").exists()


def test_an_object_store_round_trip(tmp_path):
    uri = f"memory://exchange/{uuid.uuid4().hex}"
    publish(_folder(tmp_path / "model"), uri)
    assert fsspec.filesystem("memory").exists(uri.removeprefix("memory://") + "/images/a.png")
    fetched = fetch(uri, tmp_path / "fetched")
    assert (fetched / "weights.safetensors").read_bytes() == b"\x00\x01"
    assert (fetched / "images" / "a.png").read_bytes() == b"png"


def test_an_object_store_without_its_package_says_which_extra(tmp_path):
    with pytest.raises(RuntimeError, match="cluster` extra"):
        fetch("nosuchstore://bucket/dataset", tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
