"""Folders at a URI: a local path, `file://`, or an object store that fsspec reaches (`gs://` with gcsfs, `s3://`
with s3fs; both are in the `cluster` extra the GPU image installs). Training processes that run outside the
pipeline step (a Kubeflow Trainer TrainJob) read the step's artifacts and hand the model back this way.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

LOCAL_SCHEMES = ("", "file")
KFP_MINIO_SCHEME = "minio"  # KFP's name for its in-cluster MinIO: an S3 endpoint


def is_local(uri: str) -> bool:
    """A path or `file://` URI (no object store in between)."""
    return urlsplit(str(uri)).scheme in LOCAL_SCHEMES


def local_path(uri: str) -> Path:
    """The path of a local URI."""
    parts = urlsplit(str(uri))
    return Path(parts.path) if parts.scheme == "file" else Path(str(uri))


def _filesystem(uri: str):
    import fsspec

    scheme = urlsplit(uri).scheme
    protocol = "s3" if scheme == KFP_MINIO_SCHEME else scheme
    try:
        return fsspec.filesystem(protocol), uri.split("://", 1)[1]
    except (ImportError, ValueError) as error:
        raise RuntimeError(
            f"cannot reach {uri}: no fsspec filesystem for {protocol!r} in this image ({error}); the GPU image "
            "installs the project's `cluster` extra (gcsfs, s3fs)"
        ) from error


def fetch(uri: str, destination: str | Path) -> Path:
    """The folder at `uri` as a local folder: itself when local, else copied under `destination`."""
    if is_local(uri):
        return local_path(uri)
    filesystem, path = _filesystem(uri)
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    filesystem.get(path.rstrip("/") + "/", str(destination), recursive=True)
    return destination


def fetch_files(uri: str, destination: str | Path, relative: list[str]) -> Path:
    """Some files of the folder at `uri` (paths relative to it) as a local folder: itself when local, else those
    files copied under `destination`, in the same layout."""
    if is_local(uri):
        return local_path(uri)
    filesystem, path = _filesystem(uri)
    destination = Path(destination)
    for name in relative:
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        filesystem.get(f"{path.rstrip('/')}/{name}", str(target))
    return destination


def replace_file(path: Path, write: Callable[[Path], object]) -> None:
    """Replaces `path` whole: `write` writes a staging file beside it, which is then renamed over it, so that a
    reader never sees half a file."""
    staging = path.with_name(f".{path.name}.staging")
    write(staging)
    os.replace(staging, path)


def publish(folder: str | Path, uri: str) -> None:
    """Copies a local folder's files to `uri` (a local destination is replaced through a staging copy)."""
    folder = Path(folder)
    if is_local(uri):
        target = local_path(uri)
        if target.resolve() == folder.resolve():
            return
        staging = target.with_name(target.name + ".staging")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(folder, staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        return
    filesystem, path = _filesystem(uri)
    filesystem.put(str(folder).rstrip("/") + "/", path.rstrip("/") + "/", recursive=True)
