"""Checks of a prediction request's arguments that are not frames or times (see :mod:`.prediction`).

Each raises TypeError/ValueError naming the argument and what it accepts, before any work.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_tensor_storage", "check_motion_state"]


def check_tensor_storage(name: str, x: Tensor) -> None:
    """TypeError unless ``x`` is a dense (strided) tensor with data (not on the meta device)."""
    if x.layout != torch.strided:
        raise TypeError(f"{name} must be a dense tensor, got layout {x.layout} (call .to_dense() first)")
    if x.is_meta:
        raise TypeError(f"{name} is a meta tensor (shape only, no data): give a tensor with values")


def check_motion_state(state: object, expected: tuple[int, ...], device: torch.device) -> Tensor | None:
    """A Conv-GRU state of shape ``expected`` (N, F, h, w) as float32 on ``device``; None passes.

    Refuses other types and shapes, non-floating, sparse or meta tensors and NaN/inf values.
    """
    if state is None:
        return None
    if not isinstance(state, Tensor) or tuple(state.shape) != expected or not state.is_floating_point():
        raise ValueError(f"motion_state must be a floating tensor of shape {expected} (N, F, h, w), got "
                         f"{getattr(state, 'shape', type(state).__name__)}")
    check_tensor_storage("motion_state", state)
    out = state.detach().to(device, torch.float32)
    if not bool(torch.isfinite(out).all()):
        raise ValueError("motion_state contains NaN or infinite values (a diverged or corrupt state)")
    return out
