"""Training checkpoints: what a restarted run needs to go on from the last finished epoch as if never stopped.

Rank 0 writes one at the end of every epoch, atomically (a staging folder renamed over the last one), into the
checkpoint folder the ranks share: tensors in `state.safetensors` (the model's state, the best epoch's state, the
optimizer's moments), the rest in `state.json` (progress, the learning-rate schedule, the optimizer's
hyperparameters, the mixed-precision scaler) with a fingerprint of the configuration and the training rows, so
that a checkpoint of another run is refused rather than resumed. Random streams are seeded per (seed, epoch,
rank) by the trainer, so nothing random needs saving. No pickle: tensors load through safetensors.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"
MODEL_PREFIX = "model."
BEST_PREFIX = "best."
OPTIMIZER_PREFIX = "optimizer."


@dataclass
class Progress:
    """Where training stands after an epoch, and the best epoch so far."""

    epoch: int = 0
    steps: int = 0
    samples: int = 0
    train_seconds: float = 0.0
    best_score: float = float("-inf")
    best_epoch: int = 0
    best_loss: float = float("inf")
    patience: int = 0
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)


def fingerprint(config_json: str, train_ids: list[str]) -> str:
    """What a checkpoint must have been written for: the run configuration and the training rows."""
    digest = hashlib.sha256(config_json.encode("utf-8"))
    for item in train_ids:
        digest.update(b"\x1f" + item.encode("utf-8"))
    return digest.hexdigest()


def save_checkpoint(
    folder: str | Path,
    run_fingerprint: str,
    progress: Progress,
    model: torch.nn.Module,
    best_state: dict[str, torch.Tensor] | None,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
) -> None:
    """Writes the checkpoint to `folder` (replacing the one there) through a staging folder beside it."""
    folder = Path(folder)
    tensors = {MODEL_PREFIX + k: v for k, v in model.state_dict().items()}
    tensors.update({BEST_PREFIX + k: v for k, v in (best_state or {}).items()})
    optimizer_state = optimizer.state_dict()
    for index, values in optimizer_state["state"].items():
        for name, value in values.items():
            tensors[f"{OPTIMIZER_PREFIX}{index}.{name}"] = torch.as_tensor(value)
    record = {
        "fingerprint": run_fingerprint,
        "progress": asdict(progress),
        "has_best": best_state is not None,
        "optimizer_param_groups": optimizer_state["param_groups"],
        "scheduler": _plain(scheduler.state_dict()),
        "scaler": scaler.state_dict(),
    }
    staging = folder.with_name(folder.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(staging / STATE_TENSORS))
    (staging / STATE_JSON).write_text(json.dumps(record, indent=1), encoding="utf-8")
    previous = folder.with_name(folder.name + ".previous")
    shutil.rmtree(previous, ignore_errors=True)
    if folder.exists():
        folder.rename(previous)
    staging.rename(folder)
    shutil.rmtree(previous, ignore_errors=True)


def load_checkpoint(
    folder: str | Path,
    run_fingerprint: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
) -> tuple[Progress, dict[str, torch.Tensor] | None] | None:
    """Restores the checkpoint in `folder` into the given objects; returns its progress and best state, or None
    when the folder holds no checkpoint.

    Raises:
        ValueError: When the checkpoint was written for another configuration or other training rows.
    """
    folder = Path(folder)
    if not (folder / STATE_JSON).is_file():
        return None
    record = json.loads((folder / STATE_JSON).read_text(encoding="utf-8"))
    if record.get("fingerprint") != run_fingerprint:
        raise ValueError(
            f"the checkpoint in {folder} was written for another configuration or other training rows; remove "
            "it (or give this run its own checkpoint folder) to train from the start"
        )
    device = next(model.parameters()).device
    tensors = load_file(str(folder / STATE_TENSORS), device=str(device))
    model.load_state_dict(_with_prefix(tensors, MODEL_PREFIX))
    best = _with_prefix(tensors, BEST_PREFIX) if record["has_best"] else None
    moments: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in _with_prefix(tensors, OPTIMIZER_PREFIX).items():
        index, name = key.split(".", 1)
        moments.setdefault(int(index), {})[name] = value.cpu() if name == "step" else value
    optimizer.load_state_dict({"state": moments, "param_groups": record["optimizer_param_groups"]})
    scheduler.load_state_dict(record["scheduler"])
    scaler.load_state_dict(record["scaler"])
    return Progress(**record["progress"]), best


def _with_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}


def _plain(value: Any) -> Any:
    """A scheduler's state as JSON values (tensors and tuples become lists)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return value
