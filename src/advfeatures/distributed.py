"""Process groups for torchrun: who am I, how shards of a construction become one tensor on every rank, and the
few collectives the pipeline needs (barrier, agreement, parameter sync).

Under `torchrun --nproc-per-node N -m advfeatures reproduce ...` every rank runs the same pipeline:
- training is DistributedDataParallel: each rank takes its slice of every global batch (same data order and
  augmentation on every rank), gradients are averaged, so the optimisation is the one-process one up to
  floating-point summation order (see `training.train_model`);
- construction (`construct.py`) cuts work into fixed, individually seeded chunks; rank r of W builds chunks
  r, r + W, ... and leaves the other rows zero, so summing the ranks' tensors gives exactly the one-process
  result;
- evaluation runs whole on every rank (it is a few percent of the work, and needs no sharded randomness);
- only rank 0 writes files; the others wait at a barrier and then read what rank 0 wrote (one machine, or a
  shared filesystem).
"""

from __future__ import annotations

import gc
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

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_agree(self, flag: bool) -> bool:
        """True only if `flag` is true on every rank (so every rank takes the same branch)."""
        if not self.distributed:
            return flag
        t = torch.tensor([1 if flag else 0], device=_collective_device())
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item())

    def sum(self, values: list[float]) -> list[float]:
        """Elementwise sum over ranks of a few numbers (e.g. per-rank loss totals)."""
        if not self.distributed:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()


def _collective_device() -> torch.device:
    return torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")


def init_from_environment() -> ProcessGroup:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on CUDA, gloo on CPU); else a group of one.

    On CUDA each rank uses GPU LOCAL_RANK, so `--device auto`/`cuda` means "this rank's GPU".
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return ProcessGroup()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return ProcessGroup(dist.get_rank(), dist.get_world_size())


def shutdown(group: ProcessGroup) -> None:
    """Leave the process group. Objects that still hold it (a DistributedDataParallel model kept alive by a reference
    cycle, e.g. through an exception's traceback) are collected first: freed after the group is gone, at interpreter
    exit, they can abort the process (a suspected cause of a rare SIGABRT, "terminate called without an active
    exception", in the gloo tests; not proven)."""
    if group.distributed and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def gather_shards(tensor: torch.Tensor, group: ProcessGroup) -> torch.Tensor:
    """Every rank's rows, on every rank: ranks hold disjoint non-zero rows, so an all-reduce sum joins them."""
    if group.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def sync_module(module: torch.nn.Module, group: ProcessGroup) -> None:
    """Make every rank's parameters and buffers rank 0's (e.g. batch-norm statistics after DDP training)."""
    if group.distributed:
        with torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, src=0)
