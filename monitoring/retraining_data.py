"""The retraining dataset: everything the champion knew plus what the window's labels just taught.

`build_retraining_data` writes a dataset folder (`manifest.jsonl`, `images/`, `lineage.json`) that the training
pipeline ingests like any other:

- **Original rows**: the champion's ingested training data, found through its registry lineage
  (`core.data.lineage`), each row in the split the champion had, so the champion's own test split stays in the
  gate's test split (the gate's non-regression rule on the original slice is measured there).
- **New rows**: the delayed labels and review imports under the log root's `labels/`, joined by request id and
  item with their content from the content store (`serving.content_store`). Only labels whose `source` the retrain
  rules trust are used; a policy a label line does not give stays unannotated (masked in training and metrics).
  A new item identical to an original one (same text and image bytes) is left out (the original keeps its
  labels); of several label lines for one item the last wins.
- **Splits of the new rows**: uniformly sampled rows (`sampling.stratum` `uniform`) are spread over train,
  validation and test by the run's split fractions, so the test split holds drifted traffic as it arrives;
  rows picked for uncertainty or drift go to train only (they would bias the test and the calibration).
- **Cap**: the new rows are at most `max_new_share` of the dataset; a random subset is kept beyond that.

Every row carries `data_origin` (`original` / `new`), `label_source` and `sampling_stratum`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.common.constants import (
    COL_CREATED_AT,
    COL_DATA_ORIGIN,
    COL_GROUP,
    COL_ID,
    COL_IMAGE,
    COL_ITEM_HASH,
    COL_LABEL_SOURCE,
    COL_LANGUAGE,
    COL_SAMPLING_STRATUM,
    COL_SPLIT,
    COL_TEXT,
    DATASET_LINEAGE_FILE,
    DATASET_MANIFEST_FILE,
    LABEL_SOURCE_REVIEW,
    ORIGIN_NEW,
    ORIGIN_ORIGINAL,
    SPLIT_TEST,
    SPLIT_TRAIN,
    SPLIT_VALIDATION,
    STRATUM_UNIFORM,
)
from core.config.retrain_rules import RetrainingDataRules, RetrainRules
from core.config.run import SplitConfig
from core.data.ingest import item_hash
from core.data.lineage import DataLineage
from monitoring.log_chunks import read_label_entries
from monitoring.schema import MAX_LOG_LINE_BYTES

if TYPE_CHECKING:
    from serving.content_store import ContentStore

IMAGE_EXTENSIONS = ((b"\x89PNG", "png"), (b"\xff\xd8", "jpg"), (b"GIF8", "gif"), (b"RIFF", "webp"))


class RetrainingDataError(ValueError):
    """The retraining dataset cannot be built (no rows at all, or the base data cannot be read)."""


@dataclass
class RetrainingData:
    """What `build_retraining_data` wrote.

    Attributes:
        folder: The dataset folder (the retraining run's `data_uri`).
        base_uri: The champion's training data it started from ('' = none).
        original_rows: Rows of the champion's training data.
        new_rows: New labeled rows kept.
        new_by_split: New rows per split.
        new_by_stratum: New rows per sampling stratum.
        new_by_source: New rows per label source.
        dropped: Label lines left out, by reason (`untrusted_source`, `no_gold_check` and `gold_disagreement`
            for review imports without gold or above `max_gold_disagreement`, `no_content`, `same_as_original`,
            `over_cap`, `no_policy_label`).
        label_files: The label files read.
    """

    folder: Path
    base_uri: str
    original_rows: int
    new_rows: int
    new_by_split: dict[str, int] = field(default_factory=dict)
    new_by_stratum: dict[str, int] = field(default_factory=dict)
    new_by_source: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    label_files: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One sentence for the trigger's reasons."""
        base = (
            f"the champion's training data {self.base_uri} ({self.original_rows} rows)"
            if self.base_uri
            else ("no base data (the champion records no training-data lineage)")
        )
        dropped = ", ".join(f"{n} {reason}" for reason, n in sorted(self.dropped.items()) if n) or "none"
        return (
            f"retraining data {self.folder}: {base} + {self.new_rows} new labeled rows "
            f"(splits {dict(sorted(self.new_by_split.items()))}, strata {dict(sorted(self.new_by_stratum.items()))}, "
            f"sources {dict(sorted(self.new_by_source.items()))}); label lines left out: {dropped}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "folder": str(self.folder)}


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _unit_interval(key: str) -> float:
    """A deterministic number in [0, 1) for `key`."""
    return int(_digest(key)[:15], 16) / float(16**15)


def _extension(image: bytes) -> str:
    return next((ext for magic, ext in IMAGE_EXTENSIONS if image.startswith(magic)), "img")


def _original_rows(
    base: DataLineage, out: Path, policies: list[str]
) -> tuple[list[dict[str, Any]], set[str]]:
    """The champion's rows in the champion's splits, their images copied; and their content keys."""
    import pandas as pd

    from core.data.split import read_split_frame

    dataset_dir, splits_dir = base.open()
    frame = read_split_frame(dataset_dir, splits_dir)
    rows, keys = [], set()
    for record in frame.to_dict("records"):
        image = record.get(COL_IMAGE)
        if isinstance(image, str) and (dataset_dir / image).is_file():
            target = out / image
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(dataset_dir / image, target)
        else:
            image = None
        keys.add(str(record.get(COL_ITEM_HASH)))
        row = {
            COL_ID: str(record[COL_ID]),
            COL_TEXT: record.get(COL_TEXT),
            COL_IMAGE: image,
            COL_LANGUAGE: record.get(COL_LANGUAGE),
            COL_CREATED_AT: record.get(COL_CREATED_AT),
            COL_GROUP: record.get(COL_GROUP),
            COL_SPLIT: record[COL_SPLIT],
            COL_DATA_ORIGIN: ORIGIN_ORIGINAL,
            COL_LABEL_SOURCE: None,
            COL_SAMPLING_STRATUM: None,
        }
        for policy in policies:
            value = record.get(policy)
            row[policy] = None if value is None or pd.isna(value) else int(value)
        rows.append(
            {k: (None if not isinstance(v, str | int | float) or v != v else v) for k, v in row.items()}
        )
    return rows, keys


def _new_split(key: str, stratum: str, split: SplitConfig) -> str:
    if stratum != STRATUM_UNIFORM:
        return SPLIT_TRAIN
    draw = _unit_interval(f"split:{split.seed}:{key}")
    if draw < split.test_fraction:
        return SPLIT_TEST
    return SPLIT_VALIDATION if draw < split.test_fraction + split.validation_fraction else SPLIT_TRAIN


def _new_rows(
    log_root: Path,
    store: ContentStore,
    out: Path,
    policies: list[str],
    rules: RetrainingDataRules,
    split: SplitConfig,
    original_keys: set[str],
    dropped: Counter[str],
) -> tuple[list[dict[str, Any]], list[str]]:
    """The trusted labels of the log root joined with their content, one row per item (the last label wins)."""
    entries = read_label_entries(log_root, MAX_LOG_LINE_BYTES)
    trusted = set(rules.trusted_label_sources)
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    for entry in entries:
        if str(entry.get("source") or "") not in trusted:
            dropped["untrusted_source"] += 1
            continue
        if entry.get("source") == LABEL_SOURCE_REVIEW:
            disagreement = entry.get("gold_disagreement")
            if not isinstance(disagreement, int | float):
                dropped["no_gold_check"] += 1
                continue
            if disagreement > rules.max_gold_disagreement:
                dropped["gold_disagreement"] += 1
                continue
        if not any(policy in entry["labels"] for policy in policies):
            dropped["no_policy_label"] += 1
            continue
        key = (entry["request_id"], entry["item"])
        if key in latest:
            dropped["relabeled"] += 1
        latest[key] = entry
    rows, seen = [], set()
    images = out / "images" / "new"
    for (request_id, item), entry in latest.items():
        content = store.get(request_id, item)
        if content is None or (content.text is None and content.image is None):
            dropped["no_content"] += 1
            continue
        image_sha = hashlib.sha256(content.image).hexdigest() if content.image is not None else None
        content_key = item_hash(content.text, image_sha)
        if content_key in original_keys:
            dropped["same_as_original"] += 1
            continue
        if content_key in seen:
            dropped["same_content"] += 1
            continue
        seen.add(content_key)
        image_path = None
        if content.image is not None:
            images.mkdir(parents=True, exist_ok=True)
            image_path = f"images/new/{image_sha}.{_extension(content.image)}"
            (out / image_path).write_bytes(content.image)
        sampling = entry.get("sampling") if isinstance(entry.get("sampling"), dict) else {}
        stratum = str(sampling.get("stratum") or "unknown")
        row_id = f"new-{_digest(f'{request_id}:{item}')[:20]}"
        row = {
            COL_ID: row_id,
            COL_TEXT: content.text,
            COL_IMAGE: image_path,
            COL_LANGUAGE: None,
            COL_CREATED_AT: content.stored_at,
            COL_GROUP: None,
            COL_SPLIT: _new_split(row_id, stratum, split),
            COL_DATA_ORIGIN: ORIGIN_NEW,
            COL_LABEL_SOURCE: str(entry.get("source")),
            COL_SAMPLING_STRATUM: stratum,
        }
        for policy in policies:
            value = entry["labels"].get(policy)
            row[policy] = None if value is None else int(value)
        rows.append(row)
    files = sorted({entry["file"] for entry in entries})
    return rows, files


def build_retraining_data(
    base: DataLineage | None,
    log_root: str | Path,
    store: ContentStore,
    out_dir: str | Path,
    policies: list[str],
    rules: RetrainingDataRules,
    split: SplitConfig | None = None,
) -> RetrainingData:
    """Writes the retraining dataset (see the module docstring) and returns what it holds.

    Args:
        base: The champion's training-data lineage (None: no base, the new rows alone).
        log_root: Log root whose `labels/` holds the delayed labels and review imports.
        store: Content of the logged items.
        out_dir: The dataset folder to write (must not exist, or be empty).
        policies: The run's policies.
        rules: Trusted label sources and the cap on the new rows' share.
        split: Split fractions and seed for the new uniform rows (default: the run configuration's defaults).

    Raises:
        RetrainingDataError: `out_dir` holds files, or no row at all would be written.
        core.data.lineage.LineageError: The base data cannot be read or changed since training.
    """
    split = split or SplitConfig()
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise RetrainingDataError(f"{out} already holds files; the retraining dataset needs an empty folder")
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        original, keys = _original_rows(base, staging, policies) if base else ([], set())
        dropped: Counter[str] = Counter()
        new, files = _new_rows(Path(log_root), store, staging, policies, rules, split, keys, dropped)
        if original and rules.max_new_share < 1.0:
            limit = int(rules.max_new_share / (1.0 - rules.max_new_share) * len(original))
            if len(new) > limit:
                new.sort(key=lambda row: _unit_interval(f"cap:{split.seed}:{row[COL_ID]}"))
                dropped["over_cap"] += len(new) - limit
                new = new[:limit]
        if not original and not new:
            raise RetrainingDataError(
                f"no rows for a retraining dataset: no base data and no trusted labels with content under "
                f"{log_root} (left out: {dict(dropped) or 'nothing'})"
            )
        with (staging / DATASET_MANIFEST_FILE).open("w", encoding="utf-8") as handle:
            for row in original + new:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        result = RetrainingData(
            folder=out,
            base_uri=base.uri if base else "",
            original_rows=len(original),
            new_rows=len(new),
            new_by_split=dict(Counter(row[COL_SPLIT] for row in new)),
            new_by_stratum=dict(Counter(row[COL_SAMPLING_STRATUM] for row in new)),
            new_by_source=dict(Counter(row[COL_LABEL_SOURCE] for row in new)),
            dropped=dict(dropped),
            label_files=files,
        )
        lineage = {
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "sources": ([base.uri] if base else []) + files,
            "base": asdict(base) if base else None,
            "trusted_label_sources": list(rules.trusted_label_sources),
            "max_new_share": rules.max_new_share,
            **{k: v for k, v in result.to_dict().items() if k not in ("folder", "label_files")},
        }
        (staging / DATASET_LINEAGE_FILE).write_text(json.dumps(lineage, indent=2), encoding="utf-8")
        if out.exists():
            out.rmdir()
        out.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result


# What the trigger gives the retraining run --------------------------------------------------------------
def champion_lineage(model_name: str) -> tuple[str, DataLineage | None]:
    """The champion's version and training-data lineage from the registry: ('', None) without a champion, and
    (version, None) for a champion registered before lineage was recorded."""
    from core.registry.mlflow_registry import configure, get_alias, version_tags

    configure()
    champion = get_alias(model_name)
    if champion is None:
        return "", None
    return champion.version, DataLineage.from_tags(version_tags(model_name, champion.version))


def retraining_data_uri(
    rules: RetrainRules,
    window_id: str,
    window_path: str,
    build: bool,
    champion: Callable[[str], tuple[str, DataLineage | None]] = champion_lineage,
) -> tuple[str, str]:
    """The retraining run's `data_uri` and a sentence on where it comes from.

    The retrain rules' `training_data_uri` when set; else, with a content store named
    (`retraining_data.content_store_uri`), the retraining dataset of the window (built when `build`, else only
    described: a dry run); else '' (the training pipeline's default dataset). Nothing found beside the logs
    chooses the data: the folders come from the rules, and only labels of trusted sources are used.

    Raises:
        RetrainingDataError, core.data.lineage.LineageError: The dataset cannot be built.
    """
    if rules.training_data_uri:
        return rules.training_data_uri, f"retraining data: training_data_uri {rules.training_data_uri}"
    data = rules.retraining_data
    if not data.enabled:
        return (
            "",
            "retraining data: the training pipeline's default dataset (the retrain rules name no training_data_uri "
            "and no retraining_data.content_store_uri)",
        )
    from core.common.env import tns_home
    from serving.content_store import open_content_store

    root = Path(data.output_dir) if data.output_dir else tns_home() / "monitoring" / "retraining-data"
    folder = (root / f"{rules.model_name}-{window_id[:16]}").resolve()
    log_root = data.labels_uri or window_path
    version, lineage = champion(rules.model_name)
    base = (
        f"champion version {version}'s training data {lineage.uri}"
        if lineage
        else (
            f"no base data (champion version {version} records no training-data lineage)"
            if version
            else "no base data (no champion)"
        )
    )
    if not build:
        return str(
            folder
        ), f"retraining data (dry run, not built): {base} + the trusted labels under {log_root}"
    if (folder / DATASET_LINEAGE_FILE).is_file():
        return str(folder), f"retraining data {folder}: built for this window before, reused"
    config = rules.run_config()
    result = build_retraining_data(
        lineage, log_root, open_content_store(data.content_store_uri), folder, list(config.policies), data,
        config.split,
    )  # fmt: skip
    return str(folder), result.describe()
