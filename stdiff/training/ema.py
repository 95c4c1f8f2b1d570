"""Exponential moving average of model weights (the exported model holds the EMA weights)."""
from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA", "ema_decay"]


def ema_decay(step: int, max_decay: float = 0.9999, power: float = 0.75, inv_gamma: float = 1.0) -> float:
    """Decay of the EMA update that follows ``step`` earlier updates: ``1 - (1 + step / inv_gamma) ** -power``.

    The warm-up of diffusers' EMAModel (official STDiff: power 0.75, inv_gamma 1, max 0.9999),
    capped at ``max_decay``; 0 for the first update (the EMA starts as a copy). Early weights are
    forgotten quickly, so short runs still get a useful average.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step == 0:
        return 0.0
    return min(max_decay, 1.0 - (1.0 + step / inv_gamma) ** -power)


class EMA:
    """A frozen copy of ``model`` whose floating-point parameters track an EMA of ``model``'s.

    Buffers are copied as they are. ``ema.model`` is a regular module (use it to sample/export).
    """

    def __init__(self, model: nn.Module, max_decay: float = 0.9999, power: float = 0.75,
                 inv_gamma: float = 1.0) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.max_decay, self.power, self.inv_gamma = max_decay, power, inv_gamma
        self.num_updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> float:
        """Move the EMA towards ``model``'s current weights; returns the decay used."""
        decay = ema_decay(self.num_updates, self.max_decay, self.power, self.inv_gamma)
        self.num_updates += 1
        ema_params = [p for p in self.model.parameters() if p.is_floating_point()]
        params = [p.detach() for p in model.parameters() if p.is_floating_point()]
        if len(ema_params) != len(params):
            raise ValueError("model does not match the EMA copy (different parameter lists)")
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)
        return decay

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The EMA model's weights (same keys as the model's state dict)."""
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor], num_updates: int) -> None:
        """Restore weights written by :meth:`state_dict` and the update counter."""
        self.model.load_state_dict(state)
        self.num_updates = int(num_updates)
