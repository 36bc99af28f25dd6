"""The serving benchmark's pure helpers: perf_analyzer input data, its reports, and the report's verdict."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from benchmarks.serving import (
    GOAL_CONCURRENCY,
    ExportedRequest,
    Item,
    LevelResult,
    ModelStats,
    PerfAnalyzerError,
    Round,
    ServingBench,
    bytes_element,
    check_answers,
    cycled_batches,
    link_libraries,
    parse_composing_models,
    parse_perf_csv,
    parse_profile_export,
    perf_analyzer_command,
    perf_input_data,
    request_key,
)

# As perf_analyzer 2.51 writes them (`-f report.csv`; stdout of the same run, shortened).
CSV_REPORT = """Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,\
Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,\
p95 latency,p99 latency
16,19.6528,12,7315,2,869,546467,7433,6,827412,959903,1035420,1051092
"""
STDOUT = """Request concurrency: 16
  Client:
    Request count: 354
    Throughput: 19.6528 infer/sec
  Server:
    Inference count: 354
    Execution count: 354
    Avg request latency: 85248 usec (overhead 0 usec + queue 6894 usec + compute 78531 usec)

  Composing models:
  classifier, version: 1
      Inference count: 354
      Execution count: 46
      Successful request count: 354
      Avg request latency: 768093 usec (overhead 4 usec + queue 242713 usec + compute input 60 usec + \
compute infer 525300 usec + compute output 300 usec)

  postprocess, version: 1
      Inference count: 354
      Execution count: 50
      Avg request latency: 3600 usec (overhead 5 usec + queue 2988 usec + compute input 46 usec + \
compute infer 742 usec + compute output 443 usec)

Inferences/Second vs. Client Average Batch Latency
Concurrency: 16, throughput: 19.6528 infer/sec, latency 827412 usec
"""


def test_bytes_element_is_length_prefixed_base64():
    element = bytes_element(b"\x89PNG\x00data")
    raw = base64.b64decode(element["b64"])
    assert raw[:4] == struct.pack("<I", 9) and raw[4:] == b"\x89PNG\x00data"
    assert base64.b64decode(bytes_element(b"")["b64"]) == b"\x00\x00\x00\x00"


def test_perf_input_data_sends_missing_modalities_as_empty_elements():
    items = [Item("héllo", b"png"), Item("text only", None), Item(None, b"img")]
    data = json.loads(json.dumps(perf_input_data(items)))  # it must be JSON as written
    steps = data["data"]
    assert len(steps) == 3 and all(set(step) == {"TEXT", "IMAGE"} for step in steps)
    decoded = [{name: base64.b64decode(step[name]["b64"])[4:] for name in step} for step in steps]
    assert decoded[0] == {"TEXT": "héllo".encode(), "IMAGE": b"png"}
    assert decoded[1]["IMAGE"] == b"" and decoded[2]["TEXT"] == b""


def test_parse_perf_csv_reads_throughput_per_concurrency():
    assert parse_perf_csv(CSV_REPORT) == {16: pytest.approx(19.6528)}


def test_parse_perf_csv_rejects_reports_without_rows_or_columns():
    with pytest.raises(PerfAnalyzerError, match="no measurement rows"):
        parse_perf_csv(CSV_REPORT.splitlines()[0] + "\n")
    with pytest.raises(PerfAnalyzerError, match="Inferences/Second"):
        parse_perf_csv("Concurrency,p50 latency\n1,3\n")


def test_parse_profile_export_keeps_raw_bytes_and_latencies():
    png = b"\x89PNG\r\n\x1a\n\x00\xff"
    # perf_analyzer writes BYTES inputs as raw bytes inside JSON strings, escaping only what JSON must.
    escaped = png.replace(b"\r", b"\\r").replace(b"\n", b"\\n").replace(b"\x1a", b"\\u001A")
    escaped = escaped.replace(b"\x00", b"\\u0000")
    document = (
        b'{"experiments":[{"experiment":{"mode":"concurrency","value":4},"requests":['
        b'{"timestamp":1000000,"request_inputs":{"TEXT":"'
        + "café".encode()
        + b'","IMAGE":"'
        + escaped
        + b'"},'
        b'"response_timestamps":[3500000],"response_outputs":[{"SCORES":[0.25,0.5]}]},'
        b'{"timestamp":2000000,"request_inputs":{"TEXT":"x","IMAGE":""},"response_timestamps":[]}'
        b']}],"version":"2.51.0"}'
    )
    (request,) = parse_profile_export(document)  # the request without a response is left out
    assert request.latency_ms == pytest.approx(2.5)
    assert request.inputs == {"TEXT": "café".encode(), "IMAGE": png}
    assert request.outputs == {"SCORES": [0.25, 0.5]}


def test_check_answers_matches_requests_to_items_by_their_bytes():
    items = [Item("a", b"img"), Item(None, b"img"), Item("a", None)]
    expected = {request_key(item): np.array([0.1 * n, 0.5], dtype=np.float32) for n, item in enumerate(items)}

    def answer(item: Item, scores: list[float]) -> ExportedRequest:
        text, image = request_key(item)
        return ExportedRequest(1.0, {"TEXT": text, "IMAGE": image}, {"SCORES": scores})

    answers = [answer(items[2], [0.2, 0.5]), answer(items[1], [0.1, 0.5 + 2e-6])]
    assert check_answers(answers, expected, 1e-4) == pytest.approx(2e-6, abs=1e-7)
    with pytest.raises(PerfAnalyzerError, match="differ"):
        check_answers([answer(items[0], [0.01, 0.5])], expected, 1e-4)
    with pytest.raises(PerfAnalyzerError, match="no known item"):
        check_answers([answer(Item("other", None), [0.0, 0.0])], expected, 1e-4)


def test_parse_composing_models_reads_batches_and_times():
    stats = parse_composing_models(STDOUT)
    assert set(stats) == {"classifier", "postprocess"}
    classifier = stats["classifier"]
    assert (classifier.inferences, classifier.executions) == (354, 46)
    assert classifier.batch_size == pytest.approx(354 / 46)
    assert classifier.queue_ms == pytest.approx(242.713)
    assert classifier.compute_ms == pytest.approx(0.06 + 525.3 + 0.3)
    assert parse_composing_models("no ensemble here") == {}


def test_cycled_batches_are_full_and_use_every_item():
    batches = cycled_batches(10, 4)
    assert all(len(batch) == 4 for batch in batches)
    assert sorted({i for batch in batches for i in batch}) == list(range(10))
    assert cycled_batches(96, 16) == [list(range(s, s + 16)) for s in range(0, 96, 16)]
    assert cycled_batches(3, 1) == [[0], [1], [2]]


def test_perf_analyzer_command_sends_a_fixed_number_of_requests_over_grpc(tmp_path: Path):
    command = perf_analyzer_command(
        Path("/bin/pa"),
        "127.0.0.1:9",
        tmp_path / "in.json",
        4,
        120,
        tmp_path / "out.csv",
        tmp_path / "p.json",
    )
    text = " ".join(command)
    assert "-m content_safety" in text and "-i grpc" in text and "-u 127.0.0.1:9" in text
    assert "--concurrency-range 4:4" in text and "--request-count 120" in text
    assert f"-f {tmp_path / 'out.csv'}" in text and f"--profile-export-file {tmp_path / 'p.json'}" in text


def test_link_libraries_links_renamed_wheel_libraries(tmp_path: Path):
    libs = tmp_path / "nvidia_pytriton.libs"
    libs.mkdir()
    (libs / "libb64-98cb6333.so.0d").write_bytes(b"b64")
    missing = link_libraries([libs], tmp_path / "links")
    assert (tmp_path / "links" / "libb64.so.0d").read_bytes() == b"b64"
    assert missing == ["libcudart.so.12"]
    assert link_libraries([libs], tmp_path / "links") == ["libcudart.so.12"]  # idempotent


def test_model_stats_pool_by_request_count():
    pooled = ModelStats(10, 2, 1.0, 4.0) + ModelStats(30, 3, 3.0, 8.0)
    assert (pooled.inferences, pooled.executions) == (40, 5) and pooled.batch_size == 8.0
    assert pooled.queue_ms == pytest.approx(2.5) and pooled.compute_ms == pytest.approx(7.0)


def _level(concurrency: int, ensemble: float, onnxruntime: float) -> LevelResult:
    """Two rounds: the ensemble at `ensemble` and 2 x `ensemble` req/s, onnxruntime likewise."""
    rounds = [
        Round({"onnxruntime": (round(onnxruntime * 1), 1.0), "onnxruntime_with_preprocessing": (9, 1.0),
               "pytorch": (5, 1.0)}, requests=round(ensemble * 10), throughput=ensemble),
        Round({"onnxruntime": (round(onnxruntime * 2), 1.0), "onnxruntime_with_preprocessing": (9, 1.0),
               "pytorch": (5, 1.0)}, requests=round(ensemble * 2 * 10), throughput=ensemble * 2),
    ]  # fmt: skip
    latencies = [float(n) for n in range(1, 101)]
    models = {name: ModelStats(40, 5, 1.0, 2.0) for name in ("preprocess", "classifier", "postprocess")}
    return LevelResult(concurrency, rounds, latencies, models)


def _bench(ensemble_16: float) -> ServingBench:
    return ServingBench(
        levels=[_level(1, 8.0, 10.0), _level(GOAL_CONCURRENCY, ensemble_16, 20.0)], items=4,
        modalities={"text+image": 4}, rounds=2, perf_seconds=5.0, cell_seconds=1.0, checked_answers=10,
        max_abs_diff=1e-7, perf_analyzer="pa", perf_analyzer_version="perf_analyzer 2.51.0",
        onnxruntime_version="1", torch_version="2", torch_threads=2, max_text_length=64, serving={},
        server_load_s=1.0, seconds=100.0, load_average=(1.0, 1.0), cores=2,
    )  # fmt: skip


def test_rows_pool_rounds_and_the_goal_is_the_share_at_concurrency_16():
    met = _bench(15.0)
    row = met.rows()[1]
    # Pooled: (150 + 300) requests over (10 + 10) s = 22.5/s; onnxruntime (20 + 40) items over 2 s = 30/s.
    assert row["ensemble"] == pytest.approx(22.5) and row["onnxruntime"] == pytest.approx(30.0)
    assert row["ensemble_vs_onnxruntime"] == pytest.approx(0.75)
    assert row["ensemble_vs_onnxruntime_range"] == pytest.approx((0.75, 0.75))
    assert row["onnxruntime_vs_pytorch"] == pytest.approx(6.0)
    assert row["p50_ms"] == pytest.approx(50.5) and row["p99_ms"] == pytest.approx(99.01)
    assert met.goal() == {"measured": True, "share": pytest.approx(0.75), "met": True,
                          "onnxruntime_beats_pytorch": True}  # fmt: skip
    assert _bench(13.0).goal()["met"] is False


def test_serving_section_states_the_verdict():
    from benchmarks.run import serving_section

    bench = _bench(13.0)
    bench.serving = {
        "max_batch_size": 64, "preferred_batch_sizes": [8], "max_queue_delay_microseconds": 2000,
        "cpu_instances": 1, "python_instances": 2,
    }  # fmt: skip
    text = serving_section(bench)
    assert "concurrency 16: not met** (65%)" in text
    assert "| 16 | 19.5 | 50 | 99 | 30.0 | 9.0 | 5.0 | **0.65** (0.65-0.65) | 2.17 | **6.00** |" in text
    assert "| 16 | classifier | 40 | 5 | 8.0 | 1.0 | 2.0 |" in text
    # 3 x 1 ms queued; onnxruntime at concurrency 1 pooled: 30 items over 2 s = 15/s, 66.7 ms per item.
    # Latencies 1..100 ms: mean 50.5 = 3 x 1 queued + 2 classifier + 2 x 2 pre/post + 41.5 the rest.
    assert "mean round trip of 50.5 ms went to: 3.0 ms queued" in text and "and 41.5 ms in gRPC" in text
    assert "onnxruntime takes 66.7 ms per item" in text
