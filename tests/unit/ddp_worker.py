"""One rank of the two-rank training test (`test_distributed_training.py`), started by torchrun.

Trains on the given dataset and, after every optimizer step, gathers each rank's trainable weights and records
how far they are from rank 0's (they must be identical: DDP all-reduces the gradients) and from the weights
before the first step (they must move). Each rank writes its record to `<record>.<rank>.json`.

With `train.stream_above_rows` 0 in the configuration the ranks stream the dataset's shards.

With a checkpoint folder the run checkpoints every epoch and resumes from it; with a step to die at, rank 1 of
the first attempt kills itself (SIGKILL) after that step, so that torchrun (`--max-restarts`) restarts the ranks.

    python -m torch.distributed.run --standalone --nproc-per-node 2 [--max-restarts 1] tests/unit/ddp_worker.py \
        DATASET SPLITS CONFIG_JSON MODEL_DIR RECORD [CHECKPOINT_DIR [DIE_AFTER_STEP]]
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pandas as pd
import torch

from core.common.constants import COL_SPLIT, SPLIT_TRAIN
from core.config.run import RunConfig
from core.data.split import read_split_frame
from core.training.distributed import gather_rows, world_from_environment
from core.training.trainer import train_model


def even_train_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame without its last train row when the train split is odd: two ranks' shards of an odd split
    repeat one item (the distributed sampler evens them out), which one process would not see."""
    train = frame.index[frame[COL_SPLIT] == SPLIT_TRAIN]
    return frame.drop(index=train[-1:]) if len(train) % 2 else frame


def _trainable(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).double() for p in model.parameters() if p.requires_grad])


def main(
    dataset: str,
    splits: str,
    config_file: str,
    model_dir: str,
    record: str,
    checkpoint_dir: str | None = None,
    die_after_step: str = "0",
) -> int:
    torch.set_num_threads(1)
    world = world_from_environment()
    config = RunConfig.from_json(Path(config_file).read_text(encoding="utf-8"))
    steps: list[dict] = []
    initial: list[torch.Tensor] = []

    first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"

    def on_step_end(step: int, model: torch.nn.Module) -> None:
        if first_attempt and world.rank == 1 and step == int(die_after_step):
            os.kill(os.getpid(), signal.SIGKILL)  # a worker lost mid-epoch: no clean-up, no message
        weights = _trainable(model)
        if not initial:
            initial.append(weights.clone())
        every_rank = gather_rows(weights.unsqueeze(0), world, torch.device("cpu"))
        steps.append(
            {
                "step": step,
                "max_difference_to_rank_0": float((every_rank - every_rank[0]).abs().max()),
                "moved_since_step_1": float((weights - initial[0]).abs().max()),
            }
        )

    # streaming (train.stream_above_rows 0) reads the shards and the splits folder; else the rows in memory
    rows = (
        splits if config.train.stream_above_rows == 0 else even_train_rows(read_split_frame(dataset, splits))
    )
    result = train_model(
        dataset, rows, config, model_dir, on_step_end=on_step_end, world=world, checkpoint_dir=checkpoint_dir
    )
    out = Path(f"{record}.{world.rank}.json")
    out.write_text(
        json.dumps(
            {"rank": world.rank, "world_size": world.size, "steps": steps, "result": result.to_dict()}
        ),
        encoding="utf-8",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:8]))
