"""Distributed training on this machine: `torchrun` starts `train.nodes x train.workers` processes of this module,
each runs `core.training.trainer.train_model` as one rank, and rank 0 writes the model folder and the summary.

    python -m torch.distributed.run --standalone --nproc-per-node N --max-restarts R -m core.training.launch \
        --dataset DIR --splits DIR --config FILE --model DIR --summary FILE [--checkpoint-dir DIR] \
        [--mlflow-run-id ID]

`train_with_torchrun` is what the train step calls: it runs the command above, passes each line of the ranks'
output on to its own stderr (the step's log) and, when a rank fails, raises with the last lines, where torchrun
names the failed rank and its error. With `--mlflow-run-id`, rank 0 logs each epoch's metrics to that run
(opened by the caller, which logs the rest). Rank 0 checkpoints every epoch into the work folder, and when a rank
dies torchrun restarts them all (`train.max_restarts` times), to go on from the last finished epoch.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from torch.distributed.elastic.multiprocessing.errors import record

from core.config.run import RunConfig

MODULE = "core.training.launch"
CONFIG_FILE = "run_config.json"
SUMMARY_FILE = "summary.json"
CHECKPOINT_DIR = "checkpoint"
EXCHANGE_MODEL = "model"  # what rank 0 publishes: the model folder and SUMMARY_FILE
ERROR_LINES = 60
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b.*")


def resolve_launcher(settings) -> str:
    """`train.launcher` with 'auto' resolved: a TrainJob when this process runs on Kubernetes, else torchrun."""
    from core.config.train import LAUNCHER_AUTO, LAUNCHER_TORCHRUN, LAUNCHER_TRAINJOB

    if settings.launcher != LAUNCHER_AUTO:
        return settings.launcher
    return LAUNCHER_TRAINJOB if os.environ.get("KUBERNETES_SERVICE_HOST") else LAUNCHER_TORCHRUN


def torchrun_command(processes: int, max_restarts: int, arguments: list[str]) -> list[str]:
    """The torchrun command line that starts `processes` ranks of this module on this machine."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(processes),
        "--max-restarts",
        str(max_restarts),
        "-m",
        MODULE,
        *arguments,
    ]


def root_cause(lines) -> str:
    """The last exception line of a failed rank's traceback (torchrun quotes it in its failure summary)."""
    for line in reversed(list(lines)):
        if EXCEPTION_LINE.match(line.strip()):
            return line.strip()
    return "no exception in the output (a rank may have been killed: see its exit code above)"


def train_with_torchrun(
    dataset_dir: str | Path,
    splits_dir: str | Path,
    config: RunConfig,
    model_dir: str | Path,
    work_dir: str | Path,
    mlflow_run_id: str = "",
):
    """Trains with `config.train.processes` ranks under torchrun on this machine; returns rank 0's
    `TrainingResult`.

    Raises:
        RuntimeError: When a rank fails (the message holds the end of the ranks' output).
    """
    from core.training.trainer import TrainingResult

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    config_file, summary_file = work_dir / CONFIG_FILE, work_dir / SUMMARY_FILE
    config_file.write_text(config.to_json(), encoding="utf-8")
    summary_file.unlink(missing_ok=True)
    arguments = [
        "--dataset",
        str(dataset_dir),
        "--splits",
        str(splits_dir),
        "--config",
        str(config_file),
        "--model",
        str(model_dir),
        "--summary",
        str(summary_file),
        "--checkpoint-dir",
        str(work_dir / CHECKPOINT_DIR),
    ]
    if mlflow_run_id:
        arguments += ["--mlflow-run-id", mlflow_run_id]
    command = torchrun_command(config.train.processes, config.train.max_restarts, arguments)
    tail: collections.deque[str] = collections.deque(maxlen=ERROR_LINES)
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as process:
        for line in process.stdout:
            sys.stderr.write(line)
            tail.append(line.rstrip("\n"))
    if process.returncode != 0 or not summary_file.is_file():
        raise RuntimeError(
            f"distributed training with {config.train.processes} processes (train.nodes x train.workers) "
            f"failed with exit code {process.returncode}: {root_cause(tail)}\nThe end of its output:\n"
            + "\n".join(tail)
        )
    return TrainingResult(**json.loads(summary_file.read_text(encoding="utf-8")))


@record  # a failing rank's traceback goes into torchrun's failure summary, and so into the step's error
def main(argv: list[str] | None = None) -> int:
    """One rank: trains, and on rank 0 writes the summary (and logs epochs to MLflow when asked)."""
    parser = argparse.ArgumentParser(description="One rank of a distributed training run (under torchrun).")
    parser.add_argument("--dataset", required=True, help="Dataset artifact: a folder or an object-store URI.")
    parser.add_argument("--splits", required=True, help="Split artifact: a folder or an object-store URI.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="Run configuration as a JSON file.")
    source.add_argument("--config-env", help="Environment variable holding the run configuration as JSON.")
    parser.add_argument("--model", type=Path, default=None, help="Model folder rank 0 writes.")
    parser.add_argument("--summary", type=Path, default=None, help="Training summary rank 0 writes.")
    parser.add_argument(
        "--publish", default="", help="URI where rank 0 also publishes the model folder and the summary."
    )
    parser.add_argument("--mlflow-run-id", default="", help="MLflow run rank 0 logs each epoch to.")
    parser.add_argument(
        "--checkpoint-dir", default=None, type=Path, help="Folder shared by the ranks for epoch checkpoints."
    )
    args = parser.parse_args(argv)

    from core.common.storage import fetch, publish
    from core.data.shards import fetch_rank_shards
    from core.training.distributed import world_from_environment
    from core.training.streaming import streams
    from core.training.trainer import train_model

    text = args.config.read_text(encoding="utf-8") if args.config else os.environ.get(args.config_env, "")
    if not text:
        parser.error(f"--config-env {args.config_env}: the variable is not set")
    config = RunConfig.from_json(text)
    world = world_from_environment()
    on_epoch_end = None
    if args.mlflow_run_id and world.is_main:
        import mlflow

        def on_epoch_end(epoch: int, metrics: dict[str, float]) -> None:
            mlflow.log_metrics(metrics, step=epoch, run_id=args.mlflow_run_id)

    with tempfile.TemporaryDirectory(prefix=f"rank{world.rank}-") as work:
        work = Path(work)
        splits = fetch(args.splits, work / "splits")
        if streams(splits, config):  # this rank's shards, not the whole dataset
            dataset = fetch_rank_shards(args.dataset, work / "dataset", world.rank, world.size)
        else:
            dataset = fetch(args.dataset, work / "dataset")
        model, summary = args.model or work / "model", args.summary or work / SUMMARY_FILE
        result = train_model(
            dataset,
            splits,
            config,
            model,
            on_epoch_end=on_epoch_end,
            world=world,
            checkpoint_dir=args.checkpoint_dir,
        )
        if world.is_main:
            partial = summary.with_name(summary.name + ".partial")
            partial.write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
            partial.replace(summary)
            if args.publish:
                exchange = work / "exchange"
                exchange.mkdir()
                shutil.copytree(model, exchange / EXCHANGE_MODEL)
                shutil.copyfile(summary, exchange / SUMMARY_FILE)
                publish(exchange, args.publish)
    return 0


if __name__ == "__main__":
    sys.exit(main())
