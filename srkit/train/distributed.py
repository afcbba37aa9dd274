"""One process or ``torchrun``: process-group setup, a resumable sharded sampler, small collectives.

The same config runs either way. Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) each
process trains on its own shard of every epoch with DDP: gloo on CPU, NCCL on CUDA. Only rank 0 logs,
validates and writes checkpoints; the others wait at barriers.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun describes in the environment (no-op for a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        # Rank 0 validates and writes checkpoints while the others wait at a collective: allow that
        # to take long (NCCL's default timeout is 10 minutes).
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(hours=2))
    return DistInfo(rank, world, local_rank)


def shutdown_distributed(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def any_across_ranks(info: DistInfo, flags: list[bool], device: torch.device) -> list[bool]:
    """OR of boolean flags over all ranks, in one collective (all ranks must agree to stop/roll back)."""
    if not info.enabled:
        return flags
    t = torch.tensor([1.0 if f else 0.0 for f in flags], dtype=torch.float32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def mean_across_ranks(info: DistInfo, values: dict[str, float], device: torch.device) -> dict[str, float]:
    if not info.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return {k: v / info.world_size for k, v in zip(keys, t.tolist(), strict=True)}


def gather_objects(info: DistInfo, obj: Any) -> list[Any]:
    """Every rank's ``obj`` (a list of one on a single process)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(info: DistInfo, obj: Any) -> Any:
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class ResumableBatchSampler(torch.utils.data.Sampler):
    """Endless stream of batches of ``(epoch, index)`` pairs, sharded by rank, startable at any iteration.

    The stream is the concatenation of per-epoch permutations of this rank's shard (epoch ``e``
    shuffled with a generator seeded by ``(seed, e)``; shards as ``DistributedSampler`` makes them:
    pad to a multiple of the world size, take every ``world_size``-th index). Batch ``k`` holds stream
    items ``[k*B, (k+1)*B)``, so the position after ``k`` iterations is derived from ``k`` alone:
    resuming at iteration ``k`` yields exactly the batches the uninterrupted run would have seen next.
    The epoch travels with each index so datasets can derive their per-sample randomness from
    ``(seed, epoch, index)`` inside persistent workers.
    """

    def __init__(self, dataset_len: int, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, start_iteration: int = 0):
        if dataset_len <= 0:
            raise ValueError("empty dataset")
        self.n = dataset_len
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world = world_size
        self.shuffle = shuffle
        self.start_iteration = start_iteration
        self.per_rank = -(-dataset_len // world_size)  # ceil, as DistributedSampler (padding by wrap-around)

    def epoch_indices(self, epoch: int) -> list[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.per_rank * self.world
        order = (order * (-(-total // self.n)))[:total]
        return order[self.rank : total : self.world]

    def position(self, iteration: int) -> tuple[int, int]:
        """(epoch, offset in epoch) of the first item of batch ``iteration`` (0-based)."""
        return divmod(iteration * self.batch_size, self.per_rank)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, offset = self.position(self.start_iteration)
        batch: list[tuple[int, int]] = []
        while True:
            for idx in self.epoch_indices(epoch)[offset:]:
                batch.append((epoch, idx))
                if len(batch) == self.batch_size:
                    yield batch
                    batch = []
            epoch, offset = epoch + 1, 0

    def __len__(self) -> int:  # endless; DataLoader only needs it for len(loader)
        return 2**62
