"""The in-op noise of the SDE kernels: Philox4x32-10 and Box-Muller, bit-identical to csrc/philox.h.

Element ``i`` (row-major) of the stream (seed, offset) is lane ``i % 4`` of Philox block
``i // 4``, with key (seed low, seed high) and counter (block low, block high, offset low,
offset high): ``offset`` is a stream id, not an element shift. ``tl.philox`` is exactly the
Philox4x32-10 of csrc/philox.h; the Box-Muller transform below repeats its polynomials with
correctly rounded division and square root (``div_rn``, ``sqrt_rn``). The kernels that call
:func:`normal` are launched with ``enable_fp_fusion=False`` so that no multiply-add is fused
and every float step rounds as on the CPU (the interpreter never fuses).
"""
from __future__ import annotations

import triton
import triton.language as tl

_TWO_POW_M24 = tl.constexpr(5.9604644775390625e-8)


@triton.jit
def _radius(w):
    """sqrt(-2 ln u), u = (2 (w >> 9) + 1) 2^-24 (csrc/philox.h box_muller_radius)."""
    u = (((w >> 9) << 1) | 1).to(tl.float32) * _TWO_POW_M24
    bits = u.to(tl.uint32, bitcast=True)
    e = ((bits >> 23) & 0xFF).to(tl.int32) - 127
    mbits = (bits & 0x7FFFFF) | 0x3F800000
    big = mbits > 0x3FB504F3
    mbits = tl.where(big, mbits - 0x800000, mbits)
    e = tl.where(big, e + 1, e)
    m = mbits.to(tl.float32, bitcast=True)
    s = tl.math.div_rn(m - 1.0, m + 1.0)
    s2 = s * s
    p = s2 * 0.11111111 + 0.14285715
    p = s2 * p + 0.2
    p = s2 * p + 0.33333334
    p = s2 * p + 1.0
    ln_m = (s * 2.0) * p
    fe = e.to(tl.float32)
    ln_u = fe * 0.693359375 + (fe * -2.12194440e-4 + ln_m)
    return tl.math.sqrt_rn(ln_u * -2.0)


@triton.jit
def _cos_or_sin(w, SIN):
    """cos (or, where SIN, sin) of 2 pi (w >> 8) 2^-24 (csrc/philox.h box_muller_angle)."""
    k = (w >> 8).to(tl.int32)
    q = (k + (1 << 21)) >> 22
    x = ((k - (q << 22)).to(tl.float32) * _TWO_POW_M24) * 6.28318548
    z = x * x
    ps = z * -1.9515295891e-4 + 8.3321608736e-3
    ps = z * ps + -1.6666654611e-1
    sn = (z * x) * ps + x
    pc = z * 2.443315711809948e-5 + -1.388731625493765e-3
    pc = z * pc + 4.166664568298827e-2
    cs = (z * z) * pc + (1.0 - z * 0.5)
    # sin(a) = cos(a - quarter turn): the sine is the cosine one quadrant on
    quadrant = (q + tl.where(SIN, 3, 0)) & 3
    return tl.where(quadrant == 0, cs, tl.where(quadrant == 1, -sn, tl.where(quadrant == 2, -cs, sn)))


@triton.jit
def normal(seed, offset, index):
    """float32 N(0, 1) of elements ``index`` (int64 tensor, >= 0) of the stream (seed, offset)."""
    block = index >> 2
    lane = index & 3
    off = tl.to_tensor(offset).to(tl.uint64)
    zero = (block * 0).to(tl.uint32)
    w0, w1, w2, w3 = tl.philox(
        seed,
        (block & 0xFFFFFFFF).to(tl.uint32),
        (block >> 32).to(tl.uint32),
        zero + (off & 0xFFFFFFFF).to(tl.uint32),
        zero + (off >> 32).to(tl.uint32),
    )
    first_pair = lane < 2
    radius = _radius(tl.where(first_pair, w0, w2))
    return radius * _cos_or_sin(tl.where(first_pair, w1, w3), (lane & 1) == 1)
