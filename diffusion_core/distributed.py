"""Several processes, one model: the few lines `train` needs from torch.distributed.

`torchrun --nproc_per_node=N -m diffusion_core train ...` starts N copies of the
same command and tells each its RANK, LOCAL_RANK and WORLD_SIZE in environment
variables. `setup` reads them, joins the process group (NCCL between GPUs, gloo
between CPU processes) and picks this process's device. Without torchrun
(WORLD_SIZE unset or 1) it returns a context of one process that does nothing.
DistributedDataParallel then averages the gradients over the processes, so N
processes with batches of B/N take the same step as one process with batch B.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .recipe import resolve_device


@dataclass
class Distributed:
    """This process's place in the run: rank r of world_size, on `device`."""

    rank: int
    world_size: int
    device: torch.device
    started_here: bool = False  # this module joined the group, so it leaves it

    @property
    def is_main(self) -> bool:
        """Rank 0 keeps the EMA, shows progress and writes every file."""
        return self.rank == 0

    def all_gather(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's x (B, ...) concatenated in rank order: (world_size * B, ...)."""
        if self.world_size == 1:
            return x
        parts = [torch.empty_like(x) for _ in range(self.world_size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    def all_sum_(self, x: torch.Tensor) -> torch.Tensor:
        """Sum x over the ranks, in place (a no-op for one process)."""
        if self.world_size > 1:
            dist.all_reduce(x, op=dist.ReduceOp.SUM)
        return x

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's `obj` (picklable), in rank order, on every rank."""
        if self.world_size == 1:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.started_here and dist.is_initialized():
            dist.destroy_process_group()


def setup(device: str = "auto") -> Distributed:
    """Join the process group torchrun describes (if any) and choose this process's device.

    An already initialised group (e.g. from torch.multiprocessing in a test) is used
    as it is. `device` is the config's: "auto", "cpu", "cuda" or "cuda:N"; under
    torchrun "auto" and "cuda" become this process's GPU, cuda:LOCAL_RANK.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized() and world_size == 1:
        return Distributed(0, 1, resolve_device(device))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    started = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        started = True
    return Distributed(dist.get_rank(), dist.get_world_size(), dev, started)
