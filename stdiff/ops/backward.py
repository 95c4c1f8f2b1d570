"""The backward ops in reference PyTorch, and through them the double backward of every backend.

Each function here takes the arguments of the custom op ``<op>_backward`` (schemas in
``schemas.def``) and returns what it returns: the gradients its ``output_mask`` asks for, in
order, computed as the vector-Jacobian product of the reference forward
(:mod:`stdiff.ops.reference`) with ``torch.func.vjp``. So they are the truth the backward
kernels are tested against, and they are differentiable: :func:`register_double_backward` makes
them the autograd formula of the compiled and Triton backward ops, so that ``create_graph=True``
(gradient penalties, ``gradgradcheck``) gives exact higher derivatives on every backend. First-order
backward never runs this module: the kernels compute it.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from . import reference

__all__ = ["BACKWARDS", "register_double_backward"]


def _vjp(fn: Callable[..., object], primals: Sequence[Tensor], cotangents: object) -> tuple[Tensor, ...]:
    _, pull = torch.func.vjp(fn, *primals)
    return pull(cotangents)


def _asked(grads: Sequence[Tensor | None], output_mask: Sequence[bool]) -> list[Tensor]:
    """The present gradients (None: input absent) that the mask asks for, in order."""
    return [g for g, needed in zip(grads, output_mask) if g is not None and needed]


def convgru_gates_backward(grad_u, grad_rh, u, gx, gh, h, output_mask) -> list[Tensor]:
    """(d(gx) = d(gh) (N, 2F, H, W), d(h) (N, F, H, W)) masked; None upstream gradients are zero."""
    cotangents = tuple(torch.zeros_like(h) if g is None else g for g in (grad_u, grad_rh))
    d_gx, _, d_h = _vjp(reference.convgru_gates, (gx, gh, h), cotangents)
    return _asked((d_gx, d_h), output_mask)


def convgru_update_backward(grad, cx, ch, u, h, standard, output_mask) -> list[Tensor]:
    """(d(cx) = d(ch), d(u), d(h)) masked, all (N, F, H, W)."""
    d_cx, _, d_u, d_h = _vjp(lambda *a: reference.convgru_update(*a, standard=standard), (cx, ch, u, h), grad)
    return _asked((d_cx, d_u, d_h), output_mask)


def spade_norm_backward(grad, h, gamma, eps, output_mask) -> list[Tensor]:
    """(d(h), d(gamma) (N, C, H, W), d(bias) (N, C)) masked; d(beta) is ``grad`` itself."""
    beta, bias = torch.zeros_like(h), h.new_zeros(h.shape[:2])
    grads = _vjp(lambda h_, gamma_, bias_: reference.spade_norm(h_, gamma_, beta, bias_, eps), (h, gamma, bias), grad)
    return _asked(grads, output_mask)


def _noise(grad: Tensor, dW: Tensor | None, dt: float | None, seed: int | None, offset: int) -> Tensor:
    return reference.brownian_increment(grad, dt, seed, offset) if dW is None else dW


def sde_step_backward(grad, g, dW, dt, g_pred, g_is_raw, seed, offset, output_mask) -> list[Tensor]:
    """(d(f), d(g), d(g_pred) when given, d(dW) when given) masked, all shaped like ``grad``."""
    w = _noise(grad, dW, dt, seed, offset)
    y = torch.zeros_like(grad)

    def step(f, g_, w_, *g_pred_):
        return reference.sde_step(y, f, g_, w_, dt, g_pred_[0] if g_pred_ else None, g_is_raw)

    d_f, d_g, d_w, *d_gp = _vjp(step, (torch.zeros_like(grad), g, w, *([] if g_pred is None else [g_pred])), grad)
    return _asked((d_f, d_g, d_gp[0] if d_gp else None, None if dW is None else d_w), output_mask)


def sde_predict_backward(grad, g, dW, dt, g_is_raw, seed, offset, output_mask) -> list[Tensor]:
    """(d(g), d(dW) when given) masked, shaped like ``grad``."""
    y = torch.zeros_like(grad)
    d_g, d_w = _vjp(lambda g_, w_: reference.sde_predict(y, g_, w_, g_is_raw=g_is_raw),
                    (g, _noise(grad, dW, dt, seed, offset)), grad)
    return _asked((d_g, None if dW is None else d_w), output_mask)


#: backward op name -> its reference formula (same arguments, same outputs)
BACKWARDS: dict[str, Callable[..., list[Tensor]]] = {
    "convgru_gates_backward": convgru_gates_backward,
    "convgru_update_backward": convgru_update_backward,
    "spade_norm_backward": spade_norm_backward,
    "sde_step_backward": sde_step_backward,
    "sde_predict_backward": sde_predict_backward,
}


def _autograd_of(formula: Callable[..., list[Tensor]]):
    """(setup_context, backward) of a backward op: the vector-Jacobian product of ``formula``."""

    def setup_context(ctx, inputs, output) -> None:
        tensors = [t if isinstance(t, Tensor) else None for t in inputs]
        ctx.save_for_backward(*tensors)
        ctx.constants = [None if isinstance(t, Tensor) else t for t in inputs]

    def backward(ctx, *grads):
        saved = ctx.saved_tensors
        args = [s if s is not None else c for s, c in zip(saved, ctx.constants)]
        wanted = [i for i, t in enumerate(saved) if t is not None and ctx.needs_input_grad[i]]
        result: list[Tensor | None] = [None] * len(args)
        if not wanted:
            return tuple(result)
        outputs = grads[0] if len(grads) == 1 and isinstance(grads[0], (list, tuple)) else grads

        def formula_of(*primals):
            call = list(args)
            for i, t in zip(wanted, primals):
                call[i] = t
            return tuple(formula(*call))

        primals = [args[i] for i in wanted]
        value, pull = torch.func.vjp(formula_of, *primals)
        cotangents = tuple(torch.zeros_like(v) if g is None else g for v, g in zip(value, outputs))
        for i, d in zip(wanted, pull(cotangents)):
            result[i] = d
        return tuple(result)

    return setup_context, backward


def register_double_backward(namespace: str) -> None:
    """Make the reference formulas the autograd of ``<namespace>::<op>_backward`` for every op."""
    for name, formula in BACKWARDS.items():
        setup_context, backward = _autograd_of(formula)
        torch.library.register_autograd(f"{namespace}::{name}", backward, setup_context=setup_context)
