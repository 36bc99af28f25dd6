"""Simulated production traffic, scored and written: inference logs, delayed labels and a labeled dataset.

The items and their drift scenarios come from `monitoring.traffic_scenarios` (`simulate_items`, pure and
deterministic per seed). `simulate_traffic` scores the items (in process with a `RepositoryScorer`, or through a
running Triton server) and writes::

    OUT/logs/date=YYYY-MM-DD/traffic-<pid>.jsonl   inference-log records (monitoring.schema), by simulated day
    OUT/logs/labels/labels-<seed>.jsonl            delayed moderator labels of a `label_rate` share of the items
    OUT/content/                                   every item's text and image bytes (serving.content_store)
    OUT/dataset/manifest.jsonl, images/            the labeled items as a training-ready dataset
    OUT/truth.jsonl                                every item's true labels under its log key: request_id, item,
                                                   id (the simulator's item id), labels, drifted
    OUT/simulation.json                            spec, scenario, drift start time, counts

`OUT/logs` is the log root to give `monitoring.log_reader.read_logs` (it joins the labels); the dataset and
`truth.jsonl` stay outside it because every `*.jsonl` under a log root is read as logs. `truth.jsonl` is the
ground truth of every item, labeled or not (what simulated moderators answer from,
`monitoring.simulated_review`); in server mode its keys are the request ids the client made. Moderator labels are the items' true labels (no
label noise); each label line says so (`"source": "delayed"`) and how it was sampled (a uniform random share:
`"sampling": {"stratum": "uniform", "weight": 1 / label_rate}`). Logged timestamps are the simulated times, not the
wall-clock time of scoring. The content store `OUT/content` is what `tns review sample --content` reads to show
moderators the items (in process it is written directly, through a server by the client's `content_store` hook).

`tns traffic simulate` (`tns.traffic`: `add_simulate_arguments`, `run_simulate`) runs `simulate_traffic`.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.common.constants import (
    COL_CREATED_AT,
    COL_ID,
    COL_IMAGE,
    COL_LANGUAGE,
    COL_TEXT,
    DATASET_MANIFEST_FILE,
    LABEL_SOURCE_DELAYED,
    STRATUM_UNIFORM,
)
from monitoring.schema import LABELS_DIR
from monitoring.traffic_scenarios import SCENARIOS, SimulatedItem, SimulationSpec, simulate_items

if TYPE_CHECKING:
    from serving.content_store import ContentStore
    from serving.in_process import RepositoryScorer

DEFAULT_BATCH_SIZE = 32
SIMULATION_FILE = "simulation.json"
LOGS_DIR = (
    "logs"  # the log root: day partitions and labels/ (a dataset manifest inside would be read as logs)
)
DATASET_DIR = "dataset"
TRUTH_FILE = "truth.jsonl"  # every item's true labels by log key (outside the log root: not a log)
CONTENT_DIR = "content"  # the items' text and image bytes, for the review queue (outside the log root)
LOG_FILE_NAME = "traffic"
SERVER_READY_TIMEOUT_S = 10.0
MODE_IN_PROCESS = "in-process"
MODE_SERVER = "server"


# Scoring and writing -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SimulationResult:
    """What `simulate_traffic` wrote.

    Attributes:
        out_dir: The output folder.
        log_root: The log root (`out_dir/logs`): give it to `monitoring.log_reader.read_logs`.
        spec: The simulated spec.
        mode: `in-process` or `server`.
        model_name: The model that scored the items.
        model_version: Its version.
        rows: Items scored and logged.
        drifted: Items the scenario applied to.
        labeled: Items with a delayed label (= dataset rows).
        partitions: Records per day partition (`date=YYYY-MM-DD`).
        labels_file: The delayed-label file.
        dataset_manifest: The labeled items' manifest.
        summary_file: `simulation.json`.
        scoring_seconds: Wall time of scoring and logging.
        content_root: The content store folder (`out_dir/content`, a `LocalContentStore`).
        truth_file: Every item's true labels by log key (`out_dir/truth.jsonl`).
    """

    out_dir: Path
    log_root: Path
    spec: SimulationSpec
    mode: str
    model_name: str
    model_version: str
    rows: int
    drifted: int
    labeled: int
    partitions: dict[str, int]
    labels_file: Path
    dataset_manifest: Path
    summary_file: Path
    scoring_seconds: float
    content_root: Path | None = None
    truth_file: Path | None = None

    @property
    def items_per_second(self) -> float:
        return self.rows / self.scoring_seconds if self.scoring_seconds > 0 else float("inf")


ItemKey = tuple[str, int]  # (request_id, item): a log record's key


def _score_in_process(
    items: Sequence[SimulatedItem],
    scorer: RepositoryScorer,
    write: Callable[[list[dict[str, Any]]], None],
    batch_size: int,
    keep_text: bool,
    content: ContentStore,
) -> tuple[list[ItemKey], str, str]:
    """Scores with the scorer; each item is its own request (`request_id` = item id, `item` 0), its content
    stored under that key with the simulated time."""
    from monitoring.schema import make_record

    keys: list[ItemKey] = []
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        scored = scorer.score([i.text for i in batch], [i.image for i in batch], batch_size=batch_size)
        records = []
        for item, answer in zip(batch, scored, strict=True):
            records.append(
                make_record(
                    request_id=item.id,
                    item=0,
                    timestamp=item.timestamp,
                    model_name=answer.model_name,
                    model_version=answer.model_version,
                    text=item.text,
                    image=item.image,
                    scores=answer.scores,
                    flags=answer.flags,
                    action=answer.action,
                    text_embedding=answer.text_embedding,
                    image_embedding=answer.image_embedding,
                    latency_ms=None,  # no request was made
                    keep_text=keep_text,
                )
            )
            keys.append((item.id, 0))
            content.put(item.id, 0, item.text, item.image, timestamp=item.timestamp)
        write(records)
    return keys, scorer.model_name, scorer.model_version


def _score_through_server(
    items: Sequence[SimulatedItem],
    url: str,
    protocol: str,
    write: Callable[[list[dict[str, Any]]], None],
    batch_size: int,
    keep_text: bool,
    content: ContentStore,
) -> tuple[list[ItemKey], str, str]:
    """Sends the items in order, `batch_size` per request; the request ids come from the client's log hook, and
    the client's content hook stores each item's content under the same key."""
    from monitoring.schema import make_record
    from serving.client import ContentSafetyClient, ServerUnavailableError

    logged: list[dict[str, Any]] = []  # the client's records, one per item, in request order
    keys: list[ItemKey] = []
    model_name = model_version = ""
    with ContentSafetyClient(
        url,
        protocol=protocol,
        max_batch_size=batch_size,
        retries=2,
        inference_log=logged.extend,
        content_store=content,
    ) as client:
        if not client.wait_until_ready(SERVER_READY_TIMEOUT_S):
            raise ServerUnavailableError(
                f"no ready Triton server with model '{client.model_name}' at {client.url} ({protocol}) within "
                f"{SERVER_READY_TIMEOUT_S:.0f} s; is `tns serve` running there?"
            )
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            before = len(logged)
            predictions = client.classify([i.text for i in batch], [i.image for i in batch])
            requests = logged[before:]
            if len(requests) != len(batch):
                raise RuntimeError(f"the client logged {len(requests)} records for {len(batch)} items")
            records = []
            for item, prediction, request in zip(batch, predictions, requests, strict=True):
                key = (str(request["request_id"]), int(request["item"]))
                records.append(
                    make_record(
                        request_id=key[0],
                        item=key[1],
                        timestamp=item.timestamp,  # the simulated time, not the wall clock
                        model_name=prediction.model_name,
                        model_version=prediction.model_version,
                        text=item.text,
                        image=item.image,
                        scores=prediction.scores,
                        flags=prediction.flags,
                        action=prediction.action,
                        text_embedding=getattr(prediction, "text_embedding", None),
                        image_embedding=getattr(prediction, "image_embedding", None),
                        latency_ms=request.get("latency_ms"),
                        keep_text=keep_text,
                    )
                )
                keys.append(key)
            model_name, model_version = predictions[-1].model_name, predictions[-1].model_version
            write(records)
    return keys, model_name, model_version


def _write_labels(
    items: Sequence[SimulatedItem], keys: Sequence[ItemKey], path: Path, label_rate: float
) -> int:
    """Writes the delayed moderator labels of the labeled items (a uniform random `label_rate` share, so each
    stands for 1 / label_rate items); returns how many."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sampling = {"stratum": STRATUM_UNIFORM, "weight": round(1.0 / label_rate, 6) if label_rate else None}
    lines = [
        json.dumps(
            {
                "request_id": request_id,
                "item": position,
                "labels": item.labels,
                "source": LABEL_SOURCE_DELAYED,
                "sampling": sampling,
            }
        )
        for item, (request_id, position) in zip(items, keys, strict=True)
        if item.labeled
    ]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)


def _write_truth(items: Sequence[SimulatedItem], keys: Sequence[ItemKey], path: Path) -> None:
    """Writes every item's true labels under its log key (`request_id`, `item`), with its simulator id."""
    lines = [
        json.dumps(
            {
                "request_id": request_id,
                "item": position,
                "id": item.id,
                "labels": item.labels,
                "drifted": item.drifted,
            }
        )
        for item, (request_id, position) in zip(items, keys, strict=True)
    ]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def write_dataset(items: Sequence[SimulatedItem], folder: Path) -> Path:
    """Writes items as a dataset in the generator's format (`manifest.jsonl` + `images/`); returns the manifest.

    Columns: id, text, image (relative path), language, created_at, one 0/1 column per policy.
    """
    (folder / "images").mkdir(parents=True, exist_ok=True)
    manifest = folder / DATASET_MANIFEST_FILE
    with manifest.open("w", encoding="utf-8") as handle:
        for item in items:
            image_path = None
            if item.image is not None:
                extension = "jpg" if item.image_format == "JPEG" else str(item.image_format).lower()
                image_path = f"images/{item.id}.{extension}"
                (folder / image_path).write_bytes(item.image)
            row = {
                COL_ID: item.id,
                COL_TEXT: item.text,
                COL_IMAGE: image_path,
                COL_LANGUAGE: item.language,
                COL_CREATED_AT: item.timestamp.isoformat(),
                **item.labels,
            }
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return manifest


def _label_rates(items: Sequence[SimulatedItem]) -> dict[str, float]:
    if not items:
        return {}
    return {p: round(sum(i.labels[p] for i in items) / len(items), 4) for p in items[0].labels}


def existing_output(out_dir: Path) -> str | None:
    """Why `out_dir` cannot take a simulation (it holds one, or a failed one's logs), or None when it can."""
    if (out_dir / SIMULATION_FILE).exists():
        return f"{out_dir} already holds a simulation ({SIMULATION_FILE}); choose a new folder"
    log_root = out_dir / LOGS_DIR
    if log_root.is_dir() and any(log_root.iterdir()):
        return f"{log_root} already holds logs (records would be appended twice); choose a new folder"
    return None


def simulate_traffic(
    spec: SimulationSpec,
    out_dir: str | Path,
    scorer: RepositoryScorer | None = None,
    url: str | None = None,
    protocol: str = "grpc",
    batch_size: int = DEFAULT_BATCH_SIZE,
    keep_text: bool = False,
) -> SimulationResult:
    """Simulates traffic, scores it and writes logs, delayed labels, the labeled dataset and a summary.

    Written under `out_dir`: the log root `logs/` with `logs/date=YYYY-MM-DD/traffic-<pid>.jsonl` (schema
    records, by the simulated day) and `logs/labels/labels-<seed>.jsonl` (the delayed labels, where
    `monitoring.log_reader.read_logs` joins them); `dataset/manifest.jsonl` + `dataset/images/` and
    `truth.jsonl` (every item's true labels by log key; both outside the log root, whose `*.jsonl` files are all
    read as logs); `content/`, every item's text and image bytes in a
    `serving.content_store.LocalContentStore` (for `tns review sample --content`); `simulation.json`.

    Args:
        spec: What to simulate.
        out_dir: The output folder; it must not hold a simulation or logs (records would be appended twice).
        scorer: Scores in process (default without `url`: the MLflow champion, `champion_scorer()`).
        url: `host:port` of a running Triton server to score through instead (`ContentSafetyClient`).
        protocol: `grpc` or `http`, with `url`.
        batch_size: Items per scoring batch (per request with `url`).
        keep_text: Log raw texts in the records (off by default, as in serving).

    Returns:
        What was written.

    Raises:
        FileExistsError: `out_dir` holds a simulation or logs already.
        ValueError: Both `scorer` and `url` given, or a bad `batch_size`.
        serving.client.ContentSafetyError: With `url`: the server is unreachable or fails.
        serving.store.ServingStoreError: Without `scorer` and `url`: no champion to score with.
    """
    from monitoring.log_writer import LogWriter
    from serving.content_store import LocalContentStore

    if scorer is not None and url is not None:
        raise ValueError("give a scorer or a url, not both")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    out_dir = Path(out_dir)
    summary_file = out_dir / SIMULATION_FILE
    problem = existing_output(out_dir)
    if problem:
        raise FileExistsError(problem)
    if scorer is None and url is None:
        from serving.in_process import champion_scorer

        scorer = champion_scorer()
    items = simulate_items(spec)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_root = out_dir / LOGS_DIR
    writer = LogWriter(log_root, LOG_FILE_NAME)
    content_root = out_dir / CONTENT_DIR
    content = LocalContentStore(content_root)
    partitions: Counter[str] = Counter()

    def write(records: list[dict[str, Any]]) -> None:
        writer.write(records)
        partitions.update(writer.path_for(record["timestamp"]).parent.name for record in records)

    started = time.perf_counter()
    if url is not None:
        keys, model_name, model_version = _score_through_server(
            items, url, protocol, write, batch_size, keep_text, content
        )
        mode = MODE_SERVER
    else:
        assert scorer is not None
        keys, model_name, model_version = _score_in_process(
            items, scorer, write, batch_size, keep_text, content
        )
        mode = MODE_IN_PROCESS
    scoring_seconds = time.perf_counter() - started

    labels_file = log_root / LABELS_DIR / f"labels-{spec.seed}.jsonl"
    labeled = _write_labels(items, keys, labels_file, spec.label_rate)
    truth_file = out_dir / TRUTH_FILE
    _write_truth(items, keys, truth_file)
    manifest = write_dataset([item for item in items if item.labeled], out_dir / DATASET_DIR)
    drift_start = spec.drift_start_time
    before = [item for item in items if item.timestamp < drift_start]
    after = [item for item in items if item.timestamp >= drift_start]
    result = SimulationResult(
        out_dir=out_dir,
        log_root=log_root,
        spec=spec,
        mode=mode,
        model_name=model_name,
        model_version=model_version,
        rows=len(items),
        drifted=sum(item.drifted for item in items),
        labeled=labeled,
        partitions=dict(sorted(partitions.items())),
        labels_file=labels_file,
        dataset_manifest=manifest,
        summary_file=summary_file,
        scoring_seconds=scoring_seconds,
        content_root=content_root,
        truth_file=truth_file,
    )
    scenario = SCENARIOS[spec.scenario]
    modalities = Counter(
        "both" if item.text and item.image else "text" if item.text else "image" for item in items
    )
    summary = {
        "spec": spec.to_dict(),
        "scenario": {"name": scenario.name, "description": scenario.description},
        "start": spec.start.isoformat(),
        "end": spec.end.isoformat(),
        "drift_start": drift_start.isoformat(),
        "mode": mode,
        "url": url,
        "model": {"name": model_name, "version": model_version},
        "counts": {
            "rows": result.rows,
            "before_drift_start": len(before),
            "after_drift_start": len(after),
            "drifted": result.drifted,
            "labeled": labeled,
            "modalities": dict(sorted(modalities.items())),
            "partitions": result.partitions,
        },
        "label_rates": {"before_drift_start": _label_rates(before), "after_drift_start": _label_rates(after)},
        "files": {
            "log_root": log_root.relative_to(out_dir).as_posix(),
            "partitions": sorted(result.partitions),
            "labels": labels_file.relative_to(out_dir).as_posix(),
            "dataset": manifest.relative_to(out_dir).as_posix(),
            "content": content_root.relative_to(out_dir).as_posix(),
            "truth": TRUTH_FILE,
        },
        "scoring_seconds": round(scoring_seconds, 3),
        "items_per_second": round(result.items_per_second, 1),
    }
    summary_file.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return result
