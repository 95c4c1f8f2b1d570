"""The in-op noise of the SDE ops in pure PyTorch: Philox4x32-10 and Box-Muller, bit for bit.

Every backend draws the Brownian increment of ``dW=None`` from the same function of
(seed, offset, element index): the reference backend with :func:`normals` below, the C++/CUDA
kernels with ``csrc/philox.h`` and the Triton kernels with ``kernels/_philox.py``. Element ``i``
(row-major, whatever the memory layout) is lane ``i % 4`` of Philox block ``i // 4`` with

    key = (seed low 32 bits, seed high 32 bits), counter = (block low, block high, offset low, offset high),

so ``offset`` is a stream id: offsets 0, 1, 2, ... give independent streams of any length. Each
block's words (w0, w1, w2, w3) become (R(w0) cos T(w1), R(w0) sin T(w1), R(w2) cos T(w3),
R(w2) sin T(w3)) with the short polynomials of ``csrc/philox.h`` (``|z| <= 5.77``).

Integers are held in int64 tensors with values in [0, 2^32); the 32x32 -> 64-bit products are
split into 16-bit halves so nothing overflows. Every float step is one correctly rounded float32
operation, so eager PyTorch reproduces the C++ bits exactly (under ``torch.compile`` Inductor may fuse a
multiply and an add, which changes the last bit).
"""
from __future__ import annotations

import torch
from torch import Tensor

_MASK = 0xFFFFFFFF
_ROUND_MUL = (0xD2511F53, 0xCD9E8D57)
_KEY_STEP = (0x9E3779B9, 0xBB67AE85)
_TWO_POW_M24 = 5.9604644775390625e-8


#: Most normals one call computes (the pure-PyTorch generator keeps several temporaries per element).
MAX_NUMEL = 2**31


def _mul_wide(m: int, c: Tensor) -> tuple[Tensor, Tensor]:
    """(high, low) 32-bit words of ``m * c`` for a 32-bit constant m and words c in [0, 2^32)."""
    low_part = (c & 0xFFFF) * m  # < 2^48
    high_part = (c >> 16) * m  # < 2^48
    low = low_part + ((high_part & 0xFFFF) << 16)  # < 2^49
    return ((high_part >> 16) + (low >> 32)) & _MASK, low & _MASK


def _philox4x32_10(blocks: Tensor, seed: int, offset: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The four output words of Philox4x32-10 for counters (block, offset) under key seed."""
    c0, c1 = blocks & _MASK, blocks >> 32
    c2, c3 = torch.full_like(blocks, offset & _MASK), torch.full_like(blocks, offset >> 32)
    k0, k1 = seed & _MASK, seed >> 32
    for _ in range(10):
        hi0, lo0 = _mul_wide(_ROUND_MUL[0], c0)
        hi1, lo1 = _mul_wide(_ROUND_MUL[1], c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + _KEY_STEP[0]) & _MASK, (k1 + _KEY_STEP[1]) & _MASK
    return c0, c1, c2, c3


def _radius(w: Tensor) -> Tensor:
    """sqrt(-2 ln u), u = (2 (w >> 9) + 1) 2^-24: csrc/philox.h box_muller_radius."""
    u = (((w >> 9) << 1) | 1).to(torch.float32) * _TWO_POW_M24
    bits = u.view(torch.int32).to(torch.int64)
    e = ((bits >> 23) & 0xFF) - 127
    mbits = (bits & 0x7FFFFF) | 0x3F800000
    big = mbits > 0x3FB504F3
    mbits = torch.where(big, mbits - 0x800000, mbits)
    e = torch.where(big, e + 1, e)
    m = mbits.to(torch.int32).view(torch.float32)
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    p = s2 * 0.11111111 + 0.14285715
    p = s2 * p + 0.2
    p = s2 * p + 0.33333334
    p = s2 * p + 1.0
    ln_m = (s * 2.0) * p
    fe = e.to(torch.float32)
    ln_u = fe * 0.693359375 + (fe * -2.12194440e-4 + ln_m)
    # torch.sqrt in float32 is not always correctly rounded on CPU; sqrt in float64 rounded to
    # float32 is (53 >= 2 * 24 + 2 bits), like the C++ and CUDA code.
    return torch.sqrt((ln_u * -2.0).double()).float()


def _angle(w: Tensor) -> tuple[Tensor, Tensor]:
    """(cos, sin) of 2 pi (w >> 8) 2^-24: csrc/philox.h box_muller_angle."""
    k = w >> 8
    q = (k + (1 << 21)) >> 22
    x = ((k - (q << 22)).to(torch.float32) * _TWO_POW_M24) * 6.28318548
    z = x * x
    ps = z * -1.9515295891e-4 + 8.3321608736e-3
    ps = z * ps + -1.6666654611e-1
    sn = (z * x) * ps + x
    pc = z * 2.443315711809948e-5 + -1.388731625493765e-3
    pc = z * pc + 4.166664568298827e-2
    cs = (z * z) * pc + (1.0 - z * 0.5)
    quadrant = q & 3
    cos = torch.where(quadrant == 0, cs, torch.where(quadrant == 1, -sn, torch.where(quadrant == 2, -cs, sn)))
    sin = torch.where(quadrant == 0, sn, torch.where(quadrant == 1, cs, torch.where(quadrant == 2, -sn, -cs)))
    return cos, sin


def normals(numel: int, seed: int, offset: int, device: torch.device | str | None = None) -> Tensor:
    """Standard normals (numel,) float32 of elements 0..numel-1 of the stream (seed, offset).

    Refuses more than :data:`MAX_NUMEL` elements (ValueError) before allocating anything."""
    if numel > MAX_NUMEL:
        raise ValueError(f"shape has {numel:,} elements, above the limit of {MAX_NUMEL:,} (2**31) Philox normals "
                         "per call (8 GiB of float32 and several times that in temporaries)")
    blocks = torch.arange((numel + 3) // 4, dtype=torch.int64, device=device)
    w0, w1, w2, w3 = _philox4x32_10(blocks, seed, offset)
    ra, rb = _radius(w0), _radius(w2)
    ca, sa = _angle(w1)
    cb, sb = _angle(w3)
    return torch.stack([ra * ca, ra * sa, rb * cb, rb * sb], dim=1).reshape(-1)[:numel]
