"""torchrun / torch.distributed set-up: one process per device, NCCL on GPUs, gloo on CPUs.

``torchrun --nproc-per-node=N [--nnodes=M --rdzv-backend=c10d --rdzv-endpoint=HOST:PORT] -m stdiff
train ...`` sets RANK, WORLD_SIZE and LOCAL_RANK; without them training runs in one process.
Only rank 0 writes files; every rank reads the checkpoint chosen by rank 0 on resume (a shared
file system across nodes is needed for ``--resume``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "resolve_device", "broadcast_object", "all_gather_object",
           "mean_over_ranks", "max_over_ranks", "barrier", "shutdown"]

_CPU_GROUP: list = []  # a gloo group for small CPU-side collectives under NCCL, created on first use


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: rank among world_size, its device, and whether it owns the group."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """"auto" -> this process's GPU when CUDA is available, else CPU; "cuda" -> cuda:local_rank.

    The one device check of the commands (train, predict, demo): ValueError naming --device
    for an unknown device, for CUDA without a usable GPU and for a GPU index that does not exist.
    """
    if not isinstance(name, str):
        raise ValueError(f"--device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"--device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name!r}: CUDA is not available (no usable GPU); use --device cpu or auto")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        if device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name!r}: {device} does not exist ({torch.cuda.device_count()} GPUs visible)")
    elif device.type != "cpu":
        raise ValueError(f"--device must be 'auto', 'cpu' or a CUDA device, got {name!r}")
    return device


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value is None else int(value)


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group torchrun describes (if any) and pick this process's device."""
    world_size = _env_int("WORLD_SIZE", 1)
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    dev = resolve_device(device, local_rank)
    if world_size == 1:
        return DistInfo(0, 1, 0, dev, owns_group=False)
    owns = not dist.is_initialized()
    if owns:
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
            dist.init_process_group("nccl", device_id=dev)
        else:
            dist.init_process_group("gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dev, owns_group=owns)


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank (picklable objects)."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=info.device if info.device.type == "cuda" else None)
    return box[0]


def all_gather_object(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` (in rank order) on every rank."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def mean_over_ranks(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Element-wise mean of a tensor over ranks (the tensor itself when not distributed)."""
    if not info.distributed:
        return values
    values = values.detach().clone()
    dist.all_reduce(values)
    return values / info.world_size


def max_over_ranks(value: int, info: DistInfo) -> int:
    """The largest ``value`` over ranks, reduced on the CPU (no device sync: cheap at every step)."""
    if not info.distributed:
        return value
    if not _CPU_GROUP:
        _CPU_GROUP.append(dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None)
    box = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(box, op=dist.ReduceOp.MAX, group=_CPU_GROUP[0])
    return int(box.item())


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier(device_ids=[info.device.index] if info.device.type == "cuda" else None)


def shutdown(info: DistInfo) -> None:
    """Leave the process group if this module created it."""
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()
        _CPU_GROUP.clear()
