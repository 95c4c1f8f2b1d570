"""Argument checks shared by the metric functions: image tensors in [0, 1] and their pairing."""
from __future__ import annotations

import torch
from torch import Tensor

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def unit_images(name: str, value: object, layout: str = "(..., C, H, W)", ndim: int | None = None) -> Tensor:
    """Check ``value`` is a floating tensor with every value in [0, 1], of rank ``ndim`` (at least 3
    when None); ``layout`` names the dims in error messages.

    Returns it promoted to float32 (float64 stays float64), the precision the metrics use.
    """
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating tensor with values in [0, 1], got dtype {value.dtype}")
    if (value.dim() != ndim) if ndim is not None else (value.dim() < 3):
        raise ValueError(f"{name} must have shape {layout}, got {tuple(value.shape)}")
    if value.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(value.shape)}")
    if not bool(((value >= 0) & (value <= 1)).all()):
        bad = value[~((value >= 0) & (value <= 1))]
        raise ValueError(
            f"{name} must have all values in [0, 1] (no NaN); found {bad.numel()} outside, "
            f"e.g. {bad.flatten()[0].item()} (scale images to [0, 1] and clamp them first)"
        )
    return value if value.dtype == torch.float64 else value.float()


def image_pair(pred_name: str, pred: object, target_name: str, target: object) -> tuple[Tensor, Tensor]:
    """Check two image tensors ``(..., C, H, W)`` in [0, 1] of the same shape and device."""
    x = unit_images(pred_name, pred)
    y = unit_images(target_name, target)
    if x.shape != y.shape:
        raise ValueError(
            f"{pred_name} and {target_name} must have the same shape (..., C, H, W), "
            f"got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.device != y.device:
        raise ValueError(f"{pred_name} ({x.device}) and {target_name} ({y.device}) must be on the same device")
    if x.dtype != y.dtype:
        y = y.to(torch.promote_types(x.dtype, y.dtype))
        x = x.to(y.dtype)
    return x, y
