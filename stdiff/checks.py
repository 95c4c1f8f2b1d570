"""The one strict integer check of stdiff's public arguments.

An integer argument must be an int (or a NumPy integer, via ``operator.index``), never a bool or a
float that happens to be whole; the error names the argument and the accepted range.
"""
from __future__ import annotations

import operator

__all__ = ["integer"]


def integer(name: str, value: object, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high)`` (a missing bound is open); TypeError for a non-integer
    (bools included), ValueError out of range."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got bool {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}") from None
    if (low is not None and number < low) or (high is not None and number >= high):
        lo = "" if low is None else f"{low} <= "
        hi = "" if high is None else f" < {high}"
        where = f"{lo}{name}{hi}" if (lo or hi) else name
        raise ValueError(f"{name} must satisfy {where}, got {number}")
    return number
