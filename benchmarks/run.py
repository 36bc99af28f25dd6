"""Benchmarks: training throughput against a bare PyTorch loop, pipeline orchestration overhead against
calling the same step functions directly, and the Triton serving ensemble against in-process onnxruntime and
PyTorch eager (`benchmarks/serving.py`), the int8 CPU classifier and ensemble against fp32 with a plot
(`benchmarks/int8.py`), and the drift check against a plain scipy two-sample test
(`benchmarks/drift.py`), and hostile input at scale against the exact pass and ordinary text
(`benchmarks/hostile.py`), and training streamed from shards at two dataset sizes and against the in-memory
path (`benchmarks/streaming.py`). Every baseline is measured in the same run, and results are reported as ratios,
because shared machines are noisy.

    python -m benchmarks.run --out docs/benchmarks.md      (what `make bench` runs)
    python -m benchmarks.run --only serving                (one section, printed; add --out to write it)
    python -m benchmarks.run --only drift --out docs/benchmarks.md   (replaces that section, keeps the others)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from core.common.env import apply_offline_environment
from core.config.run import RunConfig

SECTIONS = ("training", "orchestration", "streaming", "serving", "int8", "drift", "hostile")
DEFAULT_OUT = Path("docs/benchmarks.md")


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} cores, {gpu}, "
        f"Python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )


def _prepare(folder: Path, rows: int) -> tuple[Path, Path]:
    from core.data.generate import GenerateSpec, generate_dataset
    from core.data.ingest import ingest_dataset
    from core.data.split import split_dataset

    generate_dataset(folder / "raw", GenerateSpec(rows=rows, seed=21))
    config = RunConfig()
    ingest_dataset(folder / "raw", folder / "dataset", config)
    split_dataset(folder / "dataset", folder / "splits", config.policies, config.split)
    return folder / "dataset", folder / "splits"


def bench_training(folder: Path, rows: int, epochs: int, repeats: int) -> dict:
    """Samples/s of `train_model`'s training loop vs a bare loop over the same model, data and batch size."""
    import torch

    from core.data.split import read_split_frame
    from core.training.encoding import encode_items
    from core.training.model import build_model, resolve_text_encoder
    from core.training.preprocessing import TOKENIZER_FILE, Preprocessor
    from core.training.trainer import _preprocessing_spec, train_model

    dataset, splits = _prepare(folder, rows)
    frame = read_split_frame(dataset, splits)
    # The bare loop trains the image encoder on pixels and has no lexical branch: the trainer is run with the same
    # model (cnn, no n-grams), so the ratio measures the loop's overhead only.
    config = RunConfig().with_overrides(
        **{
            "train.epochs": epochs,
            "train.early_stopping_patience": epochs + 1,
            "train.device": "cpu",
            "train.image_encoder": "cnn",
            "train.lexical_buckets": 0,
        }
    )
    settings = config.train

    pipeline_rates, bare_rates = [], []
    for repeat in range(repeats):
        result = train_model(dataset, frame, config, folder / f"model-{repeat}")
        pipeline_rates.append(result.train_samples_per_second)

        torch.manual_seed(settings.seed)
        text_folder = resolve_text_encoder(settings.text_encoder)
        spec = _preprocessing_spec(settings, text_folder, config.validation)
        preprocessor = Preprocessor(spec, text_folder / TOKENIZER_FILE)
        model, _ = build_model(
            config.policies,
            settings.text_encoder,
            settings.image_encoder,
            settings.hidden_dim,
            settings.dropout,
            spec,
        )
        model.text_encoder.requires_grad_(False)
        train_rows = frame[frame["split"] == "train"].reset_index(drop=True)
        items = encode_items(
            model, preprocessor, dataset, train_rows, config.policies, True, torch.device("cpu")
        )
        pixels = torch.from_numpy(preprocessor.normalize(items.pixels.numpy())) * items.has_image.view(
            -1, 1, 1, 1
        )
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate
        )
        loss_fn = torch.nn.BCEWithLogitsLoss()
        model.train()
        model.text_encoder.eval()
        seen, started = 0, time.perf_counter()
        for _ in range(epochs):
            order = torch.randperm(len(items))
            for start in range(0, len(order), settings.batch_size):
                index = order[start : start + settings.batch_size]
                logits = model.fuse(
                    items.text_features[index], model.image_encoder(pixels[index]), items.has_text[index],
                    items.has_image[index],
                )  # fmt: skip
                loss = loss_fn(logits, items.labels[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                seen += len(index)
        bare_rates.append(seen / (time.perf_counter() - started))
    pipeline, bare = statistics.median(pipeline_rates), statistics.median(bare_rates)
    return {"pipeline": pipeline, "bare": bare, "ratio": pipeline / bare, "rows": rows, "epochs": epochs}


def bench_orchestration(folder: Path, rows: int, epochs: int) -> dict:
    """Wall time of the KFP local pipeline vs the same step functions called directly in one process.

    Both run every step of a blessed run: ingest, validate, split, train, evaluate, gate, register, export,
    infra-validate in tritonserver, promote (the pipeline's per-policy ROC tasks only read a JSON file).
    """
    from kfp import local

    from components.data.executor import ingest_step, split_step
    from components.evaluation.executor import evaluation_step, gate_step
    from components.export.executor import export_step, infra_validation_step
    from components.registry.executor import promote_step, register_step
    from components.training.executor import training_step
    from components.validation.executor import validate_step
    from core.evaluation.gate import read_decision
    from pipelines.training import training_pipeline

    data = folder / "raw"
    from core.data.generate import GenerateSpec, generate_dataset

    generate_dataset(data, GenerateSpec(rows=rows, seed=22))
    config = RunConfig().with_overrides(
        **{
            "train.epochs": epochs,
            "train.early_stopping_patience": epochs + 1,
            "gate.min_roc_auc": {"default": 0.0},
        }
    )

    direct_root = folder / "direct"
    started = time.perf_counter()
    tracking = f"sqlite:///{direct_root / 'mlflow.db'}"
    direct_root.mkdir(parents=True)
    ingest_step(str(data), config, direct_root / "dataset")
    validate_step(direct_root / "dataset", config, direct_root / "validation.html")
    split_step(direct_root / "dataset", config, direct_root / "splits")
    run_id, _ = training_step(
        direct_root / "dataset", direct_root / "splits", config, direct_root / "model", tracking
    )
    evaluation_step(
        direct_root / "model", direct_root / "dataset", direct_root / "splits", config, direct_root / "evaluation",
        run_id, tracking,
    )  # fmt: skip
    gate_step(
        direct_root / "evaluation", direct_root / "dataset", direct_root / "splits", config, direct_root / "decision",
        tracking,
    )  # fmt: skip
    version = register_step(
        run_id, read_decision(direct_root / "decision"), config, {"benchmark": "direct"}, tracking
    ).version
    export_step(
        direct_root / "model", direct_root / "dataset", direct_root / "splits", direct_root / "evaluation", config,
        version, direct_root / "export", run_id, tracking,
    )  # fmt: skip
    validation = infra_validation_step(
        direct_root / "export", config, version, run_id, direct_root / "validation", tracking
    )
    promote_step(config.model_name, version, validation, tracking)
    direct = time.perf_counter() - started

    pipeline_root = folder / "pipeline"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root / "kfp"))
    started = time.perf_counter()
    training_pipeline(
        data_uri=str(data),
        config_json=config.to_json(),
        policies=list(config.policies),
        mlflow_tracking_uri=f"sqlite:///{pipeline_root / 'mlflow.db'}",
    )
    pipelined = time.perf_counter() - started
    return {
        "pipeline_s": pipelined,
        "direct_s": direct,
        "ratio": pipelined / direct,
        "overhead_s": pipelined - direct,
    }


def _ms(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def serving_section(bench) -> str:
    """The markdown section of the serving benchmark (`benchmarks.serving.ServingBench`)."""
    from benchmarks.serving import GOAL_CONCURRENCY, GOAL_SHARE

    rows = bench.rows()
    table = [
        "| concurrency | ensemble infer/s | p50 ms | p99 ms | onnxruntime in process, batch = concurrency "
        "(infer/s) | onnxruntime + preprocessing | PyTorch eager | **ensemble / onnxruntime** (range over "
        "rounds) | ensemble / (onnxruntime + preprocessing) | **onnxruntime / PyTorch** |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        low, high = row["ensemble_vs_onnxruntime_range"]
        table.append(
            f"| {row['concurrency']} | {row['ensemble']:.1f} | {_ms(row['p50_ms'])} | {_ms(row['p99_ms'])} | "
            f"{row['onnxruntime']:.1f} | {row['onnxruntime_with_preprocessing']:.1f} | {row['pytorch']:.1f} | "
            f"**{row['ensemble_vs_onnxruntime']:.2f}** ({low:.2f}-{high:.2f}) | "
            f"{row['ensemble_vs_onnxruntime_with_preprocessing']:.2f} | **{row['onnxruntime_vs_pytorch']:.2f}** |"
        )
    server = [
        "| concurrency | model | requests | executions | average batch | queue ms | compute ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for level in bench.levels:
        for name in ("preprocess", "classifier", "postprocess"):
            stats = level.models.get(name)
            if stats is not None:
                server.append(
                    f"| {level.concurrency} | {name} | {stats.inferences} | {stats.executions} | "
                    f"{stats.batch_size:.1f} | {_ms(stats.queue_ms)} | {_ms(stats.compute_ms)} |"
                )
    goal = bench.goal()
    if goal["measured"]:
        verdict = (
            f"**Goal: ensemble >= {GOAL_SHARE:.0%} of in-process onnxruntime throughput at concurrency "
            f"{GOAL_CONCURRENCY}: {'met' if goal['met'] else 'not met'}** ({goal['share']:.0%}). "
            f"**onnxruntime beats PyTorch eager at every batch size: {'yes' if goal['onnxruntime_beats_pytorch'] else 'no'}.**"
        )
    else:
        verdict = f"Goal not measured: concurrency {GOAL_CONCURRENCY} was not part of this run."
    modalities = ", ".join(f"{count} {name}" for name, count in bench.modalities.items())
    requests = ", ".join(f"{row['requests']} at concurrency {row['concurrency']}" for row in rows)
    serving = bench.serving
    stubs = 2 * serving["python_instances"] + serving["cpu_instances"]
    threads = serving.get("cpu_threads") or max(1, bench.cores // serving["cpu_instances"])
    breakdown = ""
    first = bench.levels[0] if bench.levels else None
    if (
        first is not None
        and first.concurrency == 1
        and {"preprocess", "classifier", "postprocess"} <= set(first.models)
    ):
        steps = [first.models[name] for name in ("preprocess", "classifier", "postprocess")]
        queued = sum(step.queue_ms for step in steps)
        pre_post = steps[0].compute_ms + steps[2].compute_ms
        mean = statistics.fmean(first.latencies_ms) if first.latencies_ms else 0.0
        rest = mean - queued - steps[1].compute_ms - pre_post
        breakdown = (
            f"At concurrency 1, where nothing batches, a request's mean round trip of {mean:.1f} ms went to: "
            f"{queued:.1f} ms queued in the three models (each dynamic batcher waits up to "
            f"{serving['max_queue_delay_microseconds'] / 1000:g} ms for company), {steps[1].compute_ms:.1f} ms "
            f"in the classifier (in process, onnxruntime takes {1000 / first.in_process('onnxruntime'):.1f} ms "
            f"per item), {pre_post:.1f} ms in pre- and postprocessing"
            + (
                f", and {rest:.1f} ms in gRPC, the ensemble scheduler and the client.\n"
                if rest > 0
                else ".\n"
            )
        )
    return f"""## Serving: Triton `content_safety` ensemble vs in-process onnxruntime and PyTorch eager

{bench.items} items of the embedded synthetic dataset ({modalities}; 64x64 PNGs, captions up to
{bench.max_text_length} tokens), one item per request as clients send them, loaded by
{bench.perf_analyzer_version} over gRPC with *concurrency* synchronous requests in flight. Each level runs
{bench.rounds} rounds of: a {bench.cell_seconds:g} s cell of each in-process runner in turn, then one
perf_analyzer run of a fixed number of requests (about {bench.perf_seconds:g} s worth); each figure is pooled
over the rounds (items or requests over seconds), so both sides of a ratio sample the same minutes of a shared
machine. Requests measured: {requests}, after an unmeasured warm-up at each level. Every one of the
{bench.checked_answers} answers was checked against in-process onnxruntime on the same item: largest score
difference {bench.max_abs_diff:.1e}. The machine's 1-minute load average was {bench.load_average[0]:.1f} before
and {bench.load_average[1]:.1f} after, on {bench.cores} cores: other work moves every figure, the ratios less.

{chr(10).join(table)}

{verdict}

What each number includes:

- **ensemble infer/s, p50, p99**: the full round trip as perf_analyzer's client threads see it: gRPC over
  loopback, the ensemble scheduler, `preprocess` (python backend: PNG decode and resize, tokenizing, the
  training `Preprocessor`), `classifier`, `postprocess` (python backend: thresholds, decision JSON) and the
  response. Throughput is perf_analyzer's (requests over its measurement window); p50 and p99 are over every
  request of the level, from perf_analyzer's per-request timestamps (`--profile-export-file`). Each
  python-backend model runs in its own stub process and every tensor crosses shared memory. On this machine
  `classifier` runs on the project's python stand-in for Triton's onnxruntime backend
  (`serving/backends/onnxruntime_model.py`: onnxruntime in a python backend stub, with the intra- and
  inter-op threads `configs/cpu.pbtxt` sets: {threads} and 1), because
  the tritonserver of the `nvidia-pytriton` wheel has no C++ onnxruntime backend; a Triton image would use the
  C++ one. Batching settings are the defaults of `RunConfig().serving`: max batch {serving["max_batch_size"]},
  classifier preferred batch sizes {serving["preferred_batch_sizes"]}, queue delay
  {serving["max_queue_delay_microseconds"]} us, {serving["cpu_instances"]} classifier instance(s) and
  {serving["python_instances"]} instances of each python model. perf_analyzer, tritonserver and its {stubs}
  stub processes share the machine's {bench.cores} cores; the in-process runners have them to themselves.
- **onnxruntime in process** ("the limit"): `InferenceSession.run` on the exported `model.onnx`, onnxruntime
  {bench.onnxruntime_version} with its default threads (one intra-op thread per physical core), called from
  one thread on tensors preprocessed once up front by `Preprocessor.serving_inputs` (texts padded to
  {bench.max_text_length} tokens, as served), in batches of exactly *concurrency* items: the largest batch the
  server's dynamic batcher can form with that many requests in flight (the table below shows the batches it
  actually formed). No preprocessing, serialization, IPC or postprocessing.
- **onnxruntime + preprocessing**: the same, with `serving_inputs` on the raw items (PNG decode, resize,
  tokenizing) inside the timed loop; the ensemble does this work too, in `preprocess`.
- **PyTorch eager**: the saved model (`load_model` + `probability_model`, as exported) under
  `torch.no_grad()` on the same preprocessed batches, torch {bench.torch_version} with its default
  {bench.torch_threads} threads. Its OpenMP threads spin-wait while waiting for each other, which costs more
  when other processes keep the cores busy (`tests/conftest.py` pins tests to one thread for that reason), so
  on a loaded machine the onnxruntime / PyTorch ratio may come out larger than on a quiet one.
- **range over rounds**: the lowest and highest ensemble / onnxruntime ratio of the single rounds, a measure
  of the noise.

Server-side averages per request from the same perf_analyzer runs (the composing models' statistics):

{chr(10).join(server)}

{breakdown}
The model is built as the default config builds it (all-MiniLM-L6-v2 text encoder, EfficientNet-Lite0 image
encoder at 224 pixels, default policies) with an untrained head: weights do not change speed. tritonserver loaded the repository in
{bench.server_load_s:.1f} s; the whole serving benchmark took {bench.seconds:.0f} s.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"Markdown report to write (default {DEFAULT_OUT}; with --only, printed unless --out is given).",
    )
    parser.add_argument(
        "--only", choices=SECTIONS, action="append", help="Run only this benchmark (repeatable)."
    )
    parser.add_argument("--rows", type=int, default=2000, help="Rows of the training-throughput dataset.")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pipeline-rows", type=int, default=400)
    parser.add_argument(
        "--concurrency",
        type=int,
        action="append",
        help="Serving: concurrency levels for perf_analyzer (repeatable; default 1, 4 and 16).",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="Serving: rounds per concurrency level (in process, then ensemble).",
    )
    parser.add_argument(
        "--perf-seconds",
        type=float,
        default=5.0,
        help="Serving: about how long each perf_analyzer run lasts (its request count is sized to it).",
    )
    parser.add_argument(
        "--cell-seconds",
        type=float,
        default=1.5,
        help="Serving: seconds of each in-process runner (onnxruntime, + preprocessing, PyTorch) per round.",
    )
    parser.add_argument(
        "--drift-rows",
        type=int,
        action="append",
        help="Drift: rows per log window (repeatable; default 100000 and 1000000).",
    )
    args = parser.parse_args(argv)
    apply_offline_environment()
    sections = args.only or list(SECTIONS)
    out = args.out if args.out is not None else (None if args.only else DEFAULT_OUT)
    command = (
        "make bench  (python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:]) + ")"
    )
    training = orchestration = streaming = serving = int8 = drift = hostile = None
    with tempfile.TemporaryDirectory(prefix="tns-bench-") as tmp:
        folder = Path(tmp)
        if "serving" in sections:  # first: it fails fast when tritonserver or perf_analyzer is missing
            from benchmarks.serving import CONCURRENCIES, bench_serving

            serving = bench_serving(
                folder / "serving",
                concurrencies=args.concurrency or CONCURRENCIES,
                rounds=args.rounds,
                perf_seconds=args.perf_seconds,
                cell_seconds=args.cell_seconds,
                log=lambda line: print(line, file=sys.stderr, flush=True),
            )
        if "int8" in sections:
            from benchmarks.int8 import bench_int8

            int8 = bench_int8(folder / "int8", log=lambda line: print(line, file=sys.stderr, flush=True))
        if "training" in sections:
            (folder / "training").mkdir()
            training = bench_training(folder / "training", args.rows, args.epochs, args.repeats)
        if "orchestration" in sections:
            (folder / "orchestration").mkdir()
            orchestration = bench_orchestration(folder / "orchestration", args.pipeline_rows, 2)
        if "streaming" in sections:
            from benchmarks.streaming import bench_streaming

            (folder / "streaming").mkdir()
            streaming = bench_streaming(
                folder / "streaming", log=lambda line: print(line, file=sys.stderr, flush=True)
            )
        if "drift" in sections:
            from benchmarks.drift import SIZES, bench_drift

            drift = bench_drift(
                folder / "drift",
                args.drift_rows or SIZES,
                log=lambda line: print(line, file=sys.stderr, flush=True),
            )
        if "hostile" in sections:
            from benchmarks.hostile import bench_hostile

            hostile = bench_hostile(
                folder / "hostile", log=lambda line: print(line, file=sys.stderr, flush=True)
            )
    measured = f"Measured {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} by `{command}`\non {_machine()}."
    parts = [
        f"""# Benchmarks

{measured}

Each comparison runs its baseline in the same process and run, and the ratio is the figure to read: absolute
numbers move with the load on a shared machine.
"""
    ]
    if training is not None:
        parts.append(f"""## Training throughput (train split of the embedded dataset, {training["rows"]} rows, \
{training["epochs"]} epochs, median of {args.repeats})

| loop | samples/s |
|---|---|
| `train_model` (modality dropout, class weights, one-cycle LR, progress bar; validation excluded) | \
{training["pipeline"]:.0f} |
| bare PyTorch loop over the same model, cached features and batch size | {training["bare"]:.0f} |
| **ratio** (train_model / bare) | **{training["ratio"]:.2f}** |

`train_model` keeps images as `uint8` (1 byte per pixel, so large datasets fit in memory) and normalises each
batch on the fly, applies modality dropout and steps a scheduler and a gradient scaler; the bare loop normalises
every image once up front. The gap is that per-batch work.
""")
    if orchestration is not None:
        parts.append(f"""## Orchestration overhead (whole training pipeline through export, infra validation and promotion, \
{args.pipeline_rows} rows, 2 epochs)

| how | wall time |
|---|---|
| KFP local runner (`SubprocessRunner`, one process per task) | {orchestration["pipeline_s"]:.1f} s |
| the same step functions called directly in one process | {orchestration["direct_s"]:.1f} s |
| **ratio** (pipeline / direct) | **{orchestration["ratio"]:.2f}** (+{orchestration["overhead_s"]:.1f} s) |

The pipeline's extra time is process start-up and imports per task (torch, MLflow, Great Expectations) plus
artifact copies; it is constant per run, so it matters for tiny runs and vanishes for real training.
""")
    if streaming is not None:
        from benchmarks.streaming import streaming_section

        parts.append(streaming_section(streaming))
    if serving is not None:
        parts.append(serving_section(serving))
    if int8 is not None:
        from benchmarks.int8 import PLOT_FILE, int8_section, plot

        plot(int8, (out.parent if out is not None else Path(".")) / PLOT_FILE)
        parts.append(int8_section(int8))
    if drift is not None:
        from benchmarks.drift import drift_section

        parts.append(drift_section(drift))
    if hostile is not None:
        from benchmarks.hostile import hostile_section

        parts.append(hostile_section(hostile))
    report = "\n".join(parts)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        if args.only and out.is_file():  # one section: replace it in the file, keep the others
            from benchmarks.drift import merge_report

            report = merge_report(out.read_text(encoding="utf-8"), report, note=f"*{measured}*")
        out.write_text(report, encoding="utf-8")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
