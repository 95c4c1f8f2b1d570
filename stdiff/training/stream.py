"""Reproducible, resumable, rank-sharded batches of training clips.

Epoch ``e`` visits the dataset in the order ``randperm(len, seed=(seed, e))``; rank r of W takes
every W-th index starting at r, so ranks see disjoint clips. Every rank gets the same number of
batches per epoch (the remainder is dropped). Each clip is a pure function of
``(seed, epoch, index)``: random augmentations run under a torch RNG seeded from those three
numbers, so batches do not depend on worker count or on where training was resumed.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .signals import ignore_stop_signals

__all__ = ["SeededClips", "ShardedBatches", "batch_stream"]

_MIX = 0x9E3779B97F4A7C15


def _item_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * _MIX + epoch * 1_000_003 + index) % (2**63)


class SeededClips(Dataset):
    """Wraps a clip dataset: item ``(epoch, index)`` is ``dataset[index]`` under a fixed RNG seed."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_item_seed(self.seed, epoch, index))
            return self.dataset[index]


class ShardedBatches(Sampler[list[tuple[int, int]]]):
    """Endless batches of ``(epoch, index)`` keys for one rank, starting at global batch ``start``."""

    def __init__(self, length: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 start: int = 0) -> None:
        self.per_epoch = (length // world_size) // batch_size
        if self.per_epoch < 1:
            raise ValueError(
                f"the dataset has {length} clips: too few for batch_size {batch_size} on {world_size} process(es)"
            )
        self.length, self.batch_size, self.seed = length, batch_size, seed
        self.rank, self.world_size, self.start = rank, world_size, start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        batch = self.start
        while True:
            epoch, offset = divmod(batch, self.per_epoch)
            order = torch.randperm(self.length, generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))
            shard = order[self.rank::self.world_size]
            for b in range(offset, self.per_epoch):
                chunk = shard[b * self.batch_size:(b + 1) * self.batch_size].tolist()
                yield [(epoch, i) for i in chunk]
            batch = (epoch + 1) * self.per_epoch


def batch_stream(dataset: Dataset, batch_size: int, seed: int, rank: int, world_size: int, start: int,
                 workers: int, pin_memory: bool = False) -> Iterator[torch.Tensor]:
    """Endless iterator of (B, T, C, H, W) batches, resuming at global batch ``start`` of this rank."""
    sampler = ShardedBatches(len(dataset), batch_size, seed, rank, world_size, start)
    loader = DataLoader(
        SeededClips(dataset, seed), batch_sampler=sampler, num_workers=workers, pin_memory=pin_memory,
        persistent_workers=False, prefetch_factor=4 if workers else None,
        worker_init_fn=ignore_stop_signals if workers else None,
    )
    return iter(loader)
