"""SPADE normalisation kernels: ``IN(h) * (1 + gamma) + beta (+ bias)``, forward and backward.

h, gamma, beta are viewed as R = N*C rows of HW = H*W elements (NCHW-contiguous: channels_last
inputs are copied to NCHW for the kernels and the results copied back to channels_last, as the
op contract's layout rule asks; NHWC kernels would save those copies). Everything is computed in
float32, whatever the input dtype. The forward pass keeps its row statistics in the kernels; the
backward pass recomputes the per-row mean and 1/std (float32, (N, C)) from h, as the C++/CUDA
kernels do, and computes and writes only the gradients its output mask asks for.

Two paths:
- rows (HW <= SINGLE_PASS_MAX_HW): one kernel; a program holds ROWS whole rows in registers,
  computes mean and the biased variance (two passes over registers, no cancellation) and
  writes the affine result: h, gamma, beta read once, out written once.
- split rows (longer rows): each row is cut into chunks of SPLIT_CHUNK handled by separate
  programs; kernel 1 writes per-chunk (mean, M2), kernel 2 merges them (Chan's formula,
  exact up to rounding) and applies the affine map to its chunk (h read twice).
The backward pass uses the same two paths with the per-row sums of dxhat and dxhat * xhat.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from stdiff.ops.contract import output_format

from ._runtime import INTERPRET, INTERPRET_BLOCK, check_device
from ._tuning import CHUNK_CONFIGS, ROWS_CONFIGS, autotuned

# Rows up to this length take the one-kernel path (64x64 on GPUs; everything in the interpreter).
SINGLE_PASS_MAX_HW: int = INTERPRET_BLOCK if INTERPRET else 4096
# Chunk length of the split-row path (a power of two).
SPLIT_CHUNK: int = INTERPRET_BLOCK if INTERPRET else 4096


@triton.jit
def _row_block(R, HW, BLOCK_HW: tl.constexpr, TILE: tl.constexpr):
    """Rows, element offsets and mask of this program's (ROWS, BLOCK_HW) tile."""
    ROWS: tl.constexpr = (TILE + BLOCK_HW - 1) // BLOCK_HW
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_HW)
    mask = (rows < R)[:, None] & (cols < HW)[None, :]
    return rows, rows.to(tl.int64)[:, None] * HW + cols[None, :], mask


@triton.jit
def _chunk(HW, NCH, CHUNK: tl.constexpr):
    """Row, chunk index, element offsets and mask of this split-row program."""
    pid = tl.program_id(0)
    row = pid // NCH
    ch = pid % NCH
    cols = ch * CHUNK + tl.arange(0, CHUNK)
    return row, ch, row.to(tl.int64) * HW + cols, cols < HW


@triton.jit
def _load32(ptr, offs, mask):
    return tl.load(ptr + offs, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _affine(xhat, gam_ptr, bet_ptr, offs, mask):
    return xhat * (1.0 + _load32(gam_ptr, offs, mask)) + _load32(bet_ptr, offs, mask)


@triton.jit
def _chunk_sizes(HW, NCH, CHUNK: tl.constexpr, NCH_P2: tl.constexpr):
    """Chunk indices k (padded to NCH_P2), their validity and element counts (float32)."""
    k = tl.arange(0, NCH_P2)
    valid = k < NCH
    cnt = tl.where(valid, tl.minimum(HW - k * CHUNK, CHUNK), 0).to(tl.float32)
    return k, valid, cnt


@triton.jit
def _spade_fwd_rows_kernel(
    x_ptr, gam_ptr, bet_ptr, bias_ptr, out_ptr, R, HW, eps,
    HAS_BIAS: tl.constexpr, BLOCK_HW: tl.constexpr, TILE: tl.constexpr,
):
    rows, offs, mask = _row_block(R, HW, BLOCK_HW, TILE)
    rmask = rows < R
    x = _load32(x_ptr, offs, mask)
    mean = tl.sum(x, axis=1) / HW
    d = tl.where(mask, x - mean[:, None], 0.0)
    rstd = tl.rsqrt(tl.sum(d * d, axis=1) / HW + eps)
    out = _affine(d * rstd[:, None], gam_ptr, bet_ptr, offs, mask)
    if HAS_BIAS:
        out += _load32(bias_ptr, rows, rmask)[:, None]
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _spade_stats_kernel(x_ptr, pmean_ptr, pm2_ptr, HW, NCH, CHUNK: tl.constexpr):
    row, ch, offs, mask = _chunk(HW, NCH, CHUNK)
    x = _load32(x_ptr, offs, mask)
    mean = tl.sum(x, axis=0) / tl.minimum(HW - ch * CHUNK, CHUNK).to(tl.float32)
    d = tl.where(mask, x - mean, 0.0)
    tl.store(pmean_ptr + tl.program_id(0), mean)
    tl.store(pm2_ptr + tl.program_id(0), tl.sum(d * d, axis=0))


@triton.jit
def _spade_fwd_split_kernel(
    x_ptr, gam_ptr, bet_ptr, bias_ptr, out_ptr, pmean_ptr, pm2_ptr, HW, NCH, eps,
    HAS_BIAS: tl.constexpr, CHUNK: tl.constexpr, NCH_P2: tl.constexpr,
):
    row, ch, offs, mask = _chunk(HW, NCH, CHUNK)
    k, valid, cnt = _chunk_sizes(HW, NCH, CHUNK, NCH_P2)
    pmean = tl.load(pmean_ptr + row * NCH + k, mask=valid, other=0.0)
    mean = tl.sum(cnt * pmean, axis=0) / HW
    dm = pmean - mean
    m2 = tl.sum(tl.load(pm2_ptr + row * NCH + k, mask=valid, other=0.0) + cnt * dm * dm, axis=0)
    rstd = tl.rsqrt(m2 / HW + eps)
    out = _affine((_load32(x_ptr, offs, mask) - mean) * rstd, gam_ptr, bet_ptr, offs, mask)
    if HAS_BIAS:
        out += tl.load(bias_ptr + row).to(tl.float32)
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _spade_bwd_rows_kernel(
    go_ptr, x_ptr, gam_ptr, mean_ptr, rstd_ptr, dx_ptr, dgam_ptr, dbias_ptr, R, HW,
    NEED_H: tl.constexpr, NEED_GAMMA: tl.constexpr, NEED_BIAS: tl.constexpr,
    BLOCK_HW: tl.constexpr, TILE: tl.constexpr,
):
    rows, offs, mask = _row_block(R, HW, BLOCK_HW, TILE)
    rmask = rows < R
    go = _load32(go_ptr, offs, mask)
    if NEED_H or NEED_GAMMA:
        mean = tl.load(mean_ptr + rows, mask=rmask, other=0.0)
        rstd = tl.load(rstd_ptr + rows, mask=rmask, other=0.0)
        xhat = tl.where(mask, (_load32(x_ptr, offs, mask) - mean[:, None]) * rstd[:, None], 0.0)
    if NEED_GAMMA:
        tl.store(dgam_ptr + offs, (go * xhat).to(dgam_ptr.dtype.element_ty), mask=mask)
    if NEED_H:
        dxhat = go * (1.0 + _load32(gam_ptr, offs, mask))
        c1 = tl.sum(dxhat, axis=1) / HW
        c2 = tl.sum(dxhat * xhat, axis=1) / HW
        dx = rstd[:, None] * (dxhat - c1[:, None] - xhat * c2[:, None])
        tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
    if NEED_BIAS:
        tl.store(dbias_ptr + rows, tl.sum(go, axis=1).to(dbias_ptr.dtype.element_ty), mask=rmask)


@triton.jit
def _spade_bwd_partial_kernel(
    go_ptr, x_ptr, gam_ptr, mean_ptr, rstd_ptr, dgam_ptr, p1_ptr, p2_ptr, p3_ptr, HW, NCH,
    NEED_H: tl.constexpr, NEED_GAMMA: tl.constexpr, NEED_BIAS: tl.constexpr, CHUNK: tl.constexpr,
):
    row, ch, offs, mask = _chunk(HW, NCH, CHUNK)
    go = _load32(go_ptr, offs, mask)
    pid = tl.program_id(0)
    if NEED_H or NEED_GAMMA:
        xhat = tl.where(mask, (_load32(x_ptr, offs, mask) - tl.load(mean_ptr + row)) * tl.load(rstd_ptr + row), 0.0)
    if NEED_GAMMA:
        tl.store(dgam_ptr + offs, (go * xhat).to(dgam_ptr.dtype.element_ty), mask=mask)
    if NEED_H:
        dxhat = go * (1.0 + _load32(gam_ptr, offs, mask))
        tl.store(p1_ptr + pid, tl.sum(dxhat, axis=0))
        tl.store(p2_ptr + pid, tl.sum(dxhat * xhat, axis=0))
    if NEED_BIAS:
        tl.store(p3_ptr + pid, tl.sum(go, axis=0))


@triton.jit
def _spade_bwd_split_kernel(
    go_ptr, x_ptr, gam_ptr, mean_ptr, rstd_ptr, dx_ptr, dbias_ptr, p1_ptr, p2_ptr, p3_ptr, HW, NCH,
    NEED_H: tl.constexpr, NEED_BIAS: tl.constexpr, CHUNK: tl.constexpr, NCH_P2: tl.constexpr,
):
    row, ch, offs, mask = _chunk(HW, NCH, CHUNK)
    k = tl.arange(0, NCH_P2)
    valid = k < NCH
    if NEED_H:
        c1 = tl.sum(tl.load(p1_ptr + row * NCH + k, mask=valid, other=0.0), axis=0) / HW
        c2 = tl.sum(tl.load(p2_ptr + row * NCH + k, mask=valid, other=0.0), axis=0) / HW
        rstd = tl.load(rstd_ptr + row)
        xhat = tl.where(mask, (_load32(x_ptr, offs, mask) - tl.load(mean_ptr + row)) * rstd, 0.0)
        dxhat = _load32(go_ptr, offs, mask) * (1.0 + _load32(gam_ptr, offs, mask))
        tl.store(dx_ptr + offs, (rstd * (dxhat - c1 - xhat * c2)).to(dx_ptr.dtype.element_ty), mask=mask)
    if NEED_BIAS:
        dbias = tl.sum(tl.load(p3_ptr + row * NCH + k, mask=valid, other=0.0), axis=0)
        tl.store(dbias_ptr + row, dbias.to(dbias_ptr.dtype.element_ty), mask=ch == 0)


_fwd_rows = autotuned(_spade_fwd_rows_kernel, ROWS_CONFIGS, key=["R", "HW"])
_bwd_rows = autotuned(_spade_bwd_rows_kernel, ROWS_CONFIGS, key=["R", "HW"])
_stats = autotuned(_spade_stats_kernel, CHUNK_CONFIGS, key=["HW", "NCH"])
_fwd_split = autotuned(_spade_fwd_split_kernel, CHUNK_CONFIGS, key=["HW", "NCH"])
_bwd_partial = autotuned(_spade_bwd_partial_kernel, CHUNK_CONFIGS, key=["HW", "NCH"])
_bwd_split = autotuned(_spade_bwd_split_kernel, CHUNK_CONFIGS, key=["HW", "NCH"])


def _launch_rows(kernel, tuned, R: int, HW: int, *args, **constexprs) -> None:
    block_hw = triton.next_power_of_2(HW)
    if INTERPRET:
        tile = min(INTERPRET_BLOCK, max(block_hw, triton.next_power_of_2(R) * block_hw))
        kernel[(triton.cdiv(R, tile // block_hw),)](*args, BLOCK_HW=block_hw, TILE=tile, **constexprs)
    else:
        grid = lambda meta: (triton.cdiv(R, triton.cdiv(meta["TILE"], block_hw)),)  # noqa: E731
        tuned[grid](*args, BLOCK_HW=block_hw, **constexprs)


def _launch_chunks(kernel, tuned, R: int, NCH: int, *args, **constexprs) -> None:
    if INTERPRET:
        kernel[(R * NCH,)](*args, CHUNK=SPLIT_CHUNK, **constexprs)
    else:
        tuned[(R * NCH,)](*args, CHUNK=SPLIT_CHUNK, **constexprs)


def _rows(h: Tensor) -> tuple[int, int]:
    R = h.shape[0] * h.shape[1]
    return R, (h.numel() // R if R else 0)


def spade_forward(h: Tensor, gamma: Tensor, beta: Tensor, bias: Tensor | None, eps: float) -> Tensor:
    """SPADE forward. h, gamma, beta (N, C, H, W), bias (N, C) or None -> out (N, C, H, W) in h's
    dtype and the inputs' common layout."""
    check_device(*(t for t in (h, gamma, beta, bias) if t is not None))
    fmt = output_format(h, gamma, beta)
    out = _forward(h.contiguous(), gamma.contiguous(), beta.contiguous(), bias, eps)
    return out.contiguous(memory_format=fmt)


def _row_stats(h: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """float32 (N, C) mean and 1/sqrt(var + eps) of h's rows (biased variance)."""
    var, mean = torch.var_mean(h.float(), dim=(2, 3), correction=0)
    return mean.contiguous(), torch.rsqrt(var + eps).contiguous()


def _forward(h: Tensor, gamma: Tensor, beta: Tensor, bias: Tensor | None, eps: float) -> Tensor:
    """out (NCHW) of NCHW-contiguous inputs (the row statistics stay in the kernels)."""
    bias_arg = h if bias is None else bias.contiguous()
    out = torch.empty_like(h)
    R, HW = _rows(h)
    if R == 0 or HW == 0:
        return out
    if HW <= SINGLE_PASS_MAX_HW:
        _launch_rows(
            _spade_fwd_rows_kernel, _fwd_rows, R, HW,
            h, gamma, beta, bias_arg, out, R, HW, eps, HAS_BIAS=bias is not None,
        )
        return out
    nch = triton.cdiv(HW, SPLIT_CHUNK)
    part = torch.empty(2, R * nch, dtype=torch.float32, device=h.device)
    _launch_chunks(_spade_stats_kernel, _stats, R, nch, h, part[0], part[1], HW, nch)
    _launch_chunks(
        _spade_fwd_split_kernel, _fwd_split, R, nch,
        h, gamma, beta, bias_arg, out, part[0], part[1], HW, nch, eps,
        HAS_BIAS=bias is not None, NCH_P2=triton.next_power_of_2(nch),
    )
    return out


def spade_backward(go: Tensor, h: Tensor, gamma: Tensor, eps: float, output_mask: list[bool]) -> list[Tensor]:
    """The gradients ``output_mask`` asks for among (d(h), d(gamma), d(bias) (N, C)), in order,
    given the output gradient ``go``; d(beta) is ``go`` itself. Only those are computed and
    written. Layout: the inputs' common one."""
    check_device(go, h, gamma)
    fmt = output_format(h, gamma, go)
    need = [bool(m) for m in output_mask]
    grads = _backward(go.contiguous(), h.contiguous(), gamma.contiguous(), eps, *need)
    grads = [t.contiguous(memory_format=fmt) if i < 2 and t is not None else t for i, t in enumerate(grads)]
    return [t for t, needed in zip(grads, need) if needed]


def _backward(
    go: Tensor, h: Tensor, gamma: Tensor, eps: float, need_h: bool, need_gamma: bool, need_bias: bool
) -> list[Tensor | None]:
    """[d(h), d(gamma), d(bias)] of NCHW-contiguous inputs, None for those not needed."""
    dx = torch.empty_like(h) if need_h else None
    dgam = torch.empty_like(gamma) if need_gamma else None
    dbias = torch.zeros(h.shape[:2], dtype=h.dtype, device=h.device) if need_bias else None
    R, HW = _rows(h)
    if R == 0 or HW == 0 or not (need_h or need_gamma or need_bias):
        return [dx, dgam, dbias]
    mean, rstd = _row_stats(h, eps) if (need_h or need_gamma) else (h, h)  # unused when neither
    ptrs = [h if t is None else t for t in (dx, dgam, dbias)]
    flags = dict(NEED_H=need_h, NEED_BIAS=need_bias)
    if HW <= SINGLE_PASS_MAX_HW:
        _launch_rows(
            _spade_bwd_rows_kernel, _bwd_rows, R, HW,
            go, h, gamma, mean, rstd, *ptrs, R, HW, NEED_GAMMA=need_gamma, **flags,
        )
        return [dx, dgam, dbias]
    nch = triton.cdiv(HW, SPLIT_CHUNK)
    part = torch.empty(3, R * nch, dtype=torch.float32, device=h.device)
    _launch_chunks(
        _spade_bwd_partial_kernel, _bwd_partial, R, nch, go, h, gamma, mean, rstd, ptrs[1], *part, HW, nch,
        NEED_GAMMA=need_gamma, **flags,
    )
    if need_h or need_bias:
        _launch_chunks(
            _spade_bwd_split_kernel, _bwd_split, R, nch,
            go, h, gamma, mean, rstd, ptrs[0], ptrs[2], *part, HW, nch,
            NCH_P2=triton.next_power_of_2(nch), **flags,
        )
    return [dx, dgam, dbias]
