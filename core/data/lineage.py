"""Training-data lineage: where a registered model's training data is, so that it can be found again.

Each registered version carries `DataLineage.to_tags()`: the URI of the ingested dataset artifact (a self-contained
copy: table, images, fingerprint) and of its split assignment, the content fingerprint, and the sources the
dataset was built from. On Kubeflow the URIs are the pipeline root's object-store URIs (`gs://`, `s3://`,
`minio://`), durable and readable from any step; with the local runner they are folders under `$TNS_HOME/kfp/`.

`local_path` opens a lineage URI from where the code runs: a local path or `file://` URI as is, and an object-store
URI through the mount KFP v2 gives a container (`/gcs/<bucket>/...`, `/s3/...`, `/minio/...`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from core.common.constants import DATASET_FINGERPRINT, DATASET_TABLE, SPLITS_TABLE

TAG_PREFIX = "tns.training_data."
# Where KFP v2 mounts an object store inside a container (the launcher's convention for artifact paths).
OBJECT_STORE_MOUNTS = {"gs": "/gcs", "s3": "/s3", "minio": "/minio"}


class LineageError(ValueError):
    """A model's training data cannot be found from its lineage (no lineage, unreadable URI, files missing)."""


@dataclass(frozen=True)
class DataLineage:
    """A model's training data.

    Attributes:
        uri: The ingested dataset artifact (`dataset.parquet`, `images/`, `fingerprint.json`).
        splits_uri: Its split assignment (`splits.parquet`).
        fingerprint: The dataset's content fingerprint (ids, content hashes, labels).
        sources: What the dataset was built from: the data the run was given and, for a retraining dataset,
            the base dataset and the label files it added.
    """

    uri: str
    splits_uri: str
    fingerprint: str
    sources: list[str] = field(default_factory=list)

    def to_tags(self) -> dict[str, str]:
        """Registry tags of the lineage (`tns.training_data.*`)."""
        return {
            f"{TAG_PREFIX}uri": self.uri,
            f"{TAG_PREFIX}splits_uri": self.splits_uri,
            f"{TAG_PREFIX}fingerprint": self.fingerprint,
            f"{TAG_PREFIX}sources": json.dumps(self.sources)[:5000],
        }

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> DataLineage | None:
        """The lineage recorded in a version's tags, or None when it has none (versions before lineage)."""
        uri = tags.get(f"{TAG_PREFIX}uri")
        if not uri:
            return None
        try:
            sources = json.loads(tags.get(f"{TAG_PREFIX}sources") or "[]")
        except ValueError:
            sources = []
        return cls(
            uri=uri,
            splits_uri=tags.get(f"{TAG_PREFIX}splits_uri", ""),
            fingerprint=tags.get(f"{TAG_PREFIX}fingerprint", ""),
            sources=[str(s) for s in sources] if isinstance(sources, list) else [],
        )

    def open(self) -> tuple[Path, Path]:
        """The dataset and splits folders as local paths, checked to hold their tables and fingerprint.

        Raises:
            LineageError: A URI cannot be read from here, a table is missing, or the content changed.
        """
        dataset, splits = local_path(self.uri), local_path(self.splits_uri)
        for folder, name in (
            (dataset, DATASET_TABLE),
            (dataset, DATASET_FINGERPRINT),
            (splits, SPLITS_TABLE),
        ):
            if not (folder / name).is_file():
                raise LineageError(f"training data {folder} lacks {name}: the artifact was moved or deleted")
        recorded = json.loads((dataset / DATASET_FINGERPRINT).read_text(encoding="utf-8")).get("fingerprint")
        if self.fingerprint and recorded != self.fingerprint:
            raise LineageError(
                f"training data {self.uri} has fingerprint {recorded}, the registry recorded {self.fingerprint}: "
                "the artifact changed since the model was trained"
            )
        return dataset, splits


def artifact_uri(uri: str, path: str) -> str:
    """The URI to record for a KFP artifact: its `uri` (an object-store URI on a cluster), else its local path
    made absolute (the local runner)."""
    if uri and urlparse(uri).scheme in (*OBJECT_STORE_MOUNTS, "file"):
        return uri
    return str(Path(path or uri).resolve())


def local_path(uri: str) -> Path:
    """A lineage URI as a path readable from here.

    Raises:
        LineageError: Another scheme, or an object-store URI that is not mounted here.
    """
    if not uri:
        raise LineageError("no training-data URI recorded")
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path) if parsed.scheme else uri)
    mount = OBJECT_STORE_MOUNTS.get(parsed.scheme)
    if mount is None:
        raise LineageError(f"training-data URI {uri}: scheme {parsed.scheme!r} is not supported")
    path = Path(mount) / parsed.netloc / unquote(parsed.path).lstrip("/")
    if not path.exists():
        raise LineageError(
            f"training-data URI {uri} is not mounted here (looked for {path}); run where the pipeline root is "
            f"mounted (a KFP step), or copy the folder locally and set the retrain rules' training_data_uri"
        )
    return path
