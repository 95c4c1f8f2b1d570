"""Inference timestep grids (descending integer train timesteps), as diffusers spaces them.

The float arithmetic replicates numpy's ``linspace``/``arange`` followed by round-half-to-even,
so the grids equal diffusers' element for element.
"""
from __future__ import annotations

import math

from ..checks import integer

SPACINGS = ("leading", "trailing", "linspace")


def check_steps(num_inference_steps: int, num_train_timesteps: int, name: str = "num_inference_steps") -> int:
    """``num_inference_steps`` as an int if it is an integer (Python or NumPy, not a bool) in
    [1, num_train_timesteps], else ValueError naming ``name``."""
    return integer(name, num_inference_steps, 1, num_train_timesteps)


def check_spacing(spacing: str, allowed: tuple[str, ...] = SPACINGS) -> None:
    if spacing not in allowed:
        raise ValueError(f"timestep_spacing must be one of {allowed}, got {spacing!r}")


def _linspace(stop: float, num: int) -> list[float]:
    """numpy.linspace(0, stop, num) in float64."""
    if num == 1:
        return [0.0]
    step = stop / (num - 1)
    return [k * step for k in range(num - 1)] + [float(stop)]


def _trailing(num_train_timesteps: int, n: int) -> list[int]:
    """round(numpy.arange(T, 0, -T/n)) - 1, at most n values."""
    step = -(num_train_timesteps / n)
    delta = (num_train_timesteps + step) - num_train_timesteps  # numpy fills start + i * (second - first)
    length = min(n, math.ceil(-num_train_timesteps / step))
    return [round(num_train_timesteps + i * delta) - 1 for i in range(length)]


def spaced_timesteps(num_train_timesteps: int, n: int, spacing: str) -> list[int]:
    """DDPM/DDIM grid of n descending timesteps.

    leading:  k * (T // n)                         (diffusers' default; the official STDiff grid)
    trailing: round(T - k * T / n) - 1             (starts at T - 1)
    linspace: round(k * (T - 1) / (n - 1))         (starts at T - 1, ends at 0)
    """
    check_steps(n, num_train_timesteps)
    check_spacing(spacing)
    if spacing == "leading":
        ratio = num_train_timesteps // n
        return [k * ratio for k in range(n)][::-1]
    if spacing == "trailing":
        return _trailing(num_train_timesteps, n)
    return [round(v) for v in _linspace(num_train_timesteps - 1, n)][::-1]


def dpm_timesteps(num_train_timesteps: int, n: int, spacing: str) -> list[int]:
    """DPM-Solver grid: linspace = round(linspace(0, T - 1, n + 1))[::-1][:-1] (the official and the
    diffusers default, never 0); trailing as in :func:`spaced_timesteps`.

    Only n = T makes the linspace grid repeat a timestep; repeats are dropped (T - 1 steps then),
    where diffusers 0.42 keeps them and divides by a zero step size.
    """
    check_steps(n, num_train_timesteps)
    check_spacing(spacing, ("linspace", "trailing"))
    if spacing == "trailing":
        return _trailing(num_train_timesteps, n)
    grid = [round(v) for v in _linspace(num_train_timesteps - 1, n + 1)][::-1][:-1]
    return list(dict.fromkeys(grid))
