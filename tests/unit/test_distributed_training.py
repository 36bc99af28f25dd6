"""Data-parallel training: two ranks under torchrun (gloo on CPU) against one process, on the tiny dataset.

With dropout and modality dropout off and a frozen image encoder (the small CNN's batch norms see each rank's
half batch: PyTorch has no SyncBatchNorm on CPU), two ranks that each take half of every global batch must train the same
model as one process taking whole batches (DDP averages the gradients, and each rank's loss is divided by its
share of the global batch's annotated cells); after every step both ranks must hold identical weights.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from ddp_worker import even_train_rows
from safetensors.torch import load_file

from core.common.constants import MODEL_WEIGHTS
from core.config.run import RunConfig
from core.data.split import read_split_frame
from core.training.distributed import World, shard, world_from_environment
from core.training.trainer import train_model

WORKER = Path(__file__).with_name("ddp_worker.py")


def _config(text_encoder: Path, image_encoder: Path, **overrides) -> RunConfig:
    values = {
        "train.text_encoder": str(text_encoder),
        "train.image_encoder": str(image_encoder),
        "train.lexical_buckets": 4096,
        "train.hidden_dim": 16,
        "train.epochs": 2,
        "train.batch_size": 16,
        "train.dropout": 0.0,
        "train.modality_dropout": 0.0,
        "train.num_threads": 1,
        **overrides,
    }
    return RunConfig().with_overrides(**values)


def _torchrun(root: Path, name: str, config_file: Path, dataset, *extra: str, restarts: int = 0):
    """Runs the worker as two ranks; returns torchrun's output and both ranks' records."""
    dataset_dir, splits_dir = dataset
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "--max-restarts",
        str(restarts),
        str(WORKER),
        str(dataset_dir),
        str(splits_dir),
        str(config_file),
        str(root / name),
        str(root / f"{name}-record"),
        *extra,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = [
        json.loads((root / f"{name}-record.{rank}.json").read_text(encoding="utf-8")) for rank in (0, 1)
    ]
    return done.stdout + done.stderr, records


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_dataset, tiny_text_encoder, tiny_vit_encoder) -> dict:
    """The same configuration trained by two ranks under torchrun and by one process."""
    dataset_dir, splits_dir = tiny_dataset
    root = tmp_path_factory.mktemp("ddp")
    config = _config(tiny_text_encoder, tiny_vit_encoder)
    config_file = root / "config.json"
    config_file.write_text(config.to_json(), encoding="utf-8")
    _, records = _torchrun(root, "two_ranks", config_file, tiny_dataset)
    frame = even_train_rows(read_split_frame(dataset_dir, splits_dir))
    single = train_model(dataset_dir, frame, config, root / "one_process", world=World())
    return {"root": root, "config_file": config_file, "records": records, "single": single.to_dict()}


def test_both_ranks_hold_identical_weights_after_each_step(runs):
    first, second = runs["records"]
    assert [r["world_size"] for r in (first, second)] == [2, 2]
    assert len(first["steps"]) == len(second["steps"]) == runs["single"]["steps"] > 2
    for record in (first, second):
        assert all(step["max_difference_to_rank_0"] == 0.0 for step in record["steps"]), record["steps"]
    assert first["steps"][-1]["moved_since_step_1"] > 1e-3  # the weights did train


def test_two_ranks_train_the_model_one_process_trains(runs):
    two = load_file(str(runs["root"] / "two_ranks" / MODEL_WEIGHTS))
    one = load_file(str(runs["root"] / "one_process" / MODEL_WEIGHTS))
    assert two.keys() == one.keys()
    worst = max(float((two[name].double() - one[name].double()).abs().max()) for name in one)
    assert worst < 1e-4, worst
    result, single = runs["records"][0]["result"], runs["single"]
    assert result["best_epoch"] == single["best_epoch"]
    for mine, theirs in zip(result["history"], single["history"], strict=True):
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], abs=1e-5)
        assert mine["validation_macro_roc_auc"] == pytest.approx(theirs["validation_macro_roc_auc"], abs=1e-6)


def test_rank_0_alone_fits_the_calibration_and_writes_the_model(runs):
    first, second = runs["records"]
    assert set(first["result"]["calibration"]) == set(RunConfig().policies)
    assert second["result"]["calibration"] == {}


def test_a_killed_worker_resumes_from_the_last_checkpoint(runs, tiny_dataset):
    """Rank 1 dies after step 13 (in epoch 2 of 10 steps each); torchrun restarts both ranks, which go on from
    the checkpoint of epoch 1 and end with the weights of the run that was never stopped."""
    root = runs["root"]
    output, records = _torchrun(
        root, "resumed", runs["config_file"], tiny_dataset, str(root / "checkpoint"), "13", restarts=1
    )
    assert "resuming after epoch 1" in output
    steps_per_epoch = runs["single"]["steps"] // 2
    for record in records:  # the restarted attempt began with epoch 2's first step
        assert record["steps"][0]["step"] == steps_per_epoch + 1
        assert all(step["max_difference_to_rank_0"] == 0.0 for step in record["steps"])

    def timeless(history: list[dict]) -> list[dict]:
        return [{k: v for k, v in entry.items() if k != "epoch_seconds"} for entry in history]

    # epoch 1 comes from the checkpoint, epoch 2 was trained again: both as in the run never stopped
    assert timeless(records[0]["result"]["history"]) == timeless(runs["records"][0]["result"]["history"])
    resumed = load_file(str(root / "resumed" / MODEL_WEIGHTS))
    never_stopped = load_file(str(root / "two_ranks" / MODEL_WEIGHTS))
    worst = max(float((resumed[k].double() - never_stopped[k].double()).abs().max()) for k in never_stopped)
    assert worst == 0.0, worst
    assert (root / "checkpoint" / "state.safetensors").is_file()


def test_a_checkpoint_of_another_run_is_refused(
    runs, tiny_dataset, tiny_text_encoder, tiny_vit_encoder, tmp_path
):
    checkpoint = runs["root"] / "checkpoint"
    assert (checkpoint / "state.json").is_file()  # written by the resumed run
    dataset_dir, splits_dir = tiny_dataset
    frame = even_train_rows(read_split_frame(dataset_dir, splits_dir))
    other = _config(tiny_text_encoder, tiny_vit_encoder, **{"train.learning_rate": 0.01})
    with pytest.raises(ValueError, match="another configuration or other training rows"):
        train_model(dataset_dir, frame, other, tmp_path / "model", world=World(), checkpoint_dir=checkpoint)
    assert not (tmp_path / "model").exists()


def test_two_ranks_streaming_uneven_shards_stay_in_step(
    sharded_tiny_dataset, tiny_text_encoder, tiny_vit_encoder, tmp_path
):
    """Each rank reads its own shards (three and two: about 60% and 40% of the train rows); both take the
    smaller rank's step count every epoch, so neither waits on a collective the other never calls."""
    from core.data.shards import read_index, read_shard_ids

    assert len(read_index(sharded_tiny_dataset[0]).shards) == 5
    config = _config(tiny_text_encoder, tiny_vit_encoder, **{"train.stream_above_rows": 0})
    config_file = tmp_path / "config.json"
    config_file.write_text(config.to_json(), encoding="utf-8")
    _, records = _torchrun(tmp_path, "streamed", config_file, sharded_tiny_dataset)
    first, second = records
    assert len(first["steps"]) == len(second["steps"]) == first["result"]["steps"] > 2
    for record in records:
        assert all(step["max_difference_to_rank_0"] == 0.0 for step in record["steps"]), record["steps"]
    assert first["steps"][-1]["moved_since_step_1"] > 1e-3
    # every epoch: the batches of 8 (16 global) of the rank with fewer train rows (shards 1 and 3)
    index, splits = read_index(sharded_tiny_dataset[0]), _splits(sharded_tiny_dataset[1])
    per_rank = [
        sum(
            splits.get(i) == "train"
            for n in range(rank, 5, 2)
            for i in read_shard_ids(sharded_tiny_dataset[0], index.shards[n])
        )
        for rank in (0, 1)
    ]
    assert per_rank[0] > per_rank[1] > 0
    assert first["result"]["steps"] == config.train.epochs * math.ceil(per_rank[1] / 8)
    assert (tmp_path / "streamed" / MODEL_WEIGHTS).is_file()


def _splits(splits_dir: Path) -> dict[str, str]:
    import pandas as pd

    table = pd.read_parquet(splits_dir / "splits.parquet")
    return dict(zip(table["id"].astype(str), table["split"], strict=True))


def test_shards_cover_every_row_once():
    for count in (0, 1, 5, 8):
        for size in (1, 2, 3):
            blocks = [shard(count, World(rank=r, local_rank=r, size=size)) for r in range(size)]
            rows = [row for block in blocks for row in range(count)[block]]
            assert rows == list(range(count))


def test_world_comes_from_torchrun_variables():
    assert world_from_environment({}) == World()
    assert world_from_environment({"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"}) == World(1, 1, 2)
    with pytest.raises(RuntimeError, match="not within WORLD_SIZE"):
        world_from_environment({"RANK": "2", "LOCAL_RANK": "0", "WORLD_SIZE": "2"})


def test_batch_size_must_split_over_the_processes():
    from core.config.fields import ConfigError

    with pytest.raises(ConfigError, match="multiple of 3"):
        RunConfig().with_overrides(**{"train.batch_size": 64, "train.workers": 3})
    assert RunConfig().with_overrides(**{"train.workers": 2, "train.nodes": 2}).train.processes == 4
