"""Device math helpers for the Triton kernels.

Written with ``tl.exp`` only: libdevice functions (``tanh``, ...) do not run in the Triton
interpreter, and these forms are as fast on GPUs (the ops are memory bound).
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def upcast(x):
    """float16/bfloat16/float32 -> float32 (the accumulation type); float64 stays float64."""
    if x.dtype == tl.float64:
        y = x
    else:
        y = x.to(tl.float32)
    return y


@triton.jit
def load_acc(ptr, offs, mask):
    """Masked load (0 where masked) converted to the accumulation type of :func:`upcast`."""
    return upcast(tl.load(ptr + offs, mask=mask, other=0.0))


@triton.jit
def sigmoid(x):
    """1 / (1 + exp(-x)); exp overflow gives the correct limit 0."""
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def tanh(x):
    """sign(x) (1 - e) / (1 + e) with e = exp(-2|x|) <= 1, so nothing overflows.

    For |x| < 1/8 (float32) the odd Taylor polynomial to x^7 replaces it: 1 - e cancels there
    (relative error up to 1e-3 near 1e-5), the polynomial's relative error is below 2e-9.
    """
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    t = tl.where(x < 0, -t, t)
    if x.dtype != tl.float64:
        x2 = x * x
        p = x * (1.0 + x2 * (-0.3333333333333333 + x2 * (0.13333333333333333 + x2 * -0.05396825396825397)))
        t = tl.where(tl.abs(x) < 0.125, p, t)
    return t
