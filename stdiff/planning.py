"""How a prediction request becomes work: autoregressive chunks, and the work limits checked first.

Horizons longer than the trained one (``config.num_future``) are predicted in chunks: the last
``config.num_observed`` generated frames on the integer frame grid become the next context.
Before anything runs, :func:`check_work` estimates the request (chunks, denoised frames, batch,
memory) and refuses it above :class:`WorkLimits`, so that no request can take the machine down.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .checks import integer
from .prediction import frame_key

__all__ = ["Chunk", "WorkLimits", "check_work", "plan_chunks"]


@dataclass(frozen=True)
class Chunk:
    """One autoregressive chunk: its context ends at ``t0``; it generates the frames at ``times``."""

    t0: float
    times: list[float]


def plan_chunks(times: Sequence[float], t_last: float, horizon: int, context_len: int) -> list[Chunk]:
    """Split increasing query ``times`` (> t_last) into chunks of at most ``horizon`` frame units.

    Chunk k covers (c_k, c_k + horizon] with c_0 = t_last and c_{k+1} = c_k + horizon. When more
    chunks follow, a chunk also generates the grid frames c_{k+1} - j (j < context_len) that the
    next chunk's context needs (the integer frame grid relative to t_last; at 1x frame rate
    these are already among the query times). Loops once per chunk: bound the chunk count first
    (:func:`check_work`).
    """
    remaining = [float(t) for t in times]
    chunks: list[Chunk] = []
    c = float(t_last)
    while remaining:
        end = c + horizon
        inside = [t for t in remaining if t <= end + 1e-9]
        remaining = remaining[len(inside):]
        wanted = {frame_key(t): t for t in inside}
        if remaining:
            for j in range(context_len):
                if end - j > c + 1e-9:
                    wanted.setdefault(frame_key(end - j), end - j)
        chunks.append(Chunk(c, sorted(wanted.values())))
        c = end
    return chunks


@dataclass(frozen=True)
class WorkLimits:
    """Largest request :class:`~stdiff.Predictor` accepts (replace ``predictor.limits`` to raise them).

    max_frames: frames denoised per trajectory (query times plus the context frames of later chunks);
    max_batch: trajectories denoised together (videos x samples);
    max_memory_bytes: the frames and motion states the request keeps (generated frames, query motion).
    """

    max_frames: int = 10_000
    max_batch: int = 1024
    max_memory_bytes: int = 8 * 2**30

    def __post_init__(self) -> None:
        for name in ("max_frames", "max_batch", "max_memory_bytes"):
            value = getattr(self, name)
            integer(name, value, 1)


def _refuse(what: str, value: int, limit: str, limits: WorkLimits) -> None:
    raise ValueError(f"the request needs {what} {value:,}, above the limit {limit}={getattr(limits, limit):,}; "
                     f"ask for fewer videos, samples or times (or a shorter horizon), or raise it "
                     f"(predictor.limits = WorkLimits({limit}=...))")


def check_work(times: Sequence[float], t_last: float, horizon: int, context_len: int, rows: int,
               frame_numel: int, motion_numel: int, limits: WorkLimits) -> list[Chunk]:
    """Refuse a request above ``limits`` (ValueError saying which limit), else return its chunks.

    rows: videos x samples; frame_numel / motion_numel: elements of one frame / motion state.
    The chunk count is bounded before the chunks are planned (planning loops once per chunk).
    """
    if rows > limits.max_batch:
        _refuse("a batch of videos x samples =", rows, "max_batch", limits)
    num_chunks = max(1, math.ceil((times[-1] - t_last) / horizon - 1e-9))
    if num_chunks > limits.max_frames:  # every chunk denoises at least one frame
        _refuse(f"{num_chunks:,} chunks of {horizon} frame units, i.e. denoised frames >=", num_chunks,
                "max_frames", limits)
    chunks = plan_chunks(times, t_last, horizon, context_len)
    frames = sum(len(c.times) for c in chunks)
    if frames > limits.max_frames:
        _refuse("denoised frames per trajectory", frames, "max_frames", limits)
    memory = 4 * rows * (frames * frame_numel + len(times) * motion_numel)
    if memory > limits.max_memory_bytes:
        _refuse("bytes of frames and motion states", memory, "max_memory_bytes", limits)
    return chunks
