"""Brownian paths for the motion-SDE solver: main-step increments and exact values between steps.

A path answers two questions about the Brownian motion W driving the solver, for main step k over
[ta, tb]: its increment ``W(tb) - W(ta)`` and, for ta < s < tb, the partial increment
``W(s) - W(ta)`` consistent with it (a draw from the Brownian bridge pinned at both ends).

Paths built from normals (a ``torch.Generator``, an addressable noise source, or in-op Philox)
use one construction. Step k's increment is ``sqrt(tb - ta) * N_(0, k)``. Its bridge is Levy's
dyadic construction on a fixed tree: the midpoint of a sub-interval [a, b] of the step is
``(W(a) + W(b)) / 2 + sqrt((b - a) / 4) * N_(1, k, node)`` (node: heap index, 1 for the step's
midpoint, 2 node and 2 node + 1 for its halves), refined :data:`BRIDGE_DEPTH` levels towards s;
in the final sub-interval W(s) is the exact bridge draw with ``N_(1, k, leaf)``. Every normal is
addressed by the tree, not by the other query times, so W(s) does not depend on which other times
are asked; each W(s) has the exact Brownian law, and so does the joint law of any query times that
are not in the same final sub-interval (width ``(tb - ta) / 2**BRIDGE_DEPTH``).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import Tensor

from .. import ops

__all__ = [
    "BRIDGE_DEPTH", "PHILOX_BRIDGE_OFFSET", "NoiseSource", "BrownianPath", "ExternalPath", "KeyedPath",
    "GeneratorNormals", "PhiloxNormals", "philox_offset",
]

#: Levels of the dyadic bridge tree inside one solver step (final sub-interval: step / 1024).
BRIDGE_DEPTH = 10
#: In-op (Philox) noise: step k's increment uses stream ``offset = k`` (as the fused step ops do);
#: bridge normal ``(1, k, node)`` uses ``PHILOX_BRIDGE_OFFSET + k * 2**(BRIDGE_DEPTH + 1) + node``,
#: for k < 2**20. All offsets stay below 2**32 (the reference backend's stream keeps 32 bits).
PHILOX_BRIDGE_OFFSET = 1 << 31
_MAX_BRIDGED_STEP = 1 << 20

Key = tuple[int, ...]


class NoiseSource(Protocol):
    """Addressable normals: ``randn(key, shape)`` is (rows, *shape) N(0, 1), fixed by the key,
    independent across keys (and across rows)."""

    def randn(self, key: Key, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> Tensor: ...


class BrownianPath(Protocol):
    """The Brownian motion of one solve; ``seed`` is set when step increments are drawn in-op."""

    seed: int | None

    def increment(self, k: int, ta: float | Tensor, tb: float | Tensor) -> Tensor | None:
        """``W(tb) - W(ta)`` for main step k, shaped like the state; None: drawn inside the step op."""

    def partial(self, k: int, ta: float, tb: float, s: float) -> Tensor:
        """``W(s) - W(ta)`` for ta < s < tb, consistent with step k's increment."""


class ExternalPath:
    """A caller's Brownian path ``bm(ta, tb) -> W(tb) - W(ta)`` (e.g. a ``torchsde`` Brownian object).

    Its output (any shape with the state's number of elements per call) is reshaped to ``shape``.
    """

    seed = None

    def __init__(self, bm: Callable[..., Tensor], shape: torch.Size, dtype: torch.dtype,
                 device: torch.device) -> None:
        if not callable(bm):
            raise TypeError(f"bm must be a callable bm(ta, tb) returning increments, got {type(bm).__name__}")
        self.bm, self.shape, self.dtype, self.device = bm, shape, dtype, device

    def _call(self, ta: float | Tensor, tb: float | Tensor) -> Tensor:
        dw = self.bm(ta, tb)
        if not isinstance(dw, Tensor) or dw.numel() != math.prod(self.shape):
            got = tuple(dw.shape) if isinstance(dw, Tensor) else type(dw).__name__
            raise ValueError(f"bm(ta, tb) must return a tensor with {math.prod(self.shape)} elements "
                             f"(the state {tuple(self.shape)}), got {got}")
        return dw.reshape(self.shape).to(device=self.device, dtype=self.dtype)

    def increment(self, k: int, ta: float | Tensor, tb: float | Tensor) -> Tensor:
        return self._call(ta, tb)

    def partial(self, k: int, ta: float, tb: float, s: float) -> Tensor:
        return self._call(ta, s)


class KeyedPath:
    """Brownian path from addressable normals (see the module docstring for the construction).

    ``in_op_seed``: step increments are drawn inside the fused step ops from Philox stream
    (seed, offset=k); ``increment`` then returns None and the bridge regenerates the increment.
    """

    def __init__(self, source: NoiseSource, shape: torch.Size, dtype: torch.dtype, device: torch.device,
                 in_op_seed: int | None = None) -> None:
        self.source, self.shape, self.dtype, self.device = source, tuple(shape), dtype, device
        self.seed = in_op_seed
        self._normals: dict[Key, Tensor] = {}

    def _normal(self, key: Key) -> Tensor:
        if key not in self._normals:
            z = self.source.randn(key, self.shape[1:], dtype=self.dtype)
            self._normals[key] = z.to(device=self.device, dtype=self.dtype)
        return self._normals[key]

    def _step_increment(self, k: int, ta: float | Tensor, tb: float | Tensor) -> Tensor:
        return math.sqrt(float(tb) - float(ta)) * self._normal((0, k))

    def increment(self, k: int, ta: float | Tensor, tb: float | Tensor) -> Tensor | None:
        return None if self.seed is not None else self._step_increment(k, ta, tb)

    def partial(self, k: int, ta: float, tb: float, s: float) -> Tensor:
        h = tb - ta
        u = (s - ta) / h
        if not 0.0 < u < 1.0:
            raise ValueError(f"s must lie inside step {k} ({ta}, {tb}), got {s}")
        lo, hi = 0.0, 1.0
        w_hi = self._step_increment(k, ta, tb)
        w_lo = torch.zeros_like(w_hi)
        node = 1
        for _ in range(BRIDGE_DEPTH):
            mid = 0.5 * (lo + hi)
            w_mid = 0.5 * (w_lo + w_hi) + math.sqrt(h * (hi - lo) / 4) * self._normal((1, k, node))
            if u < mid:
                hi, w_hi, node = mid, w_mid, 2 * node
            else:
                lo, w_lo, node = mid, w_mid, 2 * node + 1
        bridge_std = math.sqrt(h * (u - lo) * (hi - u) / (hi - lo))
        return torch.lerp(w_lo, w_hi, (u - lo) / (hi - lo)) + bridge_std * self._normal((1, k, node))


class GeneratorNormals:
    """Normals from one ``torch.Generator`` (None: the global RNG) in draw order.

    The ``n_steps`` step normals ``(0, k)`` are drawn first, as one (n_steps, rows, *shape) block
    in step order; any other key draws the next (rows, *shape) normals. Deterministic for equal
    calls; keys are not addresses here (use a :class:`NoiseSource` for that).
    """

    def __init__(self, generator: torch.Generator | None, n_steps: int, shape: torch.Size,
                 dtype: torch.dtype, device: torch.device) -> None:
        self.generator, self.rows, self.device = generator, shape[0], device
        draw_device = generator.device if generator is not None else device
        self.steps = torch.randn((n_steps, *shape), generator=generator, dtype=dtype, device=draw_device)

    def randn(self, key: Key, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> Tensor:
        if key[0] == 0:
            return self.steps[key[1]]
        draw_device = self.generator.device if self.generator is not None else self.device
        return torch.randn((self.rows, *shape), generator=self.generator, dtype=dtype, device=draw_device)


def philox_offset(key: Key) -> int:
    """The Philox stream (``offset``) of normal ``key``: ``(0, k)`` -> k; ``(1, k, node)`` -> bridge range."""
    if key[0] == 0:
        return key[1]
    _, k, node = key
    if k >= _MAX_BRIDGED_STEP:
        raise ValueError(f"in-op noise bridges steps k < {_MAX_BRIDGED_STEP}, got an off-grid query in step {k}")
    return PHILOX_BRIDGE_OFFSET + k * 2 ** (BRIDGE_DEPTH + 1) + node


class PhiloxNormals:
    """The fused ops' in-kernel normals: ``randn(key, shape)`` is stream (seed, :func:`philox_offset`)
    over the whole (rows, *shape) tensor, as ``sde_step(..., dW=None, seed, offset)`` draws it."""

    def __init__(self, seed: int, rows: int, device: torch.device) -> None:
        self.seed, self.rows, self.device = seed, rows, device

    def randn(self, key: Key, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> Tensor:
        return ops.philox_normal((self.rows, *shape), self.seed, philox_offset(key), device=self.device, dtype=dtype)
