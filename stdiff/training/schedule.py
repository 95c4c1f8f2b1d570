"""Learning-rate schedules (``TrainConfig.lr_schedule``), as multipliers of the peak LR per optimizer step.

- ``cosine`` (default): linear warm-up from 0 over ``warmup_steps``, then one half cosine from
  the peak LR to 0 at ``total_steps``.
- ``cosine_with_restarts`` (the official training's setting: diffusers'
  ``get_cosine_with_hard_restarts_schedule_with_warmup`` with ``num_cycles=2``): the same
  warm-up as diffusers (``step / warmup_steps``), then ``cycles`` half cosines from the peak LR
  to 0, each restarting at the peak.
"""
from __future__ import annotations

import math

import torch

__all__ = ["LR_SCHEDULES", "cosine_with_warmup", "cosine_with_restarts", "make_schedule"]

LR_SCHEDULES = ("cosine", "cosine_with_restarts")


def cosine_with_warmup(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
                       ) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 0 over ``warmup_steps``, then a half cosine from the base LR to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def cosine_with_restarts(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, cycles: int
                         ) -> torch.optim.lr_scheduler.LambdaLR:
    """diffusers' cosine schedule with ``cycles`` hard restarts after a linear warm-up (official STDiff)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        if progress >= 1.0:
            return 0.0
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((cycles * progress) % 1.0))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_schedule(name: str, optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                  cycles: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule ``name`` (one of LR_SCHEDULES); ``cycles`` is used by cosine_with_restarts only."""
    if name == "cosine":
        return cosine_with_warmup(optimizer, warmup_steps, total_steps)
    if name == "cosine_with_restarts":
        return cosine_with_restarts(optimizer, warmup_steps, total_steps, cycles)
    raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {name!r}")
