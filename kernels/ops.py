"""The Triton kernels as PyTorch custom ops ``stdiff_triton::<op>`` (and ``<op>_backward``).

Every op is a ``torch.library.custom_op`` defined with the schema of the op contract
(``stdiff.ops.contract.SCHEMAS``, the same as the C++ ``stdiff::`` ops) and the contract's fake
(meta) implementation (``contract.FAKES``). The forward ops' autograd formulas call the backward
op with ``output_mask`` from ``ctx.needs_input_grad``; the backward ops' autograd (double
backward) is the reference formula of :mod:`stdiff.ops.backward`. The ops are opaque to ``torch.compile`` and pass
``torch.library.opcheck``; ``triton_op``/``wrap_triton`` is not used because it fails
``opcheck``'s fake-tensor test and ``torch.compile`` under ``TRITON_INTERPRET=1``.
Outputs follow the contract's layout rule (``output_format``).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from stdiff.ops.backward import register_double_backward
from stdiff.ops.contract import FAKES, SCHEMAS

from . import convgru, sde, spade

_NS = "stdiff_triton"
_SEED_MASK = (1 << 63) - 1


def _op(name: str):
    """Decorator: ``fn`` as the custom op ``stdiff_triton::name`` with the contract's schema and fake."""

    def define(fn):
        op = torch.library.custom_op(f"{_NS}::{name}", mutates_args=(), schema=SCHEMAS[name])(fn)
        op.register_fake(FAKES[name])
        return op

    return define


def _asked(output_mask: list[bool], *grads: Optional[Tensor]) -> list[Tensor]:
    """The computed gradients (None: not asked for) in the order of the mask."""
    return [g for g, needed in zip(grads, output_mask) if needed]


def _taken(grads: list[Tensor], mask: list[bool]) -> list[Optional[Tensor]]:
    """A backward op's output (the asked gradients, in order) spread over the mask (None elsewhere)."""
    it = iter(grads)
    return [next(it) if needed else None for needed in mask]


def _seed(seed: Optional[int]) -> int:
    """The Philox seed as a kernel int64 (unused, 0, when dW is given)."""
    return 0 if seed is None else int(seed) & _SEED_MASK


# ---------------------------------------------------------------- convgru_gates
@_op("convgru_gates")
def convgru_gates(gx: Tensor, gh: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    return convgru.gates_forward(gx, gh, h)


@_op("convgru_gates_backward")
def convgru_gates_backward(grad_u, grad_rh, u, gx, gh, h, output_mask) -> list[Tensor]:
    return _asked(output_mask, *convgru.gates_backward(u, gx, gh, h, grad_u, grad_rh, *output_mask))


def _gates_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs, output[0])
    ctx.set_materialize_grads(False)


def _gates_grad(ctx, du: Optional[Tensor], drh: Optional[Tensor]):
    need = ctx.needs_input_grad
    mask = [need[0] or need[1], need[2]]  # (d(gx) = d(gh), d(h))
    if (du is None and drh is None) or not any(mask):
        return None, None, None
    gx, gh, h, u = ctx.saved_tensors
    ds, dh = _taken(convgru_gates_backward(du, drh, u, gx, gh, h, mask), mask)
    return (ds if need[0] else None), (ds if need[1] else None), dh


convgru_gates.register_autograd(_gates_grad, setup_context=_gates_setup)


# ---------------------------------------------------------------- convgru_update
@_op("convgru_update")
def convgru_update(cx: Tensor, ch: Tensor, u: Tensor, h: Tensor, standard: bool = False) -> Tensor:
    return convgru.update_forward(cx, ch, u, h, standard)


@_op("convgru_update_backward")
def convgru_update_backward(grad, cx, ch, u, h, standard, output_mask) -> list[Tensor]:
    return _asked(output_mask, *convgru.update_backward(grad, cx, ch, u, h, standard, *output_mask))


def _update_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs[:4])
    ctx.standard = inputs[4]


def _update_grad(ctx, grad: Tensor):
    need = ctx.needs_input_grad
    mask = [need[0] or need[1], need[2], need[3]]  # (d(cx) = d(ch), d(u), d(h))
    if not any(mask):
        return None, None, None, None, None
    ds, du, dh = _taken(convgru_update_backward(grad, *ctx.saved_tensors, ctx.standard, mask), mask)
    return (ds if need[0] else None), (ds if need[1] else None), du, dh, None


convgru_update.register_autograd(_update_grad, setup_context=_update_setup)


# ---------------------------------------------------------------- spade_norm
@_op("spade_norm")
def spade_norm(h: Tensor, gamma: Tensor, beta: Tensor, bias: Optional[Tensor] = None, eps: float = 1e-5) -> Tensor:
    return spade.spade_forward(h, gamma, beta, bias, eps)


@_op("spade_norm_backward")
def spade_norm_backward(grad: Tensor, h: Tensor, gamma: Tensor, eps: float, output_mask: list[bool]) -> list[Tensor]:
    return spade.spade_backward(grad, h, gamma, eps, output_mask)


def _spade_setup(ctx, inputs, output) -> None:
    h, gamma, _, bias, eps = inputs
    ctx.save_for_backward(h, gamma)
    ctx.eps, ctx.has_bias = eps, bias is not None


def _spade_grad(ctx, grad: Tensor):
    need = ctx.needs_input_grad
    mask = [need[0], need[1], ctx.has_bias and need[3]]
    dh, dgamma, dbias = _taken(spade_norm_backward(grad, *ctx.saved_tensors, ctx.eps, mask) if any(mask) else [], mask)
    return dh, dgamma, (grad if need[2] else None), dbias, None


spade_norm.register_autograd(_spade_grad, setup_context=_spade_setup)


# ---------------------------------------------------------------- sde_step / sde_predict
@_op("sde_step")
def sde_step(y, f, g, dW, dt, g_pred=None, g_is_raw=False, seed=None, offset=0) -> Tensor:
    return sde.sde_forward(y, f, g, dW, dt, g_pred, g_is_raw, _seed(seed), offset)


@_op("sde_predict")
def sde_predict(y, g, dW, dt=None, g_is_raw=False, seed=None, offset=0) -> Tensor:
    return sde.sde_forward(y, None, g, dW, 0.0 if dt is None else dt, None, g_is_raw, _seed(seed), offset)


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


def _step_setup(ctx, inputs, output) -> None:
    y, f, g, dW, dt, g_pred, g_is_raw, seed, offset = inputs
    ctx.save_for_backward(g, dW, g_pred)
    ctx.scalars = (dt, g_is_raw, seed, offset)


def _step_grad(ctx, grad: Tensor):
    g, dW, g_pred = ctx.saved_tensors
    need = ctx.needs_input_grad  # (y, f, g, dW, dt, g_pred, ...)
    mask = [need[1], need[2], g_pred is not None and need[5], dW is not None and need[3]]
    grads = sde_step_backward(grad, g, dW, ctx.scalars[0], g_pred, *ctx.scalars[1:], mask) if any(mask) else []
    df, dg, dgp, dw = _taken(grads, mask)
    return (grad if need[0] else None), df, dg, dw, None, dgp, None, None, None


def _predict_setup(ctx, inputs, output) -> None:
    y, g, dW, dt, g_is_raw, seed, offset = inputs
    ctx.save_for_backward(g, dW)
    ctx.scalars = (dt, g_is_raw, seed, offset)


def _predict_grad(ctx, grad: Tensor):
    g, dW = ctx.saved_tensors
    need = ctx.needs_input_grad  # (y, g, dW, ...)
    mask = [need[1], dW is not None and need[2]]
    dg, dw = _taken(sde_predict_backward(grad, g, dW, *ctx.scalars, mask) if any(mask) else [], mask)
    return (grad if need[0] else None), dg, dw, None, None, None, None


sde_step.register_autograd(_step_grad, setup_context=_step_setup)
sde_predict.register_autograd(_predict_grad, setup_context=_predict_setup)
register_double_backward(_NS)
