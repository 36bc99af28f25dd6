"""Integrity of exported model repositories: a manifest of the SHA-256 of every file, and its check.

The export writes the manifest beside the Triton repository and records the manifest's own hash as a registry
tag (tags are short; the manifest travels as an artifact). Infra validation and `tns serve` check a repository
against both before a server runs any of its code (the python-backend `model.py` files) or weights, so that
whoever can write the artifact store cannot run code on the serving host by editing a file there.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

MANIFEST_FORMAT = 1
BYTECODE_DIR = "__pycache__"


class IntegrityError(RuntimeError):
    """A repository does not match its manifest (or the manifest not its recorded hash); names the file.

    Attributes:
        file: The repository file that differs (relative path), or None when the manifest itself is the problem.
    """

    def __init__(self, message: str, file: str | None = None) -> None:
        super().__init__(message)
        self.file = file


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(folder: Path) -> dict[str, Path]:
    """Every file below `folder`, Python bytecode included: Python runs a `__pycache__/*.pyc` instead of the
    `model.py` beside it, so bytecode that is not in the manifest is an unexpected file like any other."""
    return {
        path.relative_to(folder).as_posix(): path
        for path in sorted(folder.rglob("*"))
        if path.is_file() or path.is_symlink()
    }


def remove_bytecode(folder: str | Path) -> int:
    """Deletes Python bytecode (`__pycache__` folders, `*.pyc` files) below `folder`, which a server that
    imported the python-backend models leaves behind and an export never has; returns how many were removed.
    Call it before `verify_repository` on a folder that may have been served."""
    import shutil

    removed = 0
    for path in sorted(Path(folder).rglob("*"), reverse=True):
        if path.is_dir() and not path.is_symlink() and path.name == BYTECODE_DIR:
            shutil.rmtree(path)
            removed += 1
        elif path.suffix == ".pyc" and (path.is_file() or path.is_symlink()):
            path.unlink()
            removed += 1
    return removed


def _is_bytecode(name: str) -> bool:
    return name.endswith(".pyc") or BYTECODE_DIR in name.split("/")[:-1]


def repository_manifest(folder: str | Path) -> bytes:
    """The manifest of `folder`: canonical JSON `{"format", "files": {relative path: sha256}}`, sorted. Python
    bytecode is never listed (an export has none; a served folder does), so verifying finds any as unexpected."""
    folder = Path(folder)
    files = {name: file_sha256(path) for name, path in _files(folder).items() if not _is_bytecode(name)}
    return json.dumps({"format": MANIFEST_FORMAT, "files": files}, indent=1, sort_keys=True).encode("utf-8")


def manifest_sha256(manifest: bytes) -> str:
    """The hash a registry tag records for a manifest."""
    return hashlib.sha256(manifest).hexdigest()


def verify_repository(folder: str | Path, manifest: bytes, expected_sha256: str | None = None) -> None:
    """Checks every file of `folder` against `manifest` (and the manifest against `expected_sha256`).

    Raises:
        IntegrityError: Naming the first changed, missing or unexpected file, or the manifest's hash.
    """
    folder = Path(folder)
    if expected_sha256 is not None and manifest_sha256(manifest) != expected_sha256:
        raise IntegrityError(
            f"the repository manifest's SHA-256 {manifest_sha256(manifest)[:16]}… is not the "
            f"{expected_sha256[:16]}… recorded at export: the manifest was changed"
        )
    try:
        expected = json.loads(manifest.decode("utf-8"))["files"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise IntegrityError(f"the repository manifest cannot be read: {error}") from error
    found = _files(folder)
    for name, digest in expected.items():
        path = found.get(name)
        if path is None:
            raise IntegrityError(f"{folder}: {name} is missing (listed in the export manifest)", name)
        if path.is_symlink() or file_sha256(path) != digest:
            raise IntegrityError(
                f"{folder}: {name} does not match its SHA-256 recorded at export (changed)", name
            )
    extra = sorted(set(found) - set(expected))
    if extra:
        raise IntegrityError(
            f"{folder}: {extra[0]} was not exported ({len(extra)} unexpected file(s))", extra[0]
        )
