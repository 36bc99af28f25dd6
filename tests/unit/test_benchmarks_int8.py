"""The int8 benchmark's attribution of profiled nodes, its report and its plot (the measuring needs
tritonserver and perf_analyzer: `make bench`)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.int8 import PARTS, EnsembleLevel, Int8Bench, int8_section, part_of, plot


def test_profiled_nodes_are_attributed_to_their_part():
    assert (
        part_of("/text_encoder/backbone/encoder/layer.0/attention/self/query/MatMul_kernel_time", "MatMul")
        == PARTS[0]
    )
    assert part_of("/image_encoder/_blocks.3/_depthwise_conv/Conv_kernel_time", "Conv") == PARTS[1]
    assert part_of("reorder_token_18_kernel_time", "ReorderInput") == PARTS[1]  # NCHWc layout for the convs
    assert part_of("/head/head.0/Gemm_kernel_time", "Gemm") == PARTS[2]


def _level(concurrency: int, fp32: float, int8: float) -> EnsembleLevel:
    level = EnsembleLevel(concurrency)
    level.requests = {"fp32": round(fp32 * 10), "int8": round(int8 * 10)}
    level.seconds = {"fp32": 10.0, "int8": 10.0}
    level.latencies_ms = {"fp32": [10.0 * concurrency] * 99 + [30.0 * concurrency], "int8": [8.0] * 100}
    level.in_process = {"fp32": [20 * concurrency, 1.0], "int8": [30 * concurrency, 1.0]}
    return level


def _bench() -> Int8Bench:
    return Int8Bench(
        split_ms={
            "fp32": {PARTS[0]: 150.0, PARTS[1]: 140.0, PARTS[2]: 10.0, "wall": 310.0},
            "int8": {PARTS[0]: 100.0, PARTS[1]: 140.0, PARTS[2]: 10.0, "wall": 255.0},
        },
        quantized_nodes=30,
        sizes_mb={"fp32": 127.0, "int8": 100.0},
        levels=[_level(1, 20.0, 22.0), _level(4, 30.0, 33.0), _level(16, 40.0, 48.0)],
        checked={"fp32": 300, "int8": 300},
        exact_max_diff={"fp32": 1e-7, "int8": 2e-7},
        batched_max_diff={"fp32": 1e-7, "int8": 3e-3},
        intra_op_threads=2,
        rounds=3,
        onnxruntime_version="1.32.0",
        load_average=(0.5, 2.0),
        cores=2,
        seconds=300.0,
    )


def test_the_section_reports_the_split_the_bound_and_both_goals():
    bench = _bench()
    assert bench.in_process_ratio() == 1.5 and bench.ensemble_ratio() == 1.2
    text = int8_section(bench)
    assert "| text encoder | 150 | 50% | 100 | 1.50x |" in text
    assert "at most\n**2.00x**" in text or "at most **2.00x**" in text.replace("\n", " ")
    assert "int8 / fp32 = 1.50 (goal 1.8: not met)" in text
    assert "int8 / fp32 = 1.20 (goal 1.5: not met)" in text
    assert "| 16 | 40.0 | 48.0 | **1.20** |" in text
    assert "](serving-cpu.png)" in text


def test_the_plot_is_a_png(tmp_path: Path):
    path = plot(_bench(), tmp_path / "docs" / "serving-cpu.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
