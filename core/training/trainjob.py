"""Distributed training on a cluster: the train step submits a Kubeflow Trainer `TrainJob` through the Kubeflow SDK
(`kubeflow.trainer.TrainerClient`), follows it to the end, passes its logs on and fails with its reason.

The TrainJob runs the training image on `train.nodes` nodes with `train.workers` GPUs each, under the
`train.trainjob_runtime` runtime (Kubeflow Trainer's `torch-distributed` by default, which starts `torchrun` with
the node count, node rank and rendezvous address in `PET_*` variables). Each node runs `core.training.launch`,
the same entry point a local run starts under torchrun. What it needs travels by URI and secret, never in the
pipeline YAML: the run configuration (an environment variable), the dataset and split artifacts' URIs (read
through `core.common.storage`), the MLflow location and credentials (the pipeline's Kubernetes secret, by
reference), and an exchange URI beside the step's model artifact where rank 0 publishes the model folder and the
training summary for the step to fetch.
"""

from __future__ import annotations

import collections
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.common.constants import (
    MLFLOW_SECRET,
    MLFLOW_SECRET_KEYS,
    OFFLINE_ENVIRONMENT,
    TRAINING_CPU_PER_WORKER,
    TRAINING_GPU_IMAGE,
    TRAINING_MEMORY_GB_PER_WORKER,
)
from core.common.storage import fetch, publish
from core.config.run import RunConfig
from core.training.launch import EXCHANGE_MODEL, SUMMARY_FILE

TRAINER_CONTAINER = "node"  # the torch runtime's trainer container and replicated job
CONFIG_ENV = "TNS_RUN_CONFIG"
LABEL_MLFLOW_RUN = "tns-pipelines/mlflow-run-id"
LABEL_STEP = "tns-pipelines/step"
STATUS_RUNNING, STATUS_COMPLETE, STATUS_FAILED = "Running", "Complete", "Failed"
POLL_SECONDS = 10
LOG_TAIL_LINES = 40


@dataclass(frozen=True)
class TrainJobRequest:
    """What the step asks of the cluster."""

    config: RunConfig
    dataset_uri: str
    splits_uri: str
    exchange_uri: str  # rank 0 publishes the model folder and summary here
    mlflow_run_id: str = ""
    image: str = TRAINING_GPU_IMAGE


def launch_command(request: TrainJobRequest) -> list[str]:
    """The command every node runs: torchrun (node count, rank, rendezvous and processes per node from the
    runtime's `PET_*` variables) starting `core.training.launch`."""
    command = [
        "torchrun",
        "--max-restarts",
        str(request.config.train.max_restarts),
        "-m",
        "core.training.launch",
        "--dataset",
        request.dataset_uri,
        "--splits",
        request.splits_uri,
        "--config-env",
        CONFIG_ENV,
        "--publish",
        request.exchange_uri,
    ]
    if request.mlflow_run_id:
        command += ["--mlflow-run-id", request.mlflow_run_id]
    return command


def trainjob_parts(request: TrainJobRequest) -> tuple[Any, list[Any]]:
    """The SDK's trainer and options for the request: image, nodes, resources per node (one GPU per worker on
    a CUDA run), the environment, the command, labels, the MLflow secret by reference and a deadline."""
    from kubeflow.trainer import CustomTrainerContainer
    from kubeflow.trainer.options.kubernetes import (
        ActiveDeadlineSeconds,
        ContainerPatch,
        JobSetSpecPatch,
        JobSetTemplatePatch,
        JobSpecPatch,
        JobTemplatePatch,
        Labels,
        PodSpecPatch,
        PodTemplatePatch,
        ReplicatedJobPatch,
        RuntimePatch,
        TrainerCommand,
        TrainingRuntimeSpecPatch,
    )

    settings = request.config.train
    resources: dict[str, Any] = {
        "cpu": TRAINING_CPU_PER_WORKER * settings.workers,
        "memory": f"{TRAINING_MEMORY_GB_PER_WORKER * settings.workers}G",
    }
    if settings.device != "cpu":
        resources["gpu"] = settings.workers
    trainer = CustomTrainerContainer(
        image=request.image,
        num_nodes=settings.nodes,
        resources_per_node=resources,
        env={**OFFLINE_ENVIRONMENT, CONFIG_ENV: request.config.to_json()},
    )
    secret_env = [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": MLFLOW_SECRET, "key": key, "optional": True}}}
        for name, key in MLFLOW_SECRET_KEYS.items()
    ]
    container = ContainerPatch(name=TRAINER_CONTAINER, env=secret_env)
    pod = PodTemplatePatch(spec=PodSpecPatch(containers=[container]))
    job = ReplicatedJobPatch(
        name=TRAINER_CONTAINER, template=JobTemplatePatch(spec=JobSpecPatch(template=pod))
    )
    patch = TrainingRuntimeSpecPatch(
        template=JobSetTemplatePatch(spec=JobSetSpecPatch(replicated_jobs=[job]))
    )
    labels = {LABEL_STEP: "train"}
    if request.mlflow_run_id:
        labels[LABEL_MLFLOW_RUN] = request.mlflow_run_id
    options = [
        TrainerCommand(command=launch_command(request)),
        Labels(labels=labels),
        RuntimePatch(training_runtime_spec=patch),
        ActiveDeadlineSeconds(seconds=settings.trainjob_timeout_minutes * 60),
    ]
    return trainer, options


def run_trainjob(
    client: Any,
    request: TrainJobRequest,
    model_dir: str | Path,
    log: Callable[[str], None] | None = None,
    poll_seconds: int | None = None,
):
    """Submits the TrainJob, follows it to the end, and fetches the model into `model_dir`.

    Args:
        client: A `kubeflow.trainer.TrainerClient` (Kubernetes backend).
        request: What to train and where to publish.
        model_dir: Folder the step writes the model to.
        log: Receives each line of node 0's log (default: this process's stderr).
        poll_seconds: Seconds between status checks (default `POLL_SECONDS`).

    Returns:
        Rank 0's `TrainingResult`.

    Raises:
        RuntimeError: When the TrainJob fails or publishes no model (with its name, reason and last log lines).
    """
    from core.training.trainer import TrainingResult

    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    poll_seconds = poll_seconds or POLL_SECONDS
    settings = request.config.train
    runtime = client.get_runtime(settings.trainjob_runtime)
    trainer, options = trainjob_parts(request)
    name = client.train(runtime=runtime, trainer=trainer, options=options)
    log(f"TrainJob {name}: {settings.nodes} node(s) x {settings.workers} worker(s), runtime {runtime.name}")
    timeout = settings.trainjob_timeout_minutes * 60
    wanted = {STATUS_RUNNING, STATUS_COMPLETE, STATUS_FAILED}
    client.wait_for_job_status(name, status=wanted, timeout=timeout, polling_interval=poll_seconds)
    tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
    for line in client.get_job_logs(name, follow=True):
        log(line.rstrip("\n"))
        tail.append(line.rstrip("\n"))
    done = {STATUS_COMPLETE, STATUS_FAILED}
    job = client.wait_for_job_status(name, status=done, timeout=timeout, polling_interval=poll_seconds)
    if job.status == STATUS_FAILED:
        events = [f"{event.reason}: {event.message}" for event in client.get_job_events(name)]
        raise RuntimeError(
            f"TrainJob {name} failed"
            + (f"; its events: {'; '.join(events[-5:])}" if events else "")
            + "\nThe end of node 0's log:\n"
            + "\n".join(tail)
        )
    with tempfile.TemporaryDirectory(prefix="trainjob-") as work:
        exchange = fetch(request.exchange_uri, Path(work) / "exchange")
        summary = exchange / SUMMARY_FILE
        if not summary.is_file() or not (exchange / EXCHANGE_MODEL).is_dir():
            raise RuntimeError(
                f"TrainJob {name} completed but published no model and summary at {request.exchange_uri}"
            )
        publish(exchange / EXCHANGE_MODEL, str(model_dir))
        return TrainingResult(**json.loads(summary.read_text(encoding="utf-8")))
