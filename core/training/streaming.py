"""Training that streams a dataset's shards (`core.data.shards`) instead of holding the dataset in memory.

Each rank reads only its own shards (`rank_shards`). `DataLoader` worker processes read them a row group at a
time and prepare their train and validation rows (tokenize, decode images); the rank encodes what they hand
over and writes one cache file per shard (safetensors: cached features of a frozen encoder, token ids or uint8
pixels of a trained one), so that an epoch reads small arrays instead of decoding images again. An epoch takes
the rank's cache files in an order, and their rows in orders, drawn from (seed, epoch, rank), one file at a
time. A rank's step count is known before the epoch and every rank takes the smallest over the ranks, so
uneven shards never leave a rank waiting for a collective that does not come. The split of each row is looked up by a 64-bit hash of its id
(`SplitLookup`), not by holding the ids, so memory stays flat in the dataset size.
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import math
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from core.common.constants import COL_ID, COL_SPLIT, COL_TEXT, SPLIT_TRAIN, SPLIT_VALIDATION, SPLITS_TABLE
from core.common.storage import replace_file
from core.config.run import RunConfig
from core.data.ingest import read_fingerprint
from core.data.shards import COL_IMAGE_BYTES, ShardIndex, rank_shards, read_index, read_shard_batches
from core.training.calibration import held_for_calibration
from core.training.distributed import World, all_reduce_sum, gather_rows
from core.training.encoding import (
    BatchRunner,
    EncodedItems,
    concat_fields,
    encode_prepared,
    label_tensors,
    prepare_inputs,
)
from core.training.lexical import document_frequency
from core.training.model import FusionClassifier
from core.training.preprocessing import Preprocessor
from core.training.sources import CALIBRATION, VALIDATION, Scored

OTHER, TRAIN, EARLY_STOPPING, CALIBRATING = -1, 0, 1, 2  # split codes in the cache (`split` tensor)
PART_CODES = {SPLIT_TRAIN: TRAIN, VALIDATION: EARLY_STOPPING, CALIBRATION: CALIBRATING}
SPLIT_FIELD = "split"
CHUNK_ROWS = 64  # rows a DataLoader worker prepares at once (64 decoded 224-pixel images: about 10 MB)
Unit = tuple[int, int, int]  # (shard, first row, row step): see `core.data.shards.rank_shards`


def id_hash(value: str) -> int:
    """A 64-bit hash of an item id (as a signed int64, what numpy sorts)."""
    return int.from_bytes(
        hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest(), "little", signed=True
    )


class SplitLookup:
    """A code per item id (its split, or the part of validation), held as sorted 64-bit id hashes and one byte
    per row rather than as the ids."""

    def __init__(self, hashes: np.ndarray, codes: np.ndarray) -> None:
        order = np.argsort(hashes)
        self.hashes, self.codes = hashes[order], codes[order].astype(np.int8)

    @classmethod
    def of(cls, ids: list[str], code: int) -> SplitLookup:
        """`code` for each of `ids`, OTHER for every other id."""
        hashes = np.fromiter((id_hash(str(i)) for i in ids), dtype=np.int64, count=len(ids))
        return cls(hashes, np.full(len(ids), code, dtype=np.int8))

    @classmethod
    def from_splits(cls, splits_dir: str | Path, calibration_share: float) -> SplitLookup:
        """TRAIN, EARLY_STOPPING or CALIBRATING (validation cut as `held_for_calibration` cuts it) for the ids of
        a split assignment, OTHER for test rows and unknown ids; read 8,192 rows at a time."""
        import pyarrow.parquet as pq

        hashes, codes = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int8)]
        with pq.ParquetFile(Path(splits_dir) / SPLITS_TABLE) as handle:
            for batch in handle.iter_batches(batch_size=8192, columns=[COL_ID, COL_SPLIT]):
                ids = [str(i) for i in batch.column(COL_ID).to_pylist()]
                splits = np.asarray(batch.column(COL_SPLIT).to_pylist(), dtype=object)
                code = np.full(len(ids), OTHER, dtype=np.int8)
                code[splits == SPLIT_TRAIN] = TRAIN
                validation = splits == SPLIT_VALIDATION
                held = held_for_calibration(ids, calibration_share)
                code[validation & ~held] = EARLY_STOPPING
                code[validation & held] = CALIBRATING
                hashes.append(np.fromiter((id_hash(i) for i in ids), dtype=np.int64, count=len(ids)))
                codes.append(code)
        return cls(np.concatenate(hashes), np.concatenate(codes))

    def codes_of(self, ids: list[str]) -> np.ndarray:
        """The codes of `ids` (OTHER for ids it does not hold)."""
        keys = np.fromiter((id_hash(i) for i in ids), dtype=np.int64, count=len(ids))
        if not len(self.hashes):
            return np.full(len(ids), OTHER, dtype=np.int8)
        at = np.minimum(np.searchsorted(self.hashes, keys), len(self.hashes) - 1)
        return np.where(self.hashes[at] == keys, self.codes[at], OTHER).astype(np.int8)


def streams(splits_dir: str | Path, config: RunConfig) -> bool:
    """Whether a run streams its rows from the shards: more train and validation rows than
    `train.stream_above_rows`."""
    return training_rows(splits_dir) > config.train.stream_above_rows


def training_rows(splits_dir: str | Path) -> int:
    """Train and validation rows of a split assignment (what `train.stream_above_rows` is compared with)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    splits = pq.read_table(Path(splits_dir) / SPLITS_TABLE, columns=[COL_SPLIT])[COL_SPLIT]
    wanted = pa.array([SPLIT_TRAIN, SPLIT_VALIDATION], type=pa.string())
    return int(pc.sum(pc.is_in(splits, value_set=wanted)).as_py() or 0)


def _items(tensors: dict[str, torch.Tensor]) -> EncodedItems:
    values = {k: v for k, v in tensors.items() if k != SPLIT_FIELD}
    return EncodedItems(ids=[""] * len(values["labels"]), **values)


def _cache_name(unit: Unit) -> str:
    number, first, step = unit
    return f"part-{number:05d}-{first}-{step}.safetensors"


class ShardRows(IterableDataset):
    """The train and validation rows of shard units, read a row group at a time and prepared (tokenized, images
    decoded) `CHUNK_ROWS` at a time; each DataLoader worker takes a fixed share of the units. Every unit ends
    with a chunk marked `last` (the only one when the unit holds no such row)."""

    def __init__(
        self,
        dataset_dir: Path,
        index: ShardIndex,
        units: list[Unit],
        lookup: SplitLookup,
        policies: list[str],
        preprocessor: Preprocessor,
    ) -> None:
        super().__init__()
        self.dataset_dir, self.index, self.units = dataset_dir, index, units
        self.lookup, self.policies, self.preprocessor = lookup, list(policies), preprocessor

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        present = [p for p in self.policies if p in self.index.policies]
        for unit in self.units[worker::workers]:
            number, first, step = unit
            position = 0
            for rows in read_shard_batches(
                self.dataset_dir, self.index.shards[number], [COL_ID, COL_TEXT, COL_IMAGE_BYTES, *present]
            ):
                positions = np.arange(position, position + len(rows))
                position += len(rows)
                rows = rows[(positions - first) % step == 0]
                code = self.lookup.codes_of([str(i) for i in rows[COL_ID]])
                rows, code = rows[code != OTHER].reset_index(drop=True), code[code != OTHER]
                for start in range(0, len(rows), CHUNK_ROWS):
                    part = rows.iloc[start : start + CHUNK_ROWS]
                    texts = [t if isinstance(t, str) else None for t in part[COL_TEXT]]
                    images = [b if isinstance(b, bytes) and b else None for b in part[COL_IMAGE_BYTES]]
                    yield {
                        "unit": unit,
                        "last": False,
                        "ids": [str(i) for i in part[COL_ID]],
                        "prepared": prepare_inputs(self.preprocessor, texts, images),
                        "labels": part.reindex(columns=self.policies).to_numpy(dtype=np.float32),
                        SPLIT_FIELD: code[start : start + CHUNK_ROWS],
                    }
            yield {"unit": unit, "last": True, "ids": [], SPLIT_FIELD: np.zeros(0, dtype=np.int8)}


def read_chunks(reader: ShardRows, workers: int) -> Iterator[dict]:
    """The chunks of `reader`, prepared by `workers` DataLoader processes (none: in this process).

    The workers are forks of this process: the objects it holds stay in pages they share, unless a worker's
    garbage collector walks them and copies them page by page (memory that grows with how long the workers
    live: a fifth more for a 200,000-row dataset than for 20,000). Frozen while they live, it leaves them be."""
    gc.freeze()
    try:
        yield from DataLoader(reader, batch_size=None, num_workers=workers)
    finally:
        gc.unfreeze()


def stream_rows(
    dataset_dir: Path, ids: Sequence[str], policies: list[str], preprocessor: Preprocessor, workers: int
) -> Iterator[tuple[list[str], dict[str, np.ndarray]]]:
    """(ids, prepared inputs) of the rows with `ids`, `CHUNK_ROWS` at a time in shard order, read from the
    dataset's shards by `workers` DataLoader processes."""
    index = read_index(dataset_dir)
    units = [(number, 0, 1) for number in range(len(index.shards))]
    reader = ShardRows(dataset_dir, index, units, SplitLookup.of(list(ids), TRAIN), policies, preprocessor)
    for chunk in read_chunks(reader, min(workers, len(units))):
        if len(chunk[SPLIT_FIELD]):
            yield list(chunk["ids"]), {k: np.asarray(v) for k, v in chunk["prepared"].items()}


class ShardBatches:
    """One rank's train batches of one epoch, from its cache files (read in this process: they are small)."""

    def __init__(self, files: list[Path], local_batch: int, seed: int, epoch: int, rank: int, pad_id: int):
        self.files, self.local_batch, self.pad_id = files, local_batch, pad_id
        self.seed, self.epoch, self.rank = seed, epoch, rank

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, self.epoch, self.rank])
        carry: dict[str, torch.Tensor] | None = None
        for number in rng.permutation(len(self.files)):
            tensors = load_file(self.files[number])
            rows = np.flatnonzero(tensors[SPLIT_FIELD].numpy() == TRAIN)
            if not len(rows):
                continue
            index = torch.from_numpy(rows[rng.permutation(len(rows))])
            block = {k: v[index] for k, v in tensors.items()}
            carry = block if carry is None else concat_fields([carry, block], self.pad_id)
            while len(carry[SPLIT_FIELD]) >= self.local_batch:
                yield {k: v[: self.local_batch] for k, v in carry.items()}
                carry = {k: v[self.local_batch :] for k, v in carry.items()}
        if carry is not None and len(carry[SPLIT_FIELD]):
            yield carry


class StreamedData:
    """The rows of a dataset's shards, encoded once per shard into cache files and streamed from them."""

    def __init__(
        self,
        dataset_dir: str | Path,
        splits_dir: str | Path,
        config: RunConfig,
        world: World,
        device: torch.device,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.dataset_dir, self.config, self.world, self.device = Path(dataset_dir), config, world, device
        self.index = read_index(dataset_dir)
        self.lookup = SplitLookup.from_splits(splits_dir, config.train.calibration_share)
        digest = hashlib.sha256(config.to_json().encode("utf-8"))
        digest.update(read_fingerprint(dataset_dir)["fingerprint"].encode("utf-8"))
        digest.update((Path(splits_dir) / SPLITS_TABLE).read_bytes())
        self.fingerprint = digest.hexdigest()
        self._temporary = None
        if cache_dir is None:
            self._temporary = tempfile.TemporaryDirectory(prefix="tns-features-")
            cache_dir = self._temporary.name
        self.cache_dir = Path(cache_dir) / f"features-{self.fingerprint[:16]}-rank{world.rank}"
        self.files: list[Path] = []
        self.train_rows = 0
        self.pad_id = 0
        self._stats: dict[str, torch.Tensor] = {}

    def encode(
        self, model: FusionClassifier, preprocessor: Preprocessor, freeze_text: bool, freeze_image: bool
    ) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.pad_id = preprocessor.spec.pad_token_id
        units = rank_shards(self.index, self.world.rank, self.world.size)
        missing = [unit for unit in units if not (self.cache_dir / _cache_name(unit)).is_file()]
        if missing:  # a restarted rank keeps the cache files it wrote before
            policies = list(self.config.policies)
            reader = ShardRows(self.dataset_dir, self.index, missing, self.lookup, policies, preprocessor)
            workers = min(self.config.train.loader_workers, len(missing))
            for unit, tensors in self._encoded(
                reader, workers, model, preprocessor, freeze_text, freeze_image
            ):
                contiguous = {k: v.contiguous() for k, v in tensors.items()}
                replace_file(
                    self.cache_dir / _cache_name(unit),
                    lambda staging, values=contiguous: save_file(values, str(staging)),
                )
        self.files = [self.cache_dir / _cache_name(unit) for unit in units]
        self._count(max(preprocessor.spec.ngram_buckets, 1))

    def _encoded(
        self,
        reader: ShardRows,
        workers: int,
        model: FusionClassifier,
        preprocessor: Preprocessor,
        freeze_text: bool,
        freeze_image: bool,
    ) -> Iterator[tuple[Unit, dict[str, torch.Tensor]]]:
        """Each unit's encoded rows, when its last chunk has come (workers interleave their units' chunks)."""
        partial: dict[Unit, list[dict[str, torch.Tensor]]] = {}
        for chunk in read_chunks(reader, workers):
            unit = tuple(int(v) for v in chunk["unit"])
            parts = partial.setdefault(unit, [])
            if len(chunk[SPLIT_FIELD]):
                prepared = {k: np.asarray(v) for k, v in chunk["prepared"].items()}
                tensors = encode_prepared(
                    model, preprocessor, prepared, freeze_text, freeze_image, self.device
                )
                tensors.update(label_tensors(np.asarray(chunk["labels"]), len(chunk[SPLIT_FIELD])))
                parts.append({**tensors, SPLIT_FIELD: torch.as_tensor(chunk[SPLIT_FIELD])})
            if bool(chunk["last"]):
                del partial[unit]
                empty = {SPLIT_FIELD: torch.zeros(0, dtype=torch.int8)}
                yield unit, concat_fields(parts, self.pad_id) if parts else empty

    def _count(self, buckets: int) -> None:
        """Rows of each part, train labels and n-gram document frequencies of this rank's cache files, summed
        over the ranks."""
        policies = len(self.config.policies)
        counts = torch.zeros(3 + 2 * policies, dtype=torch.float64)  # parts, positives, annotated
        documents, frequency = 0, np.zeros(buckets, dtype=np.float64)
        for path in self.files:
            tensors = load_file(path)
            code = tensors[SPLIT_FIELD]
            if not len(code):  # no train or validation row in this shard
                continue
            for value in (TRAIN, EARLY_STOPPING, CALIBRATING):
                counts[value] += int((code == value).sum())
            train = code == TRAIN
            labels, mask = tensors["labels"][train].double(), tensors["label_mask"][train].double()
            counts[3 : 3 + policies] += (labels * mask).sum(0)
            counts[3 + policies :] += mask.sum(0)
            shard_documents, shard_frequency = document_frequency(
                tensors["ngram_ids"][train].numpy(), buckets
            )
            documents, frequency = documents + shard_documents, frequency + shard_frequency
        self.train_rows = int(counts[TRAIN])
        totals = all_reduce_sum(
            torch.cat([counts, torch.tensor([float(documents)])]).to(self.device), self.world
        )
        totals = totals.cpu()
        self._stats = {
            "positives": totals[3 : 3 + policies].float(),
            "annotated": totals[3 + policies : 3 + 2 * policies].float(),
            "documents": totals[-1:],
            "frequency": all_reduce_sum(torch.from_numpy(frequency).to(self.device), self.world).cpu(),
        }
        train, early, calibrating = (int(v) for v in totals[:3].tolist())
        if not train or not early or not calibrating:
            raise ValueError(
                f"need train rows and validation rows for both early stopping and calibration, got {train}, "
                f"{early} and {calibrating}; raise split.validation_fraction or check the splits"
            )

    def label_counts(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._stats["positives"], self._stats["annotated"]

    def document_frequency(self, buckets: int) -> tuple[int, np.ndarray]:
        return int(self._stats["documents"].item()), self._stats["frequency"].numpy()

    def steps_per_epoch(self, local_batch: int) -> int:
        batches = torch.tensor([[math.ceil(self.train_rows / local_batch)]], dtype=torch.int64)
        steps = int(gather_rows(batches, self.world, self.device).min())
        if steps == 0:
            raise ValueError(
                f"a training process has no train rows in its shards ({len(self.index.shards)} shards for "
                f"{self.world.size} processes); ingest with a smaller data.shard_rows or use fewer processes"
            )
        return steps

    def batches(self, epoch: int, local_batch: int) -> Iterator[EncodedItems]:
        steps = self.steps_per_epoch(local_batch)
        stream = ShardBatches(
            self.files, local_batch, self.config.train.seed, epoch, self.world.rank, self.pad_id
        )
        for tensors in itertools.islice(stream, steps):
            yield _items(tensors)

    def scored(self, runner: BatchRunner, part: str) -> Scored:
        code, blocks = PART_CODES[part], []
        for path in self.files:
            tensors = load_file(path)
            if not len(tensors[SPLIT_FIELD]):
                continue
            rows = torch.from_numpy(np.flatnonzero(tensors[SPLIT_FIELD].numpy() == code))
            if len(rows):
                items = _items({k: v[rows] for k, v in tensors.items()})
                blocks.append((runner.all_logits(items, calibrated=False), items.labels, items.label_mask))
        width = len(self.config.policies)
        logits, labels, mask = (
            torch.cat([b[i] for b in blocks]) if blocks else torch.zeros(0, width) for i in range(3)
        )
        return Scored(*(gather_rows(t, self.world, self.device) for t in (logits, labels, mask)))

    def close(self, finished: bool) -> None:
        if self._temporary is not None:
            self._temporary.cleanup()
            self._temporary = None
        elif finished:  # beside the checkpoints: kept for a restarted rank until the run is done
            shutil.rmtree(self.cache_dir, ignore_errors=True)
