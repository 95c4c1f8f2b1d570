"""Argument checks shared by the public op functions (run once, before dispatch)."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..checks import integer

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def tensor(name: str, value: object, ndim: int | None = None) -> Tensor:
    """Check that ``value`` is a floating tensor (of rank ``ndim`` when given)."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have a floating dtype (float16/bfloat16/float32/float64), got {value.dtype}")
    if ndim is not None and value.dim() != ndim:
        raise ValueError(f"{name} must be a {ndim}-D tensor, got shape {tuple(value.shape)}")
    return value


def like(name: str, value: object, ref_name: str, ref: Tensor, shape: tuple[int, ...] | None = None) -> Tensor:
    """Check that ``value`` matches ``ref`` in dtype and device, and has ``shape`` (default ref's)."""
    tensor(name, value)
    expected = tuple(ref.shape) if shape is None else shape
    if tuple(value.shape) != expected:
        raise ValueError(f"{name} must have shape {expected} (from {ref_name}), got {tuple(value.shape)}")
    if value.dtype != ref.dtype:
        raise TypeError(f"{name} must have the dtype of {ref_name} ({ref.dtype}), got {value.dtype}")
    if value.device != ref.device:
        raise ValueError(f"{name} must be on {ref_name}'s device ({ref.device}), got {value.device}")
    return value


def positive_float(name: str, value: object) -> float:
    """Check that ``value`` is a finite real number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value}")
    return float(value)


def non_negative_int(name: str, value: object) -> int:
    """Check that ``value`` is an int in [0, 2**63)."""
    return integer(name, value, 0, 2**63 - 1)


def flag(name: str, value: object) -> bool:
    """Check that ``value`` is a bool (not merely truthy: ``"no"`` is refused)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool (True or False), got {type(value).__name__} {value!r}")
    return value
