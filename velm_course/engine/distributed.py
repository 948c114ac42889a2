"""Several processes, one model: PyTorch's DistributedDataParallel (DDP), as launched by torchrun.

``torchrun --nproc_per_node N -m velm_course.cli train ...`` starts N copies of the program
and tells each its RANK, LOCAL_RANK and WORLD_SIZE through environment variables. Each
process holds a full copy of the model and trains on its own slice of every global batch;
DDP averages the gradients across processes during backward, so every copy takes the same
step. NCCL carries the tensors between GPUs, gloo between CPU processes.

Only rank 0 writes checkpoints and logs; every rank reads the same checkpoint on resume.

>>> info().world_size
1
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0  # this process's index among all processes
    world_size: int = 1  # number of processes
    local_rank: int = 0  # index on this machine: which GPU to use

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def info() -> DistInfo:
    """This process's place in the process group (rank 0 of 1 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return DistInfo()


def init_from_env(device: str = "auto") -> DistInfo:
    """Join the process group torchrun set up (if it did); NCCL for CUDA, gloo for the CPU."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) < 2 or dist.is_initialized():
        return info()
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return info()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes, in place (a no-op in a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def gather_objects(obj) -> list:
    """Every rank's ``obj``, in rank order (a one-element list in a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out
    return [obj]
