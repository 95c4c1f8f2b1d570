"""Conv-GRU kernels: gates ``(u, r*h)`` and the state update, forward and backward.

Layout: the gate tensors gx, gh, ds are (N, 2F, H, W) and the rest (N, F, H, W), in their
common layout (NCHW-contiguous or channels_last; any other mix is made NCHW). Memory is cut in
B segments of M elements of the state and 2M of the gates, update half first: NCHW segments are
samples (B = N, M = F*H*W), channels_last ones pixels (B = N*H*W, M = F). Program ``pid``
handles segment ``pid // nblk`` and elements ``[b*BLOCK, (b+1)*BLOCK)`` of both halves, without
per-element division. The update kernels are plain elementwise and keep the common layout.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._math import load_acc, sigmoid, tanh
from stdiff.ops.contract import output_format

from ._runtime import INTERPRET, check_device, dense, interpret_block
from ._tuning import ELEMENTWISE_CONFIGS, autotuned, launch_flat


@triton.jit
def _gate_offsets(M, BLOCK: tl.constexpr):
    """Offsets into the (N, F, ...) state, the update half and the reset half of (N, 2F, ...)."""
    nblk = tl.cdiv(M, BLOCK)
    pid = tl.program_id(0)
    n = (pid // nblk).to(tl.int64)
    j = (pid % nblk) * BLOCK + tl.arange(0, BLOCK)
    state = n * M + j
    upd = 2 * n * M + j
    return state, upd, upd + M, j < M


@triton.jit
def _gates_fwd_kernel(gx_ptr, gh_ptr, h_ptr, u_ptr, rh_ptr, M, BLOCK: tl.constexpr):
    state, upd, rst, mask = _gate_offsets(M, BLOCK)
    u = sigmoid(load_acc(gx_ptr, upd, mask) + load_acc(gh_ptr, upd, mask))
    r = sigmoid(load_acc(gx_ptr, rst, mask) + load_acc(gh_ptr, rst, mask))
    h = load_acc(h_ptr, state, mask)
    tl.store(u_ptr + state, u.to(u_ptr.dtype.element_ty), mask=mask)
    tl.store(rh_ptr + state, (r * h).to(rh_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _gates_bwd_kernel(
    u_ptr, gx_ptr, gh_ptr, h_ptr, du_ptr, drh_ptr, ds_ptr, dh_ptr, M,
    HAS_DU: tl.constexpr, HAS_DRH: tl.constexpr, NEED_G: tl.constexpr, NEED_H: tl.constexpr, BLOCK: tl.constexpr,
):
    """d(gx) = d(gh) (both halves) when NEED_G, d(h) when NEED_H; the update gate is the saved
    forward output u (no sigmoid recomputed); an absent upstream gradient (HAS_*) is zero."""
    state, upd, rst, mask = _gate_offsets(M, BLOCK)
    zero = tl.zeros([BLOCK], dtype=tl.float32)
    if HAS_DRH:
        r = sigmoid(load_acc(gx_ptr, rst, mask) + load_acc(gh_ptr, rst, mask))
        drh = load_acc(drh_ptr, state, mask)
    if NEED_G:
        out_ty = ds_ptr.dtype.element_ty
        if HAS_DU:
            u = load_acc(u_ptr, state, mask)
            tl.store(ds_ptr + upd, (load_acc(du_ptr, state, mask) * u * (1.0 - u)).to(out_ty), mask=mask)
        else:
            tl.store(ds_ptr + upd, zero.to(out_ty), mask=mask)
        if HAS_DRH:
            tl.store(ds_ptr + rst, (drh * load_acc(h_ptr, state, mask) * r * (1.0 - r)).to(out_ty), mask=mask)
        else:
            tl.store(ds_ptr + rst, zero.to(out_ty), mask=mask)
    if NEED_H:
        if HAS_DRH:
            tl.store(dh_ptr + state, (drh * r).to(dh_ptr.dtype.element_ty), mask=mask)
        else:
            tl.store(dh_ptr + state, zero.to(dh_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _update_fwd_kernel(cx_ptr, ch_ptr, u_ptr, h_ptr, out_ptr, n, STANDARD: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    c = tanh(load_acc(cx_ptr, offs, mask) + load_acc(ch_ptr, offs, mask))
    u = load_acc(u_ptr, offs, mask)
    h = load_acc(h_ptr, offs, mask)
    if STANDARD:
        c = u * c
    tl.store(out_ptr + offs, ((1.0 - u) * h + c).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _update_bwd_kernel(
    cx_ptr, ch_ptr, u_ptr, h_ptr, go_ptr, ds_ptr, du_ptr, dh_ptr, n,
    STANDARD: tl.constexpr, NEED_C: tl.constexpr, NEED_U: tl.constexpr, NEED_H: tl.constexpr, BLOCK: tl.constexpr,
):
    """The gradients asked for (NEED_*): d(cx) = d(ch), d(u), d(h)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    c = tanh(load_acc(cx_ptr, offs, mask) + load_acc(ch_ptr, offs, mask))
    u = load_acc(u_ptr, offs, mask)
    h = load_acc(h_ptr, offs, mask)
    go = load_acc(go_ptr, offs, mask)
    if NEED_C:
        dc = go * u if STANDARD else go
        tl.store(ds_ptr + offs, (dc * (1.0 - c * c)).to(ds_ptr.dtype.element_ty), mask=mask)
    if NEED_U:
        du = go * (c - h) if STANDARD else -go * h
        tl.store(du_ptr + offs, du.to(du_ptr.dtype.element_ty), mask=mask)
    if NEED_H:
        tl.store(dh_ptr + offs, (go * (1.0 - u)).to(dh_ptr.dtype.element_ty), mask=mask)


_gates_fwd = autotuned(_gates_fwd_kernel, ELEMENTWISE_CONFIGS, key=["M"])
_gates_bwd = autotuned(_gates_bwd_kernel, ELEMENTWISE_CONFIGS, key=["M"])
_update_fwd = autotuned(_update_fwd_kernel, ELEMENTWISE_CONFIGS, key=["n"])
_update_bwd = autotuned(_update_bwd_kernel, ELEMENTWISE_CONFIGS, key=["n"])


def _launch_gates(kernel, tuned, batch: int, M: int, *args, **constexprs) -> None:
    if INTERPRET:
        block = interpret_block(M)
        kernel[(batch * triton.cdiv(M, block),)](*args, M, BLOCK=block, **constexprs)
    else:
        tuned[lambda meta: (batch * triton.cdiv(M, meta["BLOCK"]),)](*args, M, **constexprs)


def _segments(h: Tensor, fmt: torch.memory_format) -> tuple[int, int]:
    """(B, M): segments of the state and their length in layout ``fmt`` (see the module docstring)."""
    n, f = h.shape[0], h.shape[1]
    if fmt == torch.channels_last:
        return h.numel() // f, f
    return n, h.numel() // n


def gates_forward(gx: Tensor, gh: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    """u, r*h from gx, gh (N, 2F, H, W) and h (N, F, H, W); outputs (N, F, H, W) in the common layout."""
    check_device(gx, gh, h)
    fmt = output_format(gx, gh, h)
    gx, gh, h = dense([gx, gh, h], fmt)
    u, rh = torch.empty_like(h, memory_format=fmt), torch.empty_like(h, memory_format=fmt)
    if h.numel():
        _launch_gates(_gates_fwd_kernel, _gates_fwd, *_segments(h, fmt), gx, gh, h, u, rh)
    return u, rh


def gates_backward(
    u: Tensor, gx: Tensor, gh: Tensor, h: Tensor, du: Tensor | None, drh: Tensor | None, need_g: bool, need_h: bool
) -> tuple[Tensor | None, Tensor | None]:
    """(d(gx) = d(gh) (N, 2F, H, W) when ``need_g``, d(h) (N, F, H, W) when ``need_h``; None
    otherwise) given d(u), d(r*h) (None: zero) and the forward output ``u``."""
    check_device(*(t for t in (u, gx, gh, h, du, drh) if t is not None))
    fmt = output_format(gx, gh, h, du, drh, u)
    u, gx, gh, h, du, drh = dense([u, gx, gh, h, du, drh], fmt)
    ds = torch.empty_like(gx, memory_format=fmt) if need_g else None
    dh = torch.empty_like(h, memory_format=fmt) if need_h else None
    if h.numel() and (need_g or need_h):
        _launch_gates(
            _gates_bwd_kernel, _gates_bwd, *_segments(h, fmt), u, gx, gh, h, h if du is None else du,
            h if drh is None else drh, gx if ds is None else ds, h if dh is None else dh,
            HAS_DU=du is not None, HAS_DRH=drh is not None, NEED_G=need_g, NEED_H=need_h,
        )
    return ds, dh


def update_forward(cx: Tensor, ch: Tensor, u: Tensor, h: Tensor, standard: bool) -> Tensor:
    """(1-u)*h + tanh(cx+ch) (or + u*tanh(cx+ch) when ``standard``); same shape, common layout."""
    check_device(cx, ch, u, h)
    fmt = output_format(cx, ch, u, h)
    cx, ch, u, h = dense([cx, ch, u, h], fmt)
    out = torch.empty_like(h, memory_format=fmt)
    if h.numel():
        launch_flat(_update_fwd_kernel, _update_fwd, h.numel(), cx, ch, u, h, out, h.numel(), STANDARD=standard)
    return out


def update_backward(
    go: Tensor, cx: Tensor, ch: Tensor, u: Tensor, h: Tensor, standard: bool, need_c: bool, need_u: bool, need_h: bool
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """The gradients asked for among (d(cx) = d(ch), d(u), d(h)) of the update given the output
    gradient ``go`` (None for those not asked for)."""
    check_device(cx, ch, u, h, go)
    fmt = output_format(cx, ch, u, h, go)
    cx, ch, u, h, go = dense([cx, ch, u, h, go], fmt)
    ds, du, dh = (torch.empty_like(h, memory_format=fmt) if need else None for need in (need_c, need_u, need_h))
    if h.numel() and (need_c or need_u or need_h):
        launch_flat(
            _update_bwd_kernel, _update_bwd, h.numel(), cx, ch, u, h, go,
            *(h if t is None else t for t in (ds, du, dh)), h.numel(),
            STANDARD=standard, NEED_C=need_c, NEED_U=need_u, NEED_H=need_h,
        )
    return ds, du, dh
