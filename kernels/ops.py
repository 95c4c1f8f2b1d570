"""The Triton kernels as PyTorch custom ops ``stdiff_triton::<op>`` (and ``<op>_backward``).

Every op is a ``torch.library.custom_op`` defined with the schema of the op contract
(``stdiff.ops.contract.SCHEMAS``, the same as the C++ ``stdiff::`` ops), with a fake (meta)
implementation and, for the forward ops, an autograd formula that calls the backward op with
``output_mask = ctx.needs_input_grad``. The ops are opaque to ``torch.compile`` and pass
``torch.library.opcheck``; ``triton_op``/``wrap_triton`` is not used because it fails
``opcheck``'s fake-tensor test and ``torch.compile`` under ``TRITON_INTERPRET=1``.
Outputs follow the contract's layout rule (``output_format``).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from stdiff.ops.contract import SCHEMAS, output_format

from . import convgru, sde, spade

_NS = "stdiff_triton"
_SEED_MASK = (1 << 63) - 1


def _op(name: str):
    """Decorator: ``fn`` as the custom op ``stdiff_triton::name`` with the contract's schema."""
    return torch.library.custom_op(f"{_NS}::{name}", mutates_args=(), schema=SCHEMAS[name])


def _like(t: Tensor, fmt: torch.memory_format) -> Tensor:
    return torch.empty_like(t, memory_format=fmt)


def _seed(seed: Optional[int]) -> int:
    """The Philox seed as a kernel int64 (unused, 0, when dW is given)."""
    return 0 if seed is None else int(seed) & _SEED_MASK


# ---------------------------------------------------------------- convgru_gates
@_op("convgru_gates")
def convgru_gates(gx: Tensor, gh: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    return convgru.gates_forward(gx, gh, h)


@convgru_gates.register_fake
def _(gx, gh, h):
    fmt = output_format(gx, gh, h)
    return _like(h, fmt), _like(h, fmt)


@_op("convgru_gates_backward")
def convgru_gates_backward(grad_u, grad_rh, u, gx, gh, h) -> tuple[Tensor, Tensor]:
    du = torch.zeros_like(h) if grad_u is None else grad_u
    drh = torch.zeros_like(h) if grad_rh is None else grad_rh
    return convgru.gates_backward(gx, gh, h, du, drh)


@convgru_gates_backward.register_fake
def _(grad_u, grad_rh, u, gx, gh, h):
    fmt = output_format(gx, gh, h, grad_u, grad_rh, u)
    return _like(gx, fmt), _like(h, fmt)


def _gates_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs, output[0])
    ctx.set_materialize_grads(False)


def _gates_grad(ctx, du: Optional[Tensor], drh: Optional[Tensor]):
    if du is None and drh is None:
        return None, None, None
    gx, gh, h, u = ctx.saved_tensors
    ds, dh = convgru_gates_backward(du, drh, u, gx, gh, h)
    return ds, ds, dh


convgru_gates.register_autograd(_gates_grad, setup_context=_gates_setup)


# ---------------------------------------------------------------- convgru_update
@_op("convgru_update")
def convgru_update(cx: Tensor, ch: Tensor, u: Tensor, h: Tensor, standard: bool = False) -> Tensor:
    return convgru.update_forward(cx, ch, u, h, standard)


@convgru_update.register_fake
def _(cx, ch, u, h, standard=False):
    return _like(h, output_format(cx, ch, u, h))


@_op("convgru_update_backward")
def convgru_update_backward(grad, cx, ch, u, h, standard) -> tuple[Tensor, Tensor, Tensor]:
    return convgru.update_backward(grad, cx, ch, u, h, standard)


@convgru_update_backward.register_fake
def _(grad, cx, ch, u, h, standard):
    fmt = output_format(cx, ch, u, h, grad)
    return tuple(_like(h, fmt) for _ in range(3))


def _update_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs[:4])
    ctx.standard = inputs[4]


def _update_grad(ctx, grad: Tensor):
    ds, du, dh = convgru_update_backward(grad, *ctx.saved_tensors, ctx.standard)
    return ds, ds, du, dh, None


convgru_update.register_autograd(_update_grad, setup_context=_update_setup)


# ---------------------------------------------------------------- spade_norm
@_op("spade_norm")
def spade_norm(h: Tensor, gamma: Tensor, beta: Tensor, bias: Optional[Tensor] = None, eps: float = 1e-5) -> Tensor:
    return spade.spade_forward(h, gamma, beta, bias, eps)


@spade_norm.register_fake
def _(h, gamma, beta, bias=None, eps=1e-5):
    return _like(h, output_format(h, gamma, beta))


@_op("spade_norm_backward")
def spade_norm_backward(grad: Tensor, h: Tensor, gamma: Tensor, eps: float, output_mask: list[bool]) -> list[Tensor]:
    return spade.spade_backward(grad, h, gamma, eps, output_mask)


@spade_norm_backward.register_fake
def _(grad, h, gamma, eps, output_mask):
    fmt = output_format(h, gamma, grad)
    grads = (_like(h, fmt), _like(h, fmt), h.new_empty(h.shape[:2]))
    return [t for t, needed in zip(grads, output_mask) if needed]


def _spade_setup(ctx, inputs, output) -> None:
    h, gamma, _, bias, eps = inputs
    ctx.save_for_backward(h, gamma)
    ctx.eps, ctx.has_bias = eps, bias is not None


def _spade_grad(ctx, grad: Tensor):
    need = ctx.needs_input_grad
    mask = [need[0], need[1], ctx.has_bias and need[3]]
    grads = iter(spade_norm_backward(grad, *ctx.saved_tensors, ctx.eps, mask) if any(mask) else [])
    dh, dgamma, dbias = (next(grads) if needed else None for needed in mask)
    return dh, dgamma, (grad if need[2] else None), dbias, None


spade_norm.register_autograd(_spade_grad, setup_context=_spade_setup)


# ---------------------------------------------------------------- sde_step / sde_predict
@_op("sde_step")
def sde_step(y, f, g, dW, dt, g_pred=None, g_is_raw=False, seed=None, offset=0) -> Tensor:
    return sde.sde_forward(y, f, g, dW, dt, g_pred, g_is_raw, _seed(seed), offset)


@sde_step.register_fake
def _(y, f, g, dW, dt, g_pred=None, g_is_raw=False, seed=None, offset=0):
    return _like(y, output_format(y, f, g, dW, g_pred, allow_channels_last=dW is not None))


@_op("sde_predict")
def sde_predict(y, g, dW, dt=None, g_is_raw=False, seed=None, offset=0) -> Tensor:
    return sde.sde_forward(y, None, g, dW, 0.0 if dt is None else dt, None, g_is_raw, _seed(seed), offset)


@sde_predict.register_fake
def _(y, g, dW, dt=None, g_is_raw=False, seed=None, offset=0):
    return _like(y, output_format(y, g, dW, allow_channels_last=dW is not None))


@_op("sde_step_backward")
def sde_step_backward(grad, g, dW, dt, g_pred, g_is_raw, seed, offset, output_mask) -> list[Tensor]:
    need_f, need_g, need_gp, need_w = output_mask
    return sde.sde_backward(
        grad, g, g_pred, dW, dt, g_is_raw, _seed(seed), offset,
        need_f, need_g, need_gp and g_pred is not None, need_w and dW is not None,
    )


@_op("sde_predict_backward")
def sde_predict_backward(grad, g, dW, dt, g_is_raw, seed, offset, output_mask) -> list[Tensor]:
    need_g, need_w = output_mask
    dt = 0.0 if dt is None else dt
    return sde.sde_backward(grad, g, None, dW, dt, g_is_raw, _seed(seed), offset, False, need_g, False,
                            need_w and dW is not None)


def _fake_sde_grads(grad, g, g_pred, dW, present_and_needed) -> list[Tensor]:
    fmt = output_format(grad, g, g_pred, dW, allow_channels_last=dW is not None)
    return [_like(g, fmt) for needed in present_and_needed if needed]


@sde_step_backward.register_fake
def _(grad, g, dW, dt, g_pred, g_is_raw, seed, offset, output_mask):
    has = (True, True, g_pred is not None, dW is not None)
    return _fake_sde_grads(grad, g, g_pred, dW, [a and b for a, b in zip(has, output_mask)])


@sde_predict_backward.register_fake
def _(grad, g, dW, dt, g_is_raw, seed, offset, output_mask):
    return _fake_sde_grads(grad, g, None, dW, [output_mask[0], output_mask[1] and dW is not None])


def _step_setup(ctx, inputs, output) -> None:
    y, f, g, dW, dt, g_pred, g_is_raw, seed, offset = inputs
    ctx.save_for_backward(g, dW, g_pred)
    ctx.scalars = (dt, g_is_raw, seed, offset)


def _step_grad(ctx, grad: Tensor):
    g, dW, g_pred = ctx.saved_tensors
    need = ctx.needs_input_grad  # (y, f, g, dW, dt, g_pred, ...)
    mask = [need[1], need[2], g_pred is not None and need[5], dW is not None and need[3]]
    grads = iter(sde_step_backward(grad, g, dW, ctx.scalars[0], g_pred, *ctx.scalars[1:], mask) if any(mask) else [])
    df, dg, dgp, dw = (next(grads) if needed else None for needed in mask)
    return (grad if need[0] else None), df, dg, dw, None, dgp, None, None, None


def _predict_setup(ctx, inputs, output) -> None:
    y, g, dW, dt, g_is_raw, seed, offset = inputs
    ctx.save_for_backward(g, dW)
    ctx.scalars = (dt, g_is_raw, seed, offset)


def _predict_grad(ctx, grad: Tensor):
    g, dW = ctx.saved_tensors
    need = ctx.needs_input_grad  # (y, g, dW, ...)
    mask = [need[1], dW is not None and need[2]]
    grads = iter(sde_predict_backward(grad, g, dW, *ctx.scalars, mask) if any(mask) else [])
    dg, dw = (next(grads) if needed else None for needed in mask)
    return (grad if need[0] else None), dg, dw, None, None, None, None


sde_step.register_autograd(_step_grad, setup_context=_step_setup)
sde_predict.register_autograd(_predict_grad, setup_context=_predict_setup)
