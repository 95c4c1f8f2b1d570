"""Addressable noise: one independent stream of standard normals per batch row.

A prediction batch holds N videos x S samples (rows ``v * S + s``). Every random number the
predictor uses is ``streams.randn(key, shape)[row]``: a pure function of the row's seed, the
``key`` (a tuple of ints naming the draw) and the shape. So a row's numbers do not depend on how
many other rows, videos or query times a call has: the first 4 samples of an 8-sample call are
the 4 samples of a 4-sample call, and video 0 does not change when a video is added.

Key namespaces: ``(0, k)`` the SDE's Brownian increment of solver step k, ``(1, k)`` the bridge
draws of step k (both used by :class:`stdiff.models.MotionSDE`), ``(2, frame_key(time), step)`` the
diffusion noise (step -1 is the initial x_T of the frame); 3 and above are free.

Generator: counter-based (splitmix64 on ``row key + (i + 1) * golden``, element i of the
flattened shape) then Box-Muller in float64, vectorised in integer tensor ops on any device.
The integer part is bit-exact on every device; the float64 log/cos/sqrt may differ by an ulp
between CPU and CUDA libraries, so the same seed gives the same numbers on every CPU and on
every CUDA device up to float64 rounding (invisible after the cast to float32 in almost every
element), and the same frames up to the model's own float differences between devices.
Cost: about 25 elementwise ops on (rows, numel) int64/float64 tensors per draw.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .checks import integer

__all__ = ["NoiseStreams"]

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_VIDEO_TAG = 0x5354_4469_6666_0001  # domain separation of for_videos row seeds


def _mix(z: int) -> int:
    """splitmix64's finaliser on a python int (exact 64-bit arithmetic)."""
    z &= _MASK
    z = ((z ^ (z >> 30)) * _M1) & _MASK
    z = ((z ^ (z >> 27)) * _M2) & _MASK
    return z ^ (z >> 31)


def _combine(h: int, value: int) -> int:
    """Hash ``value`` into the running hash ``h`` (order matters)."""
    return _mix(h ^ _mix((value + _GOLDEN) & _MASK))


def _signed(u: int) -> int:
    """An unsigned 64-bit int as the int64 with the same bits."""
    return u - (1 << 64) if u >= 1 << 63 else u


def _shr(x: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 bits (torch's >> is arithmetic on signed ints)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _mix_tensor(z: Tensor) -> Tensor:
    """splitmix64's finaliser on int64 tensors (multiplication wraps modulo 2**64)."""
    z = (z ^ _shr(z, 30)) * _signed(_M1)
    z = (z ^ _shr(z, 27)) * _signed(_M2)
    return z ^ _shr(z, 31)


class NoiseStreams:
    """One addressable standard-normal stream per batch row (see the module docstring).

    seeds: one int per row (any python ints; reduced modulo 2**64); device: where draws land.
    """

    def __init__(self, seeds: Sequence[int], device: str | torch.device = "cpu") -> None:
        if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or len(seeds) == 0:
            raise ValueError(f"seeds must be a non-empty sequence of ints (one per row), got {seeds!r}")
        if any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
            raise TypeError(f"seeds must hold only ints, got {list(seeds)!r}")
        self.seeds: tuple[int, ...] = tuple(s & _MASK for s in seeds)
        self.device = torch.device(device)

    @classmethod
    def for_videos(cls, seed: int, num_videos: int, num_samples: int,
                   device: str | torch.device = "cpu") -> NoiseStreams:
        """Rows ``v * num_samples + s`` (video-major, like ``repeat_interleave``); row (v, s)'s seed
        mixes (seed, v, s) only, so it does not depend on num_videos or num_samples."""
        integer("seed", seed, 0)
        integer("num_videos", num_videos, 1)
        integer("num_samples", num_samples, 1)
        base = _combine(_VIDEO_TAG, seed)
        return cls([_combine(_combine(base, v), s) for v in range(num_videos) for s in range(num_samples)], device)

    @classmethod
    def from_generator(cls, generator: torch.Generator | None, rows: int,
                       device: str | torch.device = "cpu") -> NoiseStreams:
        """Rows seeded by one draw of 64-bit ints from ``generator`` (the global RNG when None)."""
        integer("rows", rows, 1)
        draw_device = generator.device if generator is not None else "cpu"
        seeds = torch.randint(-(2**63), 2**63 - 1, (rows,), generator=generator, dtype=torch.int64,
                              device=draw_device)
        return cls([int(s) for s in seeds.tolist()], device)

    def __len__(self) -> int:
        return len(self.seeds)

    def randn(self, key: tuple[int, ...], shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> Tensor:
        """Standard normals (rows, *shape) on ``self.device``: row r is a function of (seed r, key, shape)
        only; different keys or rows give independent numbers."""
        if not isinstance(key, tuple) or any(isinstance(k, bool) or not isinstance(k, int) for k in key):
            raise TypeError(f"key must be a tuple of ints, got {key!r}")
        shape = tuple(int(s) for s in shape)
        if any(s < 0 for s in shape):
            raise ValueError(f"shape must hold sizes >= 0, got {shape}")
        bases = []
        for seed in self.seeds:
            h = seed
            for k in key:
                h = _combine(h, k)
            bases.append(_signed(h))
        numel = math.prod(shape)
        base = torch.tensor(bases, dtype=torch.int64, device=self.device)[:, None]
        counter = torch.arange(1, numel + 1, dtype=torch.int64, device=self.device)[None, :]
        bits = _mix_tensor(base + counter * _signed(_GOLDEN))
        # two 32-bit uniforms per element: u1 in (0, 1] (log-safe), u2 in [0, 1)
        u1 = (_shr(bits, 32) + 1).double() * 2.0**-32
        u2 = (bits & 0xFFFFFFFF).double() * 2.0**-32
        z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)
        return z.to(dtype).reshape(len(self.seeds), *shape)
