"""Diversity of stochastic predictions: mean pairwise LPIPS between the samples of each video."""
from __future__ import annotations

from collections.abc import Callable
from itertools import combinations

from torch import Tensor

from ..checks import integer
from ._validate import unit_images


def inter_sample_lpips(samples: Tensor, lpips: Callable[[Tensor, Tensor], Tensor], dim: int = 1) -> Tensor:
    """Mean LPIPS over all unordered pairs of samples along ``dim``.

    samples: (..., S, ..., C, H, W) in [0, 1] with S >= 2 samples along ``dim`` (e.g. predictions
    (N, S, T, C, H, W) with dim=1); lpips: an ``LPIPS`` module (or any distance with its call
    signature). Returns the input shape without ``dim`` and without (C, H, W), e.g. (N, T).
    """
    x = unit_images("samples", samples)
    dim = integer("dim", dim)
    axis = dim + x.dim() if dim < 0 else dim
    if not 0 <= axis < x.dim() - 3:
        raise ValueError(f"dim must index a sample axis before (C, H, W) of shape {tuple(x.shape)}, got {dim}")
    s = x.shape[axis]
    if s < 2:
        raise ValueError(f"samples must have at least 2 samples along dim {dim}, got shape {tuple(x.shape)}")
    total = None
    for i, j in combinations(range(s), 2):
        d = lpips(x.select(axis, i), x.select(axis, j))
        total = d if total is None else total + d
    return total / (s * (s - 1) // 2)
