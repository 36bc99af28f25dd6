"""Data-parallel training across processes: the process group `torchrun` sets up, and the few collectives the
trainer needs.

The trainer is ordinary PyTorch DDP: started by `torchrun` (locally, or by Kubeflow Trainer's torch runtime on a
cluster) each process reads `RANK`, `LOCAL_RANK` and `WORLD_SIZE` from its environment and joins a process group
(gloo on CPU, NCCL on CUDA). Started without `torchrun`, a process is a world of one and every collective here
is a no-op, so the single-process path needs no branches.

Rows are sharded in contiguous blocks (`shard`): block `r` of `n` rows goes to rank `r`, so gathering the blocks
in rank order gives the rows back in their original order (`gather_rows`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

BACKEND_CPU = "gloo"
BACKEND_CUDA = "nccl"
WORLD_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE")
STORE_TIMEOUT = timedelta(minutes=30)  # torch's default: ranks may take long to load their data


@dataclass(frozen=True)
class World:
    """Where this process stands among the training processes."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that logs, checkpoints and writes the model."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world_from_environment(environ: dict[str, str] | None = None) -> World:
    """The ranks `torchrun` exported (a world of one without them)."""
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" not in environ:
        return World()
    try:
        rank, local_rank, size = (int(environ.get(name, "0")) for name in WORLD_ENV)
    except ValueError as error:
        raise RuntimeError(f"RANK, LOCAL_RANK and WORLD_SIZE must be integers: {error}") from error
    if size < 1 or not 0 <= rank < size:
        raise RuntimeError(f"RANK {rank} is not within WORLD_SIZE {size}")
    return World(rank=rank, local_rank=local_rank, size=size)


def join(world: World, device: torch.device) -> bool:
    """Joins the process group of a world of several (gloo on CPU, NCCL on CUDA); nothing for a world of one
    or a process that already joined. True when this call joined (and `leave` is then the caller's).

    The rendezvous address comes from the environment (`MASTER_ADDR`/`MASTER_PORT`, set by torchrun)."""
    if not world.distributed or dist.is_initialized():
        return False
    backend = BACKEND_CUDA if device.type == "cuda" else BACKEND_CPU
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend=backend, store=_attempt_store(world), rank=world.rank, world_size=world.size
    )
    return True


def _attempt_store(world: World) -> dist.Store:
    """The rendezvous store at `MASTER_ADDR:MASTER_PORT`, under a prefix of torchrun's restart count.

    When torchrun restarts the ranks (`--max-restarts`) they meet again in the same store, where the first
    attempt's addresses are still written: without a prefix of their own the restarted ranks dial processes
    that are gone."""
    try:
        host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    except (KeyError, ValueError) as error:
        raise RuntimeError(
            "a world of several training processes needs MASTER_ADDR and MASTER_PORT (start it with torchrun)"
        ) from error
    hosted_by_torchrun = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
    store = dist.TCPStore(
        host, port, world.size, is_master=world.is_main and not hosted_by_torchrun, timeout=STORE_TIMEOUT
    )
    return dist.PrefixStore(f"tns/attempt-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def leave(world: World) -> None:
    """Leaves the process group joined by `join`."""
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    """Waits until every rank gets here."""
    if world.distributed:
        dist.barrier()


def shard(count: int, world: World) -> slice:
    """This rank's contiguous block of `count` rows (blocks differ in size by at most one row)."""
    base, extra = divmod(count, world.size)
    start = world.rank * base + min(world.rank, extra)
    return slice(start, start + base + (1 if world.rank < extra else 0))


def _collective_device(device: torch.device) -> torch.device:
    return device if device.type == "cuda" else torch.device("cpu")


def all_reduce_sum(values: torch.Tensor, world: World) -> torch.Tensor:
    """The element-wise sum of `values` over every rank (a copy; `values` itself is left alone)."""
    total = values.detach().clone()
    if world.distributed:
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def broadcast_flags(flags: list[bool], world: World, device: torch.device) -> list[bool]:
    """Rank 0's `flags` on every rank: a decision taken once (early stopping, best epoch)."""
    if not world.distributed:
        return list(flags)
    tensor = torch.tensor([int(flag) for flag in flags], dtype=torch.int64, device=_collective_device(device))
    dist.broadcast(tensor, src=0)
    return [bool(value) for value in tensor.cpu().tolist()]


def gather_rows(block: torch.Tensor, world: World, device: torch.device) -> torch.Tensor:
    """Every rank's block of rows (see `shard`), concatenated in rank order, on every rank.

    Blocks may differ in length and in their other sizes (token ids padded to each block's longest text): each
    is padded with zeros to the largest size of every dimension for the collective, then cut back to its rows.
    Zero is the padding of every padded input (n-gram ids, attention masks)."""
    if not world.distributed:
        return block
    collective = _collective_device(device)
    shape = torch.tensor(block.shape, dtype=torch.int64, device=collective)
    shapes = [torch.empty_like(shape) for _ in range(world.size)]
    dist.all_gather(shapes, shape)
    largest = torch.stack(shapes).amax(0).tolist()
    padded = torch.zeros(largest, dtype=block.dtype, device=collective)
    padded[tuple(slice(0, size) for size in block.shape)] = block.to(collective)
    parts = [torch.empty_like(padded) for _ in range(world.size)]
    dist.all_gather(parts, padded)
    rows = [int(size[0].item()) for size in shapes]
    return torch.cat([part[:count] for part, count in zip(parts, rows, strict=True)]).to(block.device)


def data_parallel(module: nn.Module, device: torch.device) -> nn.Module:
    """DDP around the training forward. Buffers (n-gram IDF, calibration) are equal on every rank and never
    trained, so they are not re-broadcast at every forward.

    On CUDA a trained CNN's batch norms become SyncBatchNorm (statistics of the global batch, as one process
    would see them; the same parameter objects, replaced in place). PyTorch has no SyncBatchNorm on CPU: there
    each rank normalises by its own share of the batch and rank 0's running statistics are saved."""
    if device.type == "cuda":
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        return DistributedDataParallel(module, device_ids=[device], forward_sync_buffers=False)
    return DistributedDataParallel(module, forward_sync_buffers=False)


def require_same_epoch(epoch: int, world: World, device: torch.device, checkpoint_dir) -> None:
    """Raises unless every rank resumed from the same epoch (a checkpoint folder some ranks cannot see)."""
    epochs = gather_rows(torch.tensor([[epoch]], dtype=torch.int64), world, device).flatten().tolist()
    if len(set(epochs)) > 1:
        raise RuntimeError(
            f"the ranks found different checkpoints in {checkpoint_dir} (epochs {epochs} by rank): the "
            "checkpoint folder must be one that every rank sees"
        )
