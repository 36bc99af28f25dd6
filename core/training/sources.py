"""What the trainer trains on, behind one interface: items encoded and held in memory (`InMemoryData`, fastest
for what fits) or streamed from the dataset's shards (`core.training.streaming.StreamedData`).

Every method that returns a global figure (label counts, n-gram document frequencies, scores) is a collective:
every rank calls it and gets the same answer.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DistributedSampler

from core.common.constants import COL_ID, COL_SPLIT, SPLIT_TRAIN, SPLIT_VALIDATION
from core.config.run import RunConfig
from core.training.calibration import split_for_calibration
from core.training.checkpoint import fingerprint
from core.training.distributed import World, gather_rows, shard
from core.training.encoding import BatchRunner, EncodedItems, encode_items, gather_items
from core.training.lexical import document_frequency
from core.training.model import FusionClassifier
from core.training.preprocessing import Preprocessor

VALIDATION, CALIBRATION = "validation", "calibration"  # the early-stopping and the calibration part


@dataclass
class Scored:
    """Uncalibrated logits of a part of the validation split, with its labels and annotation mask."""

    logits: torch.Tensor
    labels: torch.Tensor
    label_mask: torch.Tensor


class TrainingData(Protocol):
    """The rows a run trains, early-stops and calibrates on."""

    fingerprint: str  # what a checkpoint of the run must match: configuration and training rows

    def encode(
        self, model: FusionClassifier, preprocessor: Preprocessor, freeze_text: bool, freeze_image: bool
    ) -> None:
        """Preprocesses the rows once (cached encoder features where an encoder is frozen)."""

    def label_counts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Positives and annotated rows per policy of the train split."""

    def document_frequency(self, buckets: int) -> tuple[int, np.ndarray]:
        """Train rows with n-grams, and train rows per n-gram bucket."""

    def steps_per_epoch(self, local_batch: int) -> int:
        """Optimizer steps of an epoch, the same on every rank."""

    def batches(self, epoch: int, local_batch: int) -> Iterator[EncodedItems]:
        """This rank's train batches of `epoch`, `steps_per_epoch` of them, in an order drawn from the seed."""

    def scored(self, runner: BatchRunner, part: str) -> Scored:
        """Logits of every row of `part` (VALIDATION or CALIBRATION), each rank scoring its rows."""

    def close(self, finished: bool) -> None:
        """Frees what the data holds; cached features stay for a restart unless the run `finished`."""


class InMemoryData:
    """Rows encoded once and held in memory: each rank encodes its block of the rows, the blocks are gathered,
    and a `DistributedSampler` seeded per epoch deals the train rows to the ranks."""

    def __init__(
        self,
        dataset_dir: str | Path,
        frame: pd.DataFrame,
        config: RunConfig,
        world: World,
        device: torch.device,
    ) -> None:
        self.dataset_dir, self.config, self.world, self.device = Path(dataset_dir), config, world, device
        train = frame[frame[COL_SPLIT] == SPLIT_TRAIN].reset_index(drop=True)
        validation = frame[frame[COL_SPLIT] == SPLIT_VALIDATION].reset_index(drop=True)
        if train.empty or validation.empty:
            raise ValueError(f"need train and validation rows, got {len(train)} and {len(validation)}")
        self.rows = {SPLIT_TRAIN: train}
        self.rows[VALIDATION], self.rows[CALIBRATION] = split_for_calibration(
            validation, config.train.calibration_share
        )
        self.fingerprint = fingerprint(config.to_json(), [str(i) for i in train[COL_ID]])
        self.items: dict[str, EncodedItems] = {}
        self.sampler: DistributedSampler | None = None

    def encode(
        self, model: FusionClassifier, preprocessor: Preprocessor, freeze_text: bool, freeze_image: bool
    ) -> None:
        policies = list(self.config.policies)
        for part, rows in self.rows.items():
            block = encode_items(
                model,
                preprocessor,
                self.dataset_dir,
                rows.iloc[shard(len(rows), self.world)],
                policies,
                freeze_text,
                self.device,
                freeze_image,
                self.config.validation.image_max_bytes,
            )
            self.items[part] = gather_items(block, [str(i) for i in rows[COL_ID]], self.world, self.device)
        self.sampler = DistributedSampler(
            self.items[SPLIT_TRAIN],
            num_replicas=self.world.size,
            rank=self.world.rank,
            shuffle=True,
            seed=self.config.train.seed,
        )

    def label_counts(self) -> tuple[torch.Tensor, torch.Tensor]:
        train = self.items[SPLIT_TRAIN]
        return (train.labels * train.label_mask).sum(0), train.label_mask.sum(0)

    def document_frequency(self, buckets: int) -> tuple[int, np.ndarray]:
        return document_frequency(self.items[SPLIT_TRAIN].ngram_ids.numpy(), buckets)

    def steps_per_epoch(self, local_batch: int) -> int:
        return math.ceil(len(self.sampler) / local_batch)

    def batches(self, epoch: int, local_batch: int) -> Iterator[EncodedItems]:
        self.sampler.set_epoch(epoch)
        order = torch.tensor(list(self.sampler), dtype=torch.int64)
        for start in range(0, len(order), local_batch):
            yield self.items[SPLIT_TRAIN].take(order[start : start + local_batch])

    def scored(self, runner: BatchRunner, part: str) -> Scored:
        items = self.items[part]
        block = shard(len(items), self.world)
        logits = runner.all_logits(items, calibrated=False, rows=range(block.start, block.stop))
        return Scored(gather_rows(logits, self.world, self.device), items.labels, items.label_mask)

    def close(self, finished: bool) -> None:
        self.items.clear()
