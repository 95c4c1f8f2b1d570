"""SDE step kernels: Euler-Maruyama / Euler-Heun corrector and the Heun predictor.

One fused kernel computes ``y + [f dt] + G W`` with ``G = g`` or ``(g + g_pred) / 2`` (tanh
applied in the kernel when ``g_is_raw``) and ``W = dW`` or, when no dW is given,
``sqrt(dt) * N(0, 1)`` drawn in the kernel: the normal of element ``i`` (NCHW-contiguous,
logical row-major order) of the Philox stream (seed, offset), bit-identical to the C++/CUDA
kernels and to ``stdiff.ops.philox_normal`` (see :mod:`._philox`; ``offset`` is a stream id:
steps 0, 1, 2, ... of a solver use offsets 0, 1, 2, ...). The noise therefore never touches
memory, and equal (seed, offset, shape) give equal noise in the predictor, the corrector and the
backward kernel (which draws it again). The SDE kernels are compiled without FMA contraction
(``enable_fp_fusion=False``), which the bit-exact noise needs; they are memory bound.

Explicit tensors keep any common dense layout (NCHW or channels_last); with in-kernel noise
inputs are made NCHW-contiguous so that the noise of an element does not depend on layout.
The scalars dt and sqrt(dt) enter the kernels as float32.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._math import load_acc, tanh
from ._philox import normal
from stdiff.ops.contract import output_format

from ._runtime import check_device, dense
from ._tuning import ELEMENTWISE_CONFIGS, autotuned, launch_flat


@triton.jit
def _diffusion(ptr, offs, mask, RAW: tl.constexpr):
    g = load_acc(ptr, offs, mask)
    if RAW:
        g = tanh(g)
    return g


@triton.jit
def _increment(w_ptr, offs, mask, noise_scale, seed, offset, HAS_W: tl.constexpr):
    """The Brownian increment: loaded, or sqrt(dt) * N(0, 1) of element offs of stream (seed, offset)."""
    if HAS_W:
        w = load_acc(w_ptr, offs, mask)
    else:
        w = normal(seed, offset, offs) * noise_scale
    return w


@triton.jit(do_not_specialize=["dt", "noise_scale", "seed", "offset"])
def _sde_fwd_kernel(
    y_ptr, f_ptr, g_ptr, gp_ptr, w_ptr, out_ptr, n, dt, noise_scale, seed, offset,
    HAS_F: tl.constexpr, HAS_GP: tl.constexpr, HAS_W: tl.constexpr, RAW: tl.constexpr, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    acc = load_acc(y_ptr, offs, mask)
    if HAS_F:
        acc += load_acc(f_ptr, offs, mask) * dt
    g = _diffusion(g_ptr, offs, mask, RAW)
    if HAS_GP:
        g = 0.5 * (g + _diffusion(gp_ptr, offs, mask, RAW))
    w = _increment(w_ptr, offs, mask, noise_scale, seed, offset, HAS_W)
    tl.store(out_ptr + offs, (acc + g * w).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["dt", "noise_scale", "seed", "offset"])
def _sde_bwd_kernel(
    go_ptr, g_ptr, gp_ptr, w_ptr, df_ptr, dg_ptr, dgp_ptr, dw_ptr, n, dt, noise_scale, seed, offset,
    NEED_F: tl.constexpr, NEED_G: tl.constexpr, HAS_GP: tl.constexpr, NEED_GP: tl.constexpr,
    HAS_W: tl.constexpr, NEED_W: tl.constexpr, RAW: tl.constexpr, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    go = load_acc(go_ptr, offs, mask)
    if NEED_F:
        tl.store(df_ptr + offs, (go * dt).to(df_ptr.dtype.element_ty), mask=mask)
    g = _diffusion(g_ptr, offs, mask, RAW)
    scale = 1.0
    if HAS_GP:
        scale = 0.5
        gp = _diffusion(gp_ptr, offs, mask, RAW)
    if NEED_G or NEED_GP:
        gw = go * _increment(w_ptr, offs, mask, noise_scale, seed, offset, HAS_W) * scale
        if NEED_G:
            dg = gw * (1.0 - g * g) if RAW else gw
            tl.store(dg_ptr + offs, dg.to(dg_ptr.dtype.element_ty), mask=mask)
        if NEED_GP:
            dgp = gw * (1.0 - gp * gp) if RAW else gw
            tl.store(dgp_ptr + offs, dgp.to(dgp_ptr.dtype.element_ty), mask=mask)
    if NEED_W:
        if HAS_GP:
            g = g + gp
        tl.store(dw_ptr + offs, (go * g * scale).to(dw_ptr.dtype.element_ty), mask=mask)


_sde_fwd = autotuned(_sde_fwd_kernel, ELEMENTWISE_CONFIGS, key=["n"])
_sde_bwd = autotuned(_sde_bwd_kernel, ELEMENTWISE_CONFIGS, key=["n"])


def _layout(tensors: list[Tensor | None], noise_in_kernel: bool) -> tuple[list[Tensor | None], torch.memory_format]:
    fmt = output_format(*tensors, allow_channels_last=not noise_in_kernel)
    return dense(tensors, fmt), fmt


def sde_forward(
    y: Tensor,
    f: Tensor | None,
    g: Tensor,
    dW: Tensor | None,
    dt: float,
    g_pred: Tensor | None,
    g_is_raw: bool,
    seed: int,
    offset: int,
) -> Tensor:
    """``y + [f dt] + G W`` (see the module docstring; the op contract's argument order, f None
    for the predictor); all tensors shaped like y."""
    check_device(*(t for t in (y, f, g, g_pred, dW) if t is not None))
    (y, f, g, g_pred, dW), fmt = _layout([y, f, g, g_pred, dW], dW is None)
    out = torch.empty_like(y, memory_format=fmt)
    n = y.numel()
    if n:
        launch_flat(
            _sde_fwd_kernel, _sde_fwd, n,
            y, y if f is None else f, g, g if g_pred is None else g_pred, y if dW is None else dW, out,
            n, dt, math.sqrt(dt) if dW is None else 0.0, seed, offset,
            HAS_F=f is not None, HAS_GP=g_pred is not None, HAS_W=dW is not None, RAW=g_is_raw,
            enable_fp_fusion=False,
        )
    return out


def sde_backward(
    go: Tensor,
    g: Tensor,
    g_pred: Tensor | None,
    dW: Tensor | None,
    dt: float,
    g_is_raw: bool,
    seed: int,
    offset: int,
    need_f: bool,
    need_g: bool,
    need_g_pred: bool,
    need_dW: bool,
) -> list[Tensor]:
    """Gradients of the fused step given its output gradient ``go``.

    Returns, in this order, those requested: d(f) = go dt, d(g), d(g_pred), d(dW). The gradient
    of y is ``go`` itself and is not computed here. ``need_g_pred`` / ``need_dW`` require
    g_pred / dW to be given.
    """
    check_device(*(t for t in (go, g, g_pred, dW) if t is not None))
    (go, g, g_pred, dW), fmt = _layout([go, g, g_pred, dW], dW is None)
    grads = {
        name: torch.empty_like(g, memory_format=fmt)
        for name, needed in (("f", need_f), ("g", need_g), ("gp", need_g_pred), ("w", need_dW))
        if needed
    }
    n = g.numel()
    if n and grads:
        launch_flat(
            _sde_bwd_kernel, _sde_bwd, n,
            go, g, g if g_pred is None else g_pred, g if dW is None else dW,
            *(grads.get(name, go) for name in ("f", "g", "gp", "w")),
            n, dt, math.sqrt(dt) if dW is None else 0.0, seed, offset,
            NEED_F=need_f, NEED_G=need_g, HAS_GP=g_pred is not None, NEED_GP=need_g_pred,
            HAS_W=dW is not None, NEED_W=need_dW, RAW=g_is_raw, enable_fp_fusion=False,
        )
    return list(grads.values())
