"""The one strict integer check of stdiff's arguments.

An integer argument must be an int (or a NumPy integer, via ``operator.index``), never a bool or a
float that happens to be whole; the error names the argument and the accepted range.
"""
from __future__ import annotations

import operator

__all__ = ["NotAnInteger", "integer"]


class NotAnInteger(TypeError, ValueError):
    """A non-integer (or bool) where an int belongs: a TypeError and a ValueError, so that callers of
    either contract catch it."""


def integer(name: str, value: object, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]`` (a missing bound is open).

    :class:`NotAnInteger` for a non-integer (bools included), ValueError out of range; both say
    ``"{name} must be an int >= low"`` (``in [low, high]``, ``<= high``), got the value."""
    number = None if isinstance(value, bool) else _index(value)
    if number is None or (low is not None and number < low) or (high is not None and number > high):
        if low is not None and high is not None:
            bound = f" in [{low}, {high}]"
        else:
            bound = f" >= {low}" if low is not None else (f" <= {high}" if high is not None else "")
        error = NotAnInteger if number is None else ValueError
        raise error(f"{name} must be an int{bound}, got {value!r}")
    return number


def _index(value: object) -> int | None:
    try:
        return operator.index(value)
    except TypeError:
        return None
