"""Joining the launcher's process group (torchrun / the deepspeed launcher), for training and for batch evaluation.

Both read the launcher's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``). Training joins through DeepSpeed
(NCCL on GPU, gloo on CPU, :func:`init_distributed`); batch evaluation only exchanges small Python objects and joins
a gloo group lazily, the first time it needs one (:func:`barrier`, :func:`gather_objects`). torch is imported
inside the functions so that importing this module stays cheap.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any


@dataclass
class DistributedContext:
    """Rank and world size from the launcher's environment (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls) -> DistributedContext:
        """Read the variables torchrun and the deepspeed launcher set; a single process otherwise."""
        return cls(
            rank=int(os.environ.get("RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )

    @property
    def is_distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def join_gloo_group(context: DistributedContext) -> None:
    """Join the launcher's process group (gloo: only small Python objects travel; long timeout because
    evaluation ranks may finish their shards hours apart)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=context.rank, world_size=context.world_size, timeout=timedelta(hours=24))


def barrier(context: DistributedContext) -> None:
    """Wait for every rank (nothing to wait for without a launcher)."""
    if context.is_distributed:
        import torch.distributed as dist

        join_gloo_group(context)
        dist.barrier()


def gather_objects(value: Any, context: DistributedContext) -> list[Any]:
    """Every rank's ``value`` (picklable), in rank order (a list of one without a launcher)."""
    if not context.is_distributed:
        return [value]
    import torch.distributed as dist

    join_gloo_group(context)
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return [item for item in gathered if item is not None]


# ---------------------------------------------------------------------------------------------------- training
def _skip_cpu_shm_kernel() -> None:
    """DeepSpeed's CPU communication backend JIT-compiles a shared-memory all-reduce kernel when it starts
    (75 s or more on a fresh machine); only its inference all-reduce uses it, training all-reduces go through
    torch.distributed (gloo). Skip building it when training on CPU."""
    import importlib

    # importlib, not "import deepspeed.comm.torch as ...": deepspeed.comm has an attribute "torch" (the library).
    deepspeed_torch_comm = importlib.import_module("deepspeed.comm.torch")
    if hasattr(deepspeed_torch_comm, "build_shm_op"):
        deepspeed_torch_comm.build_shm_op = lambda: None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def init_distributed() -> tuple[int, int]:
    """Join the launcher's process group (a single local process when started without a launcher);
    NCCL on GPU, gloo on CPU. Returns (rank, world size)."""
    import deepspeed
    import torch
    import torch.distributed as dist

    if "RANK" not in os.environ:
        os.environ.update(
            RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port())
        )
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        backend = "nccl"
    else:
        _skip_cpu_shm_kernel()
        backend = "gloo"
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend=backend)
    return dist.get_rank(), dist.get_world_size()
