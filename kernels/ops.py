"""The Triton kernels as PyTorch custom ops ``stdiff_triton::<op>`` (and ``<op>_backward``).

Each op is a ``torch.library.custom_op`` with an explicit fake (meta) implementation and,
for the forward ops, an autograd formula that calls the backward op. The ops are opaque to
``torch.compile`` (no graph break, no tracing into the launch) and pass
``torch.library.opcheck``; ``triton_op``/``wrap_triton`` is not used because it fails
``opcheck``'s fake-tensor test and ``torch.compile`` under ``TRITON_INTERPRET=1``.
The fake implementations state the output layouts of the launchers: NCHW for the gates and
SPADE, the inputs' common dense layout for the elementwise update and SDE ops.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import convgru, sde, spade
from ._runtime import common_format

_NS = "stdiff_triton"


def _nchw_like(t: Tensor) -> Tensor:
    return torch.empty_like(t, memory_format=torch.contiguous_format)


def _sde_format(tensors: list[Optional[Tensor]], dW: Optional[Tensor]) -> torch.memory_format:
    if dW is None:
        return torch.contiguous_format
    return common_format(*(t for t in tensors if t is not None))


# ---------------------------------------------------------------- convgru_gates
@torch.library.custom_op(f"{_NS}::convgru_gates", mutates_args=())
def convgru_gates(gx: Tensor, gh: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    """u, r*h (N, F, H, W) from gx, gh (N, 2F, H, W), h (N, F, H, W)."""
    return convgru.gates_forward(gx, gh, h)


@convgru_gates.register_fake
def _(gx: Tensor, gh: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    return _nchw_like(h), _nchw_like(h)


@torch.library.custom_op(f"{_NS}::convgru_gates_backward", mutates_args=())
def convgru_gates_backward(gx: Tensor, gh: Tensor, h: Tensor, du: Tensor, drh: Tensor) -> tuple[Tensor, Tensor]:
    """d(gx) = d(gh) (N, 2F, H, W) and d(h) (N, F, H, W)."""
    return convgru.gates_backward(gx, gh, h, du, drh)


@convgru_gates_backward.register_fake
def _(gx: Tensor, gh: Tensor, h: Tensor, du: Tensor, drh: Tensor) -> tuple[Tensor, Tensor]:
    return _nchw_like(gx), _nchw_like(h)


def _gates_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _gates_grad(ctx, du: Tensor, drh: Tensor):
    ds, dh = convgru_gates_backward(*ctx.saved_tensors, du, drh)
    return ds, ds, dh


convgru_gates.register_autograd(_gates_grad, setup_context=_gates_setup)


# ---------------------------------------------------------------- convgru_update
@torch.library.custom_op(f"{_NS}::convgru_update", mutates_args=())
def convgru_update(cx: Tensor, ch: Tensor, u: Tensor, h: Tensor, standard: bool) -> Tensor:
    """(1-u)*h + tanh(cx+ch), or (1-u)*h + u*tanh(cx+ch) when ``standard``; all (N, F, H, W)."""
    return convgru.update_forward(cx, ch, u, h, standard)


@convgru_update.register_fake
def _(cx: Tensor, ch: Tensor, u: Tensor, h: Tensor, standard: bool) -> Tensor:
    return torch.empty_like(h, memory_format=common_format(cx, ch, u, h))


@torch.library.custom_op(f"{_NS}::convgru_update_backward", mutates_args=())
def convgru_update_backward(
    cx: Tensor, ch: Tensor, u: Tensor, h: Tensor, go: Tensor, standard: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """d(cx) = d(ch), d(u), d(h)."""
    return convgru.update_backward(cx, ch, u, h, go, standard)


@convgru_update_backward.register_fake
def _(cx: Tensor, ch: Tensor, u: Tensor, h: Tensor, go: Tensor, standard: bool) -> tuple[Tensor, Tensor, Tensor]:
    fmt = common_format(cx, ch, u, h, go)
    return tuple(torch.empty_like(h, memory_format=fmt) for _ in range(3))


def _update_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs[:4])
    ctx.standard = inputs[4]


def _update_grad(ctx, go: Tensor):
    ds, du, dh = convgru_update_backward(*ctx.saved_tensors, go, ctx.standard)
    return ds, ds, du, dh, None


convgru_update.register_autograd(_update_grad, setup_context=_update_setup)


# ---------------------------------------------------------------- spade_norm
@torch.library.custom_op(f"{_NS}::spade_norm", mutates_args=())
def spade_norm(
    h: Tensor, gamma: Tensor, beta: Tensor, bias: Optional[Tensor], eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """out (N, C, H, W) and the float32 row statistics mean, 1/std (N, C) kept for backward."""
    return spade.spade_forward(h, gamma, beta, bias, eps)


@spade_norm.register_fake
def _(h: Tensor, gamma: Tensor, beta: Tensor, bias: Optional[Tensor], eps: float) -> tuple[Tensor, Tensor, Tensor]:
    stats = h.new_empty(h.shape[:2], dtype=torch.float32)
    return _nchw_like(h), stats, torch.empty_like(stats)


@torch.library.custom_op(f"{_NS}::spade_norm_backward", mutates_args=())
def spade_norm_backward(
    go: Tensor, h: Tensor, gamma: Tensor, mean: Tensor, rstd: Tensor, has_bias: bool
) -> list[Tensor]:
    """[d(h), d(gamma)] plus d(bias) (N, C) when ``has_bias``; d(beta) is ``go``."""
    return [t for t in spade.spade_backward(go, h, gamma, mean, rstd, has_bias) if t is not None]


@spade_norm_backward.register_fake
def _(go: Tensor, h: Tensor, gamma: Tensor, mean: Tensor, rstd: Tensor, has_bias: bool) -> list[Tensor]:
    grads = [_nchw_like(h), _nchw_like(gamma)]
    if has_bias:
        grads.append(h.new_empty(h.shape[:2]))
    return grads


def _spade_setup(ctx, inputs, output) -> None:
    h, gamma, _, bias, _ = inputs
    _, mean, rstd = output
    ctx.mark_non_differentiable(mean, rstd)
    ctx.save_for_backward(h, gamma, mean, rstd)
    ctx.has_bias = bias is not None


def _spade_grad(ctx, go: Tensor, _dmean: Tensor, _drstd: Tensor):
    h, gamma, mean, rstd = ctx.saved_tensors
    grads = spade_norm_backward(go, h, gamma, mean, rstd, ctx.has_bias)
    return grads[0], grads[1], go, (grads[2] if ctx.has_bias else None), None


spade_norm.register_autograd(_spade_grad, setup_context=_spade_setup)


# ---------------------------------------------------------------- sde_step / sde_predict
@torch.library.custom_op(f"{_NS}::sde_step", mutates_args=())
def sde_step(
    y: Tensor,
    f: Tensor,
    g: Tensor,
    dW: Optional[Tensor],
    dt: float,
    g_pred: Optional[Tensor],
    g_is_raw: bool,
    seed: int,
    offset: int,
) -> Tensor:
    """y + f dt + G W, G = g or (g + g_pred)/2 (tanh'd when g_is_raw); W = dW or Philox noise."""
    return sde.sde_forward(y, f, g, g_pred, dW, dt, g_is_raw, seed, offset)


@sde_step.register_fake
def _(y, f, g, dW, dt, g_pred, g_is_raw, seed, offset) -> Tensor:
    return torch.empty_like(y, memory_format=_sde_format([y, f, g, g_pred, dW], dW))


@torch.library.custom_op(f"{_NS}::sde_predict", mutates_args=())
def sde_predict(
    y: Tensor, g: Tensor, dW: Optional[Tensor], dt: float, g_is_raw: bool, seed: int, offset: int
) -> Tensor:
    """y + g W (g tanh'd when g_is_raw); W = dW or sqrt(dt) N(0, 1) from Philox (seed, offset)."""
    return sde.sde_forward(y, None, g, None, dW, dt, g_is_raw, seed, offset)


@sde_predict.register_fake
def _(y, g, dW, dt, g_is_raw, seed, offset) -> Tensor:
    return torch.empty_like(y, memory_format=_sde_format([y, g, dW], dW))


@torch.library.custom_op(f"{_NS}::sde_backward", mutates_args=())
def sde_backward(
    go: Tensor,
    g: Tensor,
    g_pred: Optional[Tensor],
    dW: Optional[Tensor],
    dt: float,
    g_is_raw: bool,
    seed: int,
    offset: int,
    need_f: bool,
    need_g: bool,
    need_g_pred: bool,
    need_dW: bool,
) -> list[Tensor]:
    """The requested ones of d(f), d(g), d(g_pred), d(dW), in this order (see sde.sde_backward)."""
    return sde.sde_backward(go, g, g_pred, dW, dt, g_is_raw, seed, offset, need_f, need_g, need_g_pred, need_dW)


@sde_backward.register_fake
def _(go, g, g_pred, dW, dt, g_is_raw, seed, offset, need_f, need_g, need_g_pred, need_dW) -> list[Tensor]:
    fmt = _sde_format([go, g, g_pred, dW], dW)
    return [torch.empty_like(g, memory_format=fmt) for need in (need_f, need_g, need_g_pred, need_dW) if need]


def _sde_save(ctx, g: Tensor, g_pred: Optional[Tensor], dW: Optional[Tensor], scalars: tuple) -> None:
    ctx.save_for_backward(g, g_pred, dW)
    ctx.dt, ctx.g_is_raw, ctx.seed, ctx.offset = scalars


def _sde_grads(ctx, go: Tensor, need_y: bool, need_f: bool, need_g: bool, need_gp: bool, need_w: bool):
    """(d(y), d(f), d(g), d(g_pred), d(dW)) with None for those not needed or absent."""
    g, g_pred, dW = ctx.saved_tensors
    need_gp = need_gp and g_pred is not None
    need_w = need_w and dW is not None
    flags = (need_f, need_g, need_gp, need_w)
    computed = sde_backward(go, g, g_pred, dW, ctx.dt, ctx.g_is_raw, ctx.seed, ctx.offset, *flags) if any(flags) else []
    grads = iter(computed)
    df, dg, dgp, dw = (next(grads) if need else None for need in flags)
    return (go if need_y else None), df, dg, dgp, dw


def _step_setup(ctx, inputs, output) -> None:
    y, f, g, dW, dt, g_pred, g_is_raw, seed, offset = inputs
    _sde_save(ctx, g, g_pred, dW, (dt, g_is_raw, seed, offset))


def _step_grad(ctx, go: Tensor):
    need = ctx.needs_input_grad
    dy, df, dg, dgp, dw = _sde_grads(ctx, go, need[0], need[1], need[2], need[5], need[3])
    return dy, df, dg, dw, None, dgp, None, None, None


def _predict_setup(ctx, inputs, output) -> None:
    y, g, dW, dt, g_is_raw, seed, offset = inputs
    _sde_save(ctx, g, None, dW, (dt, g_is_raw, seed, offset))


def _predict_grad(ctx, go: Tensor):
    need = ctx.needs_input_grad
    dy, _, dg, _, dw = _sde_grads(ctx, go, need[0], False, need[1], False, need[2])
    return dy, dg, dw, None, None, None, None


sde_step.register_autograd(_step_grad, setup_context=_step_setup)
sde_predict.register_autograd(_predict_grad, setup_context=_predict_setup)
