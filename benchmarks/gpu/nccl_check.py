"""NCCL on one GPU: a one-process group, its collectives, and one DDP training step of STDiff.

    torchrun --standalone --nproc-per-node=1 benchmarks/gpu/nccl_check.py --preset kth64
    torchrun --standalone --nproc-per-node=1 benchmarks/gpu/nccl_check.py --device cpu   # gloo

NCCL refuses two ranks on the same GPU, so one GPU can only run a world of one process. With
WORLD_SIZE=1, ``stdiff train`` starts no process group at all (stdiff/training/distributed.py),
so this program creates the NCCL group itself and checks what training relies on:
``all_reduce``, ``broadcast_object_list`` and ``all_gather_object`` (with the GPU as the
object device, as stdiff's helpers use them), and DistributedDataParallel's gradient all-reduce
on STDiff's training loss, whose gradients must equal a plain backward's. Exit status 1 on a
mismatch.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from stdiff.config import preset
from stdiff.models import STDiff


class LossModule(nn.Module):
    """STDiff's training loss as ``forward``, so that DDP hooks its backward."""

    def __init__(self, model: STDiff) -> None:
        super().__init__()
        self.model = model

    def forward(self, observed: Tensor, future: Tensor, generator: torch.Generator) -> Tensor:
        return self.model.training_loss(observed, future, generator=generator)


def gradients(net: nn.Module, observed: Tensor, future: Tensor, device: torch.device) -> list[Tensor]:
    """Gradients of one training loss (fixed seed) with respect to every parameter that gets one."""
    generator = torch.Generator(device=device).manual_seed(0)
    net(observed, future, generator).backward()
    return [p.grad for p in net.parameters() if p.grad is not None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (NCCL, default) or cpu (gloo)")
    parser.add_argument("--preset", default="tiny", help="model preset of the DDP step (default tiny)")
    args = parser.parse_args(argv)
    if "RANK" not in os.environ:
        parser.error("run me under torchrun (it sets RANK, WORLD_SIZE, MASTER_ADDR)")
    if args.device == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
        version = torch.cuda.nccl.version()  # a tuple (an int in old torch)
        backend = f"nccl {'.'.join(map(str, version)) if isinstance(version, tuple) else version}"
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
        backend = "gloo"
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        value = torch.tensor([float(rank + 1)], device=device)
        dist.all_reduce(value)
        assert value.item() == world * (world + 1) / 2, f"all_reduce gave {value.item()}"
        box = [{"rank": rank}] if rank == 0 else [None]
        dist.broadcast_object_list(box, src=0, device=device if device.type == "cuda" else None)
        assert box[0] == {"rank": 0}, f"broadcast_object_list gave {box[0]}"
        gathered: list = [None] * world
        dist.all_gather_object(gathered, rank)
        assert gathered == list(range(world)), f"all_gather_object gave {gathered}"

        torch.manual_seed(0)
        cfg = preset(args.preset)
        model = STDiff(cfg).to(device).train()
        shape = (2, cfg.channels, cfg.image_size, cfg.image_size)
        observed = torch.rand(shape[0], cfg.num_observed, *shape[1:], device=device) * 2 - 1
        future = torch.rand(shape[0], cfg.num_future, *shape[1:], device=device) * 2 - 1
        plain = gradients(LossModule(copy.deepcopy(model)), observed, future, device)
        ids = [device.index] if device.type == "cuda" else None
        ddp = gradients(DistributedDataParallel(LossModule(model), device_ids=ids), observed, future, device)
        if len(plain) != len(ddp):
            print(f"DDP gave {len(ddp)} gradients, a plain backward {len(plain)}")
            return 1
        diff = max((a - b).abs().max().item() for a, b in zip(plain, ddp))
        scale = max(a.abs().max().item() for a in plain)
        ok = diff <= 1e-5 * max(scale, 1.0)
        print(f"{backend}, world size {world} on {device}: all_reduce, broadcast_object_list, all_gather_object ok; "
              f"DDP step of {args.preset}: {len(ddp)} gradients, largest difference to a plain backward {diff:.3g} "
              f"(largest gradient {scale:.3g}): {'ok' if ok else 'MISMATCH'}")
        return 0 if ok else 1
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
