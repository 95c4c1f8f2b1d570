"""Triton backend of ``stdiff.ops`` (installed as ``stdiff.kernels``).

The five op functions below have the signatures of ``stdiff.ops.reference`` and do no argument
validation (the public functions in ``stdiff.ops`` validate once). Each runs a Triton custom op
``torch.ops.stdiff_triton.<op>`` (see :mod:`.ops`), differentiable and ``torch.compile``-able.
Kernels run on CUDA tensors, or on CPU tensors when ``TRITON_INTERPRET=1`` was set before this
package was imported. Triton is optional: without it this package still imports and
:func:`is_available` says why it cannot run.

Schemas, layouts and gradients follow the op contract (:mod:`stdiff.ops.contract`): outputs keep
the inputs' common layout (NCHW or channels_last; SPADE copies channels_last to NCHW and back),
except that in-kernel noise (``dW=None``) works in NCHW order.
Noise: ``dW=None`` draws ``sqrt(dt) * stdiff.ops.philox_normal(y.shape, seed, offset)``, bit-identical
to the C++/CUDA kernels: ``offset`` is a stream id (a solver passes offset k at step k).
"""
from __future__ import annotations

import os

import torch
from torch import Tensor

try:
    import triton
except ImportError as exc:  # Triton is an optional dependency
    _IMPORT_ERROR: str | None = f"triton is not installed ({exc})"
else:
    _IMPORT_ERROR = None
    from . import ops as _ops
    from ._runtime import INTERPRET as _INTERPRET

__all__ = ["is_available", "convgru_gates", "convgru_update", "spade_norm", "sde_step", "sde_predict"]

def is_available() -> tuple[bool, str]:
    """(ok, reason): whether the Triton kernels can run here, and on what."""
    if _IMPORT_ERROR is not None:
        return False, _IMPORT_ERROR
    if _INTERPRET:
        return True, f"triton {triton.__version__} interpreter (TRITON_INTERPRET=1), CPU tensors"
    if torch.cuda.is_available():
        return True, f"triton {triton.__version__} on CUDA"
    interpret_now = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    hint = " (TRITON_INTERPRET was set after stdiff.kernels was imported)" if interpret_now else ""
    return False, f"triton {triton.__version__}: no CUDA device and not in interpreter mode{hint}"


def convgru_gates(gx: Tensor, gh: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    """``u, r = split(sigmoid(gx + gh))``; returns (u, r*h). gx, gh (N, 2F, H, W); h (N, F, H, W)."""
    return _ops.convgru_gates(gx, gh, h)


def convgru_update(cx: Tensor, ch: Tensor, u: Tensor, h: Tensor, standard: bool = False) -> Tensor:
    """``(1 - u) h + tanh(cx + ch)`` (``standard``: ``(1 - u) h + u tanh(cx + ch)``), all (N, F, H, W)."""
    return _ops.convgru_update(cx, ch, u, h, standard)


def spade_norm(h: Tensor, gamma: Tensor, beta: Tensor, bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """``IN(h) (1 + gamma) + beta (+ bias[:, :, None, None])``; h, gamma, beta (N, C, H, W), bias (N, C)."""
    return _ops.spade_norm(h, gamma, beta, bias, float(eps))


def sde_step(
    y: Tensor,
    f: Tensor,
    g: Tensor,
    dW: Tensor | None,
    dt: float,
    g_pred: Tensor | None = None,
    g_is_raw: bool = False,
    seed: int | None = None,
    offset: int = 0,
) -> Tensor:
    """Euler-Maruyama ``y + f dt + g dW`` or, with g_pred, ``y + f dt + (g + g_pred)/2 dW``."""
    return _ops.sde_step(y, f, g, dW, float(dt), g_pred, bool(g_is_raw), seed, int(offset))


def sde_predict(
    y: Tensor,
    g: Tensor,
    dW: Tensor | None,
    dt: float | None = None,
    g_is_raw: bool = False,
    seed: int | None = None,
    offset: int = 0,
) -> Tensor:
    """Euler-Heun predictor ``y + g dW``; with dW=None the noise of (seed, offset) scaled by sqrt(dt)."""
    return _ops.sde_predict(y, g, dW, None if dt is None else float(dt), bool(g_is_raw), seed, int(offset))
