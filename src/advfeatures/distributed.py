"""Process groups for torchrun: who am I, and how shards of a construction become one tensor on every rank.

Construction (`construct.py`) cuts work into fixed, individually seeded chunks; rank r of W builds chunks
r, r + W, ... and leaves the other rows zero, so summing the ranks' tensors gives exactly the one-process result.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ProcessGroup:
    rank: int = 0
    world_size: int = 1

    @property
    def shard(self) -> tuple[int, int]:
        return self.rank, self.world_size

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_environment() -> ProcessGroup:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on CUDA, gloo on CPU); else a group of one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return ProcessGroup()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return ProcessGroup(dist.get_rank(), dist.get_world_size())


def gather_shards(tensor: torch.Tensor, group: ProcessGroup) -> torch.Tensor:
    """Every rank's rows, on every rank: ranks hold disjoint non-zero rows, so an all-reduce sum joins them."""
    if group.world_size > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor
