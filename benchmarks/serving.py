"""Serving benchmark: the Triton `content_safety` ensemble under load from Triton's perf_analyzer (gRPC), against
the same model run in process by onnxruntime ("the limit") and by PyTorch eager, all measured in one run.

What is measured, per concurrency level C (1, 4, 16 by default):

- ensemble: perf_analyzer keeps C synchronous gRPC requests in flight against a tritonserver on this machine;
  each request carries one raw item (UTF-8 `TEXT` and encoded `IMAGE` bytes), as `ContentSafetyClient` sends
  it. Throughput is perf_analyzer's; p50/p99 latency are over every request of the level, from the per-request
  timestamps perf_analyzer exports. Every answer is checked against in-process onnxruntime on the same item.
- onnxruntime in process: the exported `model.onnx` in one `InferenceSession` (onnxruntime's default threads),
  fed the same items preprocessed once by `Preprocessor.serving_inputs`, in batches of C (the largest batch the
  server's dynamic batcher can form with C requests in flight). A second figure includes that preprocessing
  (tokenizing, image decoding) in the timed loop.
- PyTorch eager: the saved model (`load_model` + `probability_model`) under `torch.no_grad()`, on the same
  preprocessed batches.

A shared machine's load changes by the minute, so each level runs in rounds: one timed cell of each in-process
runner, then one perf_analyzer run of a fixed number of requests (about `perf_seconds` long), repeated. Both
sides of every ratio sample the same stretch of time, and each figure is pooled over the rounds (items or
requests over seconds). perf_analyzer's own stability search (windows until 3 agree within 10%) is not used:
on a busy 2-core machine it often never converges, and a level then takes minutes or fails.

The model is built as the default config builds it (all-MiniLM-L6-v2 text encoder, EfficientNet-Lite0 image
encoder, default policies and preprocessing) with an untrained head: weights do not change speed.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import shutil
import struct
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from core.common.constants import (
    TRITON_ENSEMBLE,
    TRITON_INPUT_IMAGE,
    TRITON_INPUT_TEXT,
    TRITON_OUTPUT_SCORES,
)
from core.config.run import RunConfig

CONCURRENCIES: tuple[int, ...] = (1, 4, 16)
GOAL_CONCURRENCY = 16
GOAL_SHARE = 0.70  # the ensemble keeps >= 70% of in-process onnxruntime throughput at GOAL_CONCURRENCY
RUNNERS = ("onnxruntime", "onnxruntime_with_preprocessing", "pytorch")
PERF_ANALYZER = "perf_analyzer"
ENV_PERF_ANALYZER = "TNS_PERF_ANALYZER"  # a perf_analyzer binary to use instead of the serving env's
# Shared libraries perf_analyzer 2.51 links by these names; the nvidia-pytriton wheel ships them renamed
# (auditwheel-style hashes), e.g. `libb64-98cb6333.so.0d`, `libcudart-09529672.so.12.6.77`.
PERF_ANALYZER_LIBRARIES: dict[str, str] = {
    "libb64.so.0d": "libb64-*.so.0d*",
    "libcudart.so.12": "libcudart-*.so.12*",
}
# Columns of perf_analyzer's `-f` CSV report (latencies in microseconds).
CSV_CONCURRENCY = "Concurrency"
CSV_THROUGHPUT = "Inferences/Second"


class PerfAnalyzerError(RuntimeError):
    """perf_analyzer is missing, failed, or wrote no usable report; the message holds the end of its output."""


# Request data ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    """One raw request item, as a client sends it: text or None, encoded image bytes or None."""

    text: str | None
    image: bytes | None


def load_items(count: int, folder: Path, seed: int = 31) -> list[Item]:
    """`count` items of the embedded synthetic dataset (text+image, text-only and image-only, 64x64 PNGs)."""
    from core.common.constants import COL_IMAGE, COL_TEXT
    from core.data.generate import GenerateSpec, generate_dataset

    manifest = generate_dataset(folder, GenerateSpec(rows=count, seed=seed))
    items = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        text, image = row.get(COL_TEXT), row.get(COL_IMAGE)
        items.append(Item(text or None, (folder / image).read_bytes() if image else None))
    return items


def bytes_element(value: bytes) -> dict[str, str]:
    """One BYTES tensor element in perf_analyzer's `--input-data` JSON.

    perf_analyzer sends the base64-decoded bytes of a `b64` field as the tensor's raw contents; a Triton BYTES
    tensor is serialized as each element's length (4 bytes, little-endian) followed by its bytes.
    """
    return {"b64": base64.b64encode(struct.pack("<I", len(value)) + value).decode("ascii")}


def perf_input_data(items: Sequence[Item]) -> dict:
    """perf_analyzer `--input-data` JSON: one step per item (requests cycle through them), batch size 1.

    A missing modality is sent as an empty element, as `ContentSafetyClient` does.
    """
    steps = []
    for item in items:
        steps.append(
            {
                TRITON_INPUT_TEXT: bytes_element((item.text or "").encode("utf-8")),
                TRITON_INPUT_IMAGE: bytes_element(item.image or b""),
            }
        )
    return {"data": steps}


# perf_analyzer ---------------------------------------------------------------------------------------------
@dataclass
class ModelStats:
    """Server-side statistics of one composing model over perf_analyzer's measurement (times in ms)."""

    inferences: int
    executions: int
    queue_ms: float  # average per request
    compute_ms: float  # average per request: compute input + infer + output

    @property
    def batch_size(self) -> float:
        """Average batch size the dynamic batcher formed: inferences per execution."""
        return self.inferences / self.executions if self.executions else 0.0

    def __add__(self, other: ModelStats) -> ModelStats:
        inferences = self.inferences + other.inferences

        def mean(mine: float, theirs: float) -> float:
            return (mine * self.inferences + theirs * other.inferences) / inferences if inferences else 0.0

        return ModelStats(
            inferences,
            self.executions + other.executions,
            mean(self.queue_ms, other.queue_ms),
            mean(self.compute_ms, other.compute_ms),
        )


_COMPOSING = re.compile(r"^\s*Composing models:\s*$", re.MULTILINE)
_MODEL_HEADER = re.compile(r"^\s*(?P<name>[\w.-]+), version: (?P<version>\S*)\s*$", re.MULTILINE)


def _usec(text: str, label: str) -> float:
    match = re.search(rf"{label} (\d+(?:\.\d+)?) usec", text)
    return float(match.group(1)) / 1000 if match else 0.0


def parse_composing_models(output: str) -> dict[str, ModelStats]:
    """Per composing model of an ensemble, the server-side statistics perf_analyzer prints to stdout.

    Reads the `Composing models:` section of the last measurement in `output`, e.g.::

          classifier, version: 1
              Inference count: 250
              Execution count: 40
              Avg request latency: 9000 usec (overhead 4 usec + queue 2369 usec + compute input 60 usec + ...)
    """
    sections = _COMPOSING.split(output)
    if len(sections) < 2:
        return {}
    section = sections[-1]
    headers = list(_MODEL_HEADER.finditer(section))
    stats = {}
    for index, header in enumerate(headers):
        end = headers[index + 1].start() if index + 1 < len(headers) else len(section)
        body = section[header.end() : end]
        inferences = re.search(r"Inference count: (\d+)", body)
        executions = re.search(r"Execution count: (\d+)", body)
        if not inferences or not executions:
            continue
        stats[header.group("name")] = ModelStats(
            inferences=int(inferences.group(1)),
            executions=int(executions.group(1)),
            queue_ms=_usec(body, "queue"),
            compute_ms=sum(_usec(body, f"compute {part}") for part in ("input", "infer", "output")),
        )
    return stats


def parse_perf_csv(text: str) -> dict[int, float]:
    """Throughput (inferences/s) per concurrency level from perf_analyzer's `-f` CSV report.

    Raises:
        PerfAnalyzerError: when the report has no rows or lacks a needed column.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    missing = [name for name in (CSV_CONCURRENCY, CSV_THROUGHPUT) if name not in (reader.fieldnames or [])]
    if missing:
        raise PerfAnalyzerError(f"perf_analyzer report lacks columns {missing}; header: {reader.fieldnames}")
    throughput = {
        int(float(row[CSV_CONCURRENCY])): float(row[CSV_THROUGHPUT])
        for row in reader
        if (row.get(CSV_CONCURRENCY) or "").strip()
    }
    if not throughput:
        raise PerfAnalyzerError("perf_analyzer report has no measurement rows")
    return throughput


@dataclass
class ExportedRequest:
    """One request of perf_analyzer's `--profile-export-file`: its latency, raw inputs and first response."""

    latency_ms: float
    inputs: dict[str, bytes]
    outputs: dict


def parse_profile_export(data: bytes) -> list[ExportedRequest]:
    """The requests of perf_analyzer's profile export (JSON whose BYTES inputs are written as raw bytes).

    The file is read as Latin-1, which maps each byte to one character, so raw bytes survive the JSON parser
    and come back with `.encode("latin-1")`.
    """
    document = json.loads(data.decode("latin-1"))
    requests = []
    for experiment in document.get("experiments", []):
        for request in experiment.get("requests", []):
            responses = request.get("response_timestamps") or []
            if not responses:
                continue
            inputs = {
                name: value.encode("latin-1") if isinstance(value, str) else bytes(value)
                for name, value in (request.get("request_inputs") or {}).items()
            }
            outputs = (request.get("response_outputs") or [{}])[0]
            requests.append(ExportedRequest((responses[0] - request["timestamp"]) / 1e6, inputs, outputs))
    return requests


def find_perf_analyzer() -> Path:
    """`$TNS_PERF_ANALYZER`, else the serving env's `bin/perf_analyzer` (tritonclient's wheel), else PATH's.

    Raises:
        PerfAnalyzerError: when there is none.
    """
    from serving.triton_install import TritonNotAvailable, serving_env

    configured = os.environ.get(ENV_PERF_ANALYZER)
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise PerfAnalyzerError(f"${ENV_PERF_ANALYZER}={configured} is not a file")
        return path
    try:
        candidate = serving_env() / "bin" / PERF_ANALYZER
        if candidate.is_file():
            return candidate
    except TritonNotAvailable:
        pass
    found = shutil.which(PERF_ANALYZER)
    if found:
        return Path(found)
    raise PerfAnalyzerError(
        "no perf_analyzer: `make setup` installs tritonclient into the serving env, whose wheel ships one "
        f"(or set ${ENV_PERF_ANALYZER})"
    )


def link_libraries(library_dirs: Sequence[Path], dest: Path) -> list[str]:
    """Links the renamed libraries perf_analyzer needs into `dest` under the names it asks for.

    Returns:
        The names that no library folder held (perf_analyzer may still find them elsewhere).
    """
    dest.mkdir(parents=True, exist_ok=True)
    missing = []
    for name, pattern in PERF_ANALYZER_LIBRARIES.items():
        matches = sorted(match for folder in library_dirs for match in folder.glob(pattern))
        if not matches:
            missing.append(name)
            continue
        link = dest / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(matches[0].resolve())
    return missing


def perf_analyzer_environment(library_folder: Path) -> dict[str, str]:
    """The server's environment (serving env's libraries on LD_LIBRARY_PATH) plus the linked libraries."""
    from serving.triton_install import TritonInstallation, server_environment

    installation = TritonInstallation.find()
    link_libraries(installation.library_dirs, library_folder)
    environment = server_environment(installation)
    environment["LD_LIBRARY_PATH"] = os.pathsep.join(
        [str(library_folder), *filter(None, environment.get("LD_LIBRARY_PATH", "").split(os.pathsep))]
    )
    return environment


def perf_analyzer_command(
    binary: Path,
    grpc_url: str,
    input_data: Path,
    concurrency: int,
    requests: int,
    report: Path,
    profile_export: Path | None = None,
) -> list[str]:
    """perf_analyzer sending `requests` requests to the ensemble over gRPC with `concurrency` in flight."""
    command = [
        str(binary),
        "-m",
        TRITON_ENSEMBLE,
        "-i",
        "grpc",
        "-u",
        grpc_url,
        "-b",
        "1",
        "--input-data",
        str(input_data),
        "--concurrency-range",
        f"{concurrency}:{concurrency}",
        "--request-count",
        str(requests),
        "-f",
        str(report),
    ]
    if profile_export is not None:
        command += ["--profile-export-file", str(profile_export)]
    return command


def run_perf_analyzer(command: list[str], environment: dict[str, str], timeout_s: float) -> tuple[str, str]:
    """Runs perf_analyzer; returns its CSV report and its stdout.

    Raises:
        PerfAnalyzerError: when it fails or writes no report.
    """
    report = Path(command[command.index("-f") + 1])
    report.unlink(missing_ok=True)
    try:
        done = subprocess.run(
            command, env=environment, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise PerfAnalyzerError(f"perf_analyzer ran past {timeout_s:.0f} s: {' '.join(command)}") from error
    output = (done.stdout or "") + (done.stderr or "")
    if done.returncode != 0 or not report.is_file():
        tail = "\n".join(output.splitlines()[-25:])
        raise PerfAnalyzerError(
            f"perf_analyzer exited with code {done.returncode}: {' '.join(command)}\n{tail}"
        )
    return report.read_text(encoding="utf-8"), output


# In-process baselines --------------------------------------------------------------------------------------
def cycled_batches(count: int, batch_size: int) -> list[list[int]]:
    """Item positions in consecutive batches of `batch_size`, cycling through `count` items until every item
    was used once and the last batch is full."""
    batches, position = [], 0
    while position < count or position % batch_size:
        batches.append([(position + offset) % count for offset in range(batch_size)])
        position += batch_size
    return batches


def timed_items(
    run: Callable[[int], None], batches: int, batch_size: int, seconds: float, start: int = 0
) -> tuple[int, float]:
    """Runs `run(batch_index)` over consecutive batches (cycling, from `start`) for at least `seconds` and one
    batch; returns (items, elapsed seconds)."""
    runs, started = 0, time.perf_counter()
    while True:
        run((start + runs) % batches)
        runs += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return runs * batch_size, elapsed


class InProcessBaselines:
    """The exported model in process: onnxruntime (with and without preprocessing) and PyTorch eager.

    Args:
        model_dir: The saved model.
        onnx_path: Its ONNX export.
        items: The raw items; batches cycle through them.
    """

    def __init__(self, model_dir: Path, onnx_path: Path, items: Sequence[Item]) -> None:
        from core.export.onnx_export import onnx_session, probability_model
        from core.training.model import load_model
        from core.training.preprocessing import Preprocessor

        self.items = list(items)
        self.preprocessor = Preprocessor.from_model_dir(model_dir)
        self.session = onnx_session(onnx_path)
        self.model = probability_model(load_model(model_dir))
        self._runners: dict[int, tuple[int, dict[str, Callable[[int], None]]]] = {}
        self._positions: dict[tuple[int, str], int] = {}

    def _prepare(self, batch_size: int) -> tuple[int, dict[str, Callable[[int], None]]]:
        """The runners of one batch size, on batches preprocessed once, warmed up with 3 batches each."""
        if batch_size in self._runners:
            return self._runners[batch_size]
        import torch

        from core.export.onnx_export import INPUT_NAMES

        raw, feeds = batch_feeds(self.preprocessor, self.items, batch_size)
        torch_feeds = [tuple(torch.from_numpy(feed[name]) for name in INPUT_NAMES) for feed in feeds]
        session, preprocessor, model = self.session, self.preprocessor, self.model

        def run_onnxruntime(index: int) -> None:
            session.run(None, feeds[index])

        def run_with_preprocessing(index: int) -> None:
            batch = preprocessor.serving_inputs(*raw[index])
            session.run(None, {name: batch[name] for name in INPUT_NAMES})

        def run_pytorch(index: int) -> None:
            with torch.no_grad():
                model(*torch_feeds[index])

        runners = dict(zip(RUNNERS, (run_onnxruntime, run_with_preprocessing, run_pytorch), strict=True))
        for run in runners.values():
            for index in range(min(len(feeds), 3)):
                run(index)
        self._runners[batch_size] = (len(feeds), runners)
        return self._runners[batch_size]

    def cell(self, batch_size: int, seconds: float) -> dict[str, tuple[int, float]]:
        """One timed cell of each runner in turn: runner -> (items, seconds). Each runner goes on through the
        batches where its previous cell stopped."""
        batches, runners = self._prepare(batch_size)
        result = {}
        for name, run in runners.items():
            start = self._positions.get((batch_size, name), 0)
            items, elapsed = timed_items(run, batches, batch_size, seconds, start)
            self._positions[(batch_size, name)] = start + items // batch_size
            result[name] = (items, elapsed)
        return result

    def expected_scores(self) -> dict[tuple[bytes, bytes], np.ndarray]:
        """onnxruntime's probabilities of each item alone, keyed by the bytes a request carries for it."""
        return expected_scores(self.session, self.preprocessor, self.items)


def batch_feeds(
    preprocessor, items: Sequence[Item], batch_size: int
) -> tuple[list[tuple[list, list]], list[dict[str, np.ndarray]]]:
    """The items in cycled batches (`cycled_batches`): each batch's raw (texts, images) and its onnxruntime feed,
    preprocessed as served (`serving_inputs`)."""
    from core.export.onnx_export import INPUT_NAMES

    batches = cycled_batches(len(items), batch_size)
    raw = [([items[i].text for i in rows], [items[i].image for i in rows]) for rows in batches]
    tensors = [preprocessor.serving_inputs(texts, images) for texts, images in raw]
    return raw, [{name: batch[name] for name in INPUT_NAMES} for batch in tensors]


def expected_scores(session, preprocessor, items: Sequence[Item]) -> dict[tuple[bytes, bytes], np.ndarray]:
    """A session's probabilities of each item scored alone, keyed by the bytes a request carries for it."""
    from core.common.constants import TENSOR_PROBABILITIES
    from core.export.onnx_export import INPUT_NAMES

    expected = {}
    for item in items:
        tensors = preprocessor.serving_inputs([item.text], [item.image])
        (probabilities,) = session.run([TENSOR_PROBABILITIES], {n: tensors[n] for n in INPUT_NAMES})
        expected[request_key(item)] = probabilities[0]
    return expected


def request_key(item: Item) -> tuple[bytes, bytes]:
    """The (TEXT, IMAGE) bytes of a request for `item`, as `perf_input_data` writes them."""
    return (item.text or "").encode("utf-8"), item.image or b""


# The whole benchmark ---------------------------------------------------------------------------------------
def build_exported_model(folder: Path, config: RunConfig, seed: int = 0) -> tuple[Path, Path, Path]:
    """Builds the default-config model (untrained head), saves it, exports ONNX and writes the repository.

    Returns:
        The saved model folder, the ONNX file and the Triton model repository.
    """
    import torch

    from core.export.onnx_export import export_onnx
    from core.training.model import build_model, resolve_text_encoder, save_model
    from core.training.trainer import _preprocessing_spec
    from serving.repository import ServedModel, write_model_repository

    settings = config.train
    torch.manual_seed(seed)
    text_folder = resolve_text_encoder(settings.text_encoder)
    spec = _preprocessing_spec(settings, text_folder, config.validation)
    model, sources = build_model(
        list(config.policies), settings.text_encoder, settings.image_encoder, settings.hidden_dim,
        settings.dropout, spec,
    )  # fmt: skip
    model_dir = folder / "model"
    save_model(model.eval(), model_dir, sources)
    onnx_path = export_onnx(model_dir, folder / "model.onnx", config.export.opset)
    served = ServedModel(config.model_name, 1, list(config.policies), {p: 0.5 for p in config.policies})
    repository = write_model_repository(folder / "repository", model_dir, onnx_path, served, config.serving)
    return model_dir, onnx_path, repository


@dataclass
class Round:
    """One round of a level: the in-process cells, then one perf_analyzer run."""

    in_process: dict[str, tuple[int, float]]  # runner -> (items, seconds)
    requests: int  # perf_analyzer's requests
    throughput: float  # perf_analyzer's inferences/s

    @property
    def ensemble_seconds(self) -> float:
        return self.requests / self.throughput

    def ratio(self) -> float:
        """ensemble / onnxruntime throughput in this round."""
        items, seconds = self.in_process["onnxruntime"]
        return self.throughput / (items / seconds)


@dataclass
class LevelResult:
    """Everything measured at one concurrency level."""

    concurrency: int
    rounds: list[Round]
    latencies_ms: list[float] = field(repr=False)
    models: dict[str, ModelStats]  # composing models' server-side statistics, pooled over the rounds

    @property
    def ensemble(self) -> float:
        """Requests per second over all rounds."""
        return sum(r.requests for r in self.rounds) / sum(r.ensemble_seconds for r in self.rounds)

    def in_process(self, runner: str) -> float:
        """Items per second of an in-process runner over all rounds."""
        return sum(r.in_process[runner][0] for r in self.rounds) / sum(
            r.in_process[runner][1] for r in self.rounds
        )

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


@dataclass
class ServingBench:
    """Everything the report needs."""

    levels: list[LevelResult]
    items: int
    modalities: dict[str, int]
    rounds: int
    perf_seconds: float
    cell_seconds: float
    checked_answers: int
    max_abs_diff: float
    perf_analyzer: str
    perf_analyzer_version: str
    onnxruntime_version: str
    torch_version: str
    torch_threads: int
    max_text_length: int
    serving: dict
    server_load_s: float
    seconds: float
    load_average: tuple[float, float]  # 1-minute load average of the machine before and after
    cores: int

    def rows(self) -> list[dict]:
        """One row per concurrency: ensemble figures, in-process figures at batch = concurrency, ratios."""
        rows = []
        for level in self.levels:
            onnxruntime = level.in_process("onnxruntime")
            with_preprocessing = level.in_process("onnxruntime_with_preprocessing")
            pytorch = level.in_process("pytorch")
            ratios = [r.ratio() for r in level.rounds]
            rows.append(
                {
                    "concurrency": level.concurrency,
                    "requests": sum(r.requests for r in level.rounds),
                    "ensemble": level.ensemble,
                    "p50_ms": level.percentile_ms(50),
                    "p99_ms": level.percentile_ms(99),
                    "onnxruntime": onnxruntime,
                    "onnxruntime_with_preprocessing": with_preprocessing,
                    "pytorch": pytorch,
                    "ensemble_vs_onnxruntime": level.ensemble / onnxruntime,
                    "ensemble_vs_onnxruntime_range": (min(ratios), max(ratios)),
                    "ensemble_vs_onnxruntime_with_preprocessing": level.ensemble / with_preprocessing,
                    "onnxruntime_vs_pytorch": onnxruntime / pytorch,
                }
            )
        return rows

    def goal(self) -> dict:
        """Whether the ensemble keeps GOAL_SHARE of onnxruntime's throughput at GOAL_CONCURRENCY, and whether
        onnxruntime beats PyTorch eager at every batch size measured."""
        rows = self.rows()
        row = next((r for r in rows if r["concurrency"] == GOAL_CONCURRENCY), None)
        if row is None:
            return {"measured": False}
        return {
            "measured": True,
            "share": row["ensemble_vs_onnxruntime"],
            "met": row["ensemble_vs_onnxruntime"] >= GOAL_SHARE,
            "onnxruntime_beats_pytorch": all(r["onnxruntime_vs_pytorch"] > 1.0 for r in rows),
        }


def _perf_analyzer_version(binary: Path, environment: dict[str, str]) -> str:
    done = subprocess.run(
        [str(binary), "--version"], env=environment, capture_output=True, text=True, timeout=30, check=False
    )
    match = re.search(r"Version (\S+)", done.stdout + done.stderr)
    return f"perf_analyzer {match.group(1)}" if match else "perf_analyzer (unknown version)"


def check_answers(
    requests: Sequence[ExportedRequest], expected: dict[tuple[bytes, bytes], np.ndarray], tolerance: float
) -> float:
    """Checks each answer's SCORES against onnxruntime's probabilities for the item the request carried.

    Returns:
        The largest absolute difference.

    Raises:
        PerfAnalyzerError: when a request carried no known item, an answer has no scores, or a difference
            exceeds `tolerance` (a benchmark of wrong answers means nothing).
    """
    worst = 0.0
    for number, request in enumerate(requests):
        key = (request.inputs.get(TRITON_INPUT_TEXT, b""), request.inputs.get(TRITON_INPUT_IMAGE, b""))
        if key not in expected:
            raise PerfAnalyzerError(f"request {number} carried no known item (text {key[0][:40]!r})")
        scores = request.outputs.get(TRITON_OUTPUT_SCORES)
        if scores is None:
            raise PerfAnalyzerError(f"request {number}: the answer has no {TRITON_OUTPUT_SCORES}")
        worst = max(worst, float(np.max(np.abs(np.asarray(scores, dtype=np.float64) - expected[key]))))
    if worst > tolerance:
        raise PerfAnalyzerError(
            f"the ensemble's scores differ from in-process onnxruntime by up to {worst:.2e} > {tolerance:.0e}"
        )
    return worst


def bench_serving(
    folder: Path,
    concurrencies: Sequence[int] = CONCURRENCIES,
    rounds: int = 4,
    perf_seconds: float = 5.0,
    cell_seconds: float = 1.5,
    item_count: int = 96,
    log: Callable[[str], None] = print,
) -> ServingBench:
    """Builds and exports the model, serves its repository in tritonserver (CPU config), and at each
    concurrency runs `rounds` rounds of: one `cell_seconds` cell of each in-process runner, then perf_analyzer
    sending about `perf_seconds` worth of requests (sized from the previous round, or from onnxruntime's rate
    in the first). Each level starts with an unmeasured perf_analyzer warm-up.

    Raises:
        PerfAnalyzerError: when perf_analyzer is missing or fails, or the ensemble answers wrongly.
        serving.triton_install.TritonNotAvailable: when there is no tritonserver.
    """
    import onnxruntime
    import torch

    from serving.triton_server import TritonServer

    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    config = RunConfig()
    folder.mkdir(parents=True, exist_ok=True)
    binary = find_perf_analyzer()
    environment = perf_analyzer_environment(folder / "perf_analyzer_libs")
    version = _perf_analyzer_version(binary, environment)
    log(f"serving bench: {binary} ({version})")

    items = load_items(item_count, folder / "items")
    modalities = {
        "text+image": sum(1 for item in items if item.text and item.image),
        "text only": sum(1 for item in items if item.text and not item.image),
        "image only": sum(1 for item in items if item.image and not item.text),
    }
    model_dir, onnx_path, repository = build_exported_model(folder / "export", config)
    log(f"serving bench: model exported ({time.perf_counter() - started:.0f} s)")
    baselines = InProcessBaselines(model_dir, onnx_path, items)
    expected = baselines.expected_scores()
    input_data = folder / "input_data.json"
    input_data.write_text(json.dumps(perf_input_data(items)), encoding="utf-8")
    levels: list[LevelResult] = []
    checked, worst = 0, 0.0
    server = TritonServer(repository, log_file=folder / "tritonserver.log")
    with server:
        log(f"serving bench: tritonserver ready in {server.load_seconds:.1f} s at {server.grpc_url}")

        def perf(concurrency: int, requests: int, name: str) -> tuple[float, str, list[ExportedRequest]]:
            export = folder / f"{name}.json"
            command = perf_analyzer_command(
                binary, server.grpc_url, input_data, concurrency, requests, folder / f"{name}.csv", export
            )
            report, output = run_perf_analyzer(command, environment, timeout_s=120 + 10 * perf_seconds)
            (folder / f"{name}.log").write_text(output, encoding="utf-8")
            exported = parse_profile_export(export.read_bytes())
            return parse_perf_csv(report)[concurrency], output, exported

        for concurrency in concurrencies:
            perf(concurrency, max(8, 2 * concurrency), f"warmup-c{concurrency}")
            level_rounds, latencies, models, rate = [], [], {}, 0.0
            for number in range(1, rounds + 1):
                cell = baselines.cell(concurrency, cell_seconds)
                if not rate:
                    rate = cell["onnxruntime"][0] / cell["onnxruntime"][1]
                requests = max(2 * concurrency, round(rate * perf_seconds))
                rate, output, exported = perf(concurrency, requests, f"perf-c{concurrency}-r{number}")
                worst = max(worst, check_answers(exported, expected, config.export.parity_tolerance))
                checked += len(exported)
                latencies += [request.latency_ms for request in exported]
                for name, stats in parse_composing_models(output).items():
                    models[name] = models[name] + stats if name in models else stats
                level_rounds.append(Round(cell, requests, rate))
                log(f"  c={concurrency} round {number}: ensemble {rate:.1f}/s, in process {cell}")
            levels.append(LevelResult(concurrency, level_rounds, latencies, models))
    return ServingBench(
        levels=levels,
        items=len(items),
        modalities=modalities,
        rounds=rounds,
        perf_seconds=perf_seconds,
        cell_seconds=cell_seconds,
        checked_answers=checked,
        max_abs_diff=worst,
        perf_analyzer=str(binary),
        perf_analyzer_version=version,
        onnxruntime_version=onnxruntime.__version__,
        torch_version=torch.__version__,
        torch_threads=torch.get_num_threads(),
        max_text_length=config.train.max_text_length,
        serving=asdict(config.serving),
        server_load_s=server.load_seconds or 0.0,
        seconds=time.perf_counter() - started,
        load_average=(load_before, os.getloadavg()[0]),
        cores=os.cpu_count() or 0,
    )
