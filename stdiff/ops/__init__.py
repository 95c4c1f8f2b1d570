"""Fused ops of STDiff with interchangeable backends (docs/architecture.md §3).

Each public function validates its arguments once and then runs the backend chosen by
``backend`` ("auto", "reference", "cpu", "cuda", "triton"; see :mod:`stdiff.ops._dispatch`).
All backends compute the same function as :mod:`stdiff.ops.reference` and are differentiable to any
order (higher derivatives through the reference formulas of :mod:`stdiff.ops.backward`).
"""
from __future__ import annotations

import torch
from torch import Tensor

from . import _validate as check
from . import reference
from ._dispatch import BACKENDS, backend_status, preload, resolve
from .philox import normals as _philox_normals

__all__ = [
    "BACKENDS",
    "backend_status",
    "convgru_gates",
    "convgru_update",
    "spade_norm",
    "sde_step",
    "sde_predict",
    "philox_normal",
    "reference",
]

preload()


def convgru_gates(gx: Tensor, gh: Tensor, h: Tensor, backend: str = "auto") -> tuple[Tensor, Tensor]:
    """Conv-GRU gates: ``u, r = split(sigmoid(gx + gh))``; returns ``(u, r * h)``.

    gx, gh: (N, 2F, H, W); h: (N, F, H, W). Returns two (N, F, H, W) tensors.
    """
    check.tensor("h", h, ndim=4)
    n, f, height, width = h.shape
    check.like("gx", gx, "h", h, shape=(n, 2 * f, height, width))
    check.like("gh", gh, "h", h, shape=(n, 2 * f, height, width))
    return resolve(backend, h.device.type).convgru_gates(gx, gh, h)


def convgru_update(
    cx: Tensor, ch: Tensor, u: Tensor, h: Tensor, standard: bool = False, backend: str = "auto"
) -> Tensor:
    """Conv-GRU state update, all (N, F, H, W).

    ``(1 - u) * h + tanh(cx + ch)`` (official STDiff), or ``(1 - u) * h + u * tanh(cx + ch)``
    with ``standard=True``.
    """
    check.tensor("h", h, ndim=4)
    for name, value in (("cx", cx), ("ch", ch), ("u", u)):
        check.like(name, value, "h", h)
    check.flag("standard", standard)
    return resolve(backend, h.device.type).convgru_update(cx, ch, u, h, standard=standard)


def spade_norm(
    h: Tensor,
    gamma: Tensor,
    beta: Tensor,
    bias: Tensor | None = None,
    eps: float = 1e-5,
    backend: str = "auto",
) -> Tensor:
    """SPADE: ``instance_norm(h) * (1 + gamma) + beta (+ bias[:, :, None, None])``.

    h, gamma, beta: (N, C, H, W); bias: (N, C) or None. Statistics per (n, c) over H*W in float32,
    biased variance, ``eps`` added to the variance. Returns (N, C, H, W) in h's dtype.
    """
    check.tensor("h", h, ndim=4)
    check.like("gamma", gamma, "h", h)
    check.like("beta", beta, "h", h)
    if bias is not None:
        check.like("bias", bias, "h", h, shape=tuple(h.shape[:2]))
    eps = check.positive_float("eps", eps)
    return resolve(backend, h.device.type).spade_norm(h, gamma, beta, bias=bias, eps=eps)


def _check_noise(y: Tensor, dW: Tensor | None, dt: object, seed: object, offset: object) -> None:
    if dW is None:
        if seed is None:
            raise ValueError("dW=None draws the Brownian increment in the op and needs seed (an int >= 0)")
        check.positive_float("dt", dt)
        check.non_negative_int("seed", seed)
        check.non_negative_int("offset", offset)
    else:
        check.like("dW", dW, "y", y)
        if seed is not None:
            raise ValueError("give either dW or seed, not both")


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
    backend: str = "auto",
) -> Tensor:
    """One SDE step for diagonal noise; f, g, g_pred, dW share y's shape (any rank).

    Euler-Maruyama ``y + f dt + g dW``; with ``g_pred`` the Euler-Heun corrector
    ``y + f dt + (g + g_pred) / 2 dW``. ``g_is_raw=True`` applies tanh to g (and g_pred) in the op.
    ``dW=None`` draws ``dW = sqrt(dt) * philox_normal(y.shape, seed, offset)`` in the op, on every
    backend alike (bit for bit in float32; see :func:`philox_normal`). ``offset`` is a stream id:
    a solver passes offset k at step k (0, 1, 2, ...), not an element count.
    """
    check.tensor("y", y)
    check.like("f", f, "y", y)
    check.like("g", g, "y", y)
    if g_pred is not None:
        check.like("g_pred", g_pred, "y", y)
    dt = check.positive_float("dt", dt)
    check.flag("g_is_raw", g_is_raw)
    _check_noise(y, dW, dt, seed, offset)
    return resolve(backend, y.device.type).sde_step(
        y, f, g, dW, dt, g_pred=g_pred, g_is_raw=g_is_raw, seed=seed, offset=offset
    )


def sde_predict(
    y: Tensor,
    g: Tensor,
    dW: Tensor | None,
    dt: float | None = None,
    g_is_raw: bool = False,
    seed: int | None = None,
    offset: int = 0,
    backend: str = "auto",
) -> Tensor:
    """Euler-Heun predictor ``y + g dW`` (g, dW shaped like y).

    ``dW=None`` needs dt and seed and draws the same increment as :func:`sde_step` with equal
    (seed, offset), so predictor and corrector of one Heun step share it.
    """
    check.tensor("y", y)
    check.like("g", g, "y", y)
    check.flag("g_is_raw", g_is_raw)
    _check_noise(y, dW, dt, seed, offset)
    return resolve(backend, y.device.type).sde_predict(
        y, g, dW, dt=dt, g_is_raw=g_is_raw, seed=seed, offset=offset
    )


def philox_normal(
    shape: tuple[int, ...] | torch.Size,
    seed: int,
    offset: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The standard normals the SDE ops draw in-kernel for ``dW=None`` with this seed and offset.

    Element ``i`` (row-major) of a ``shape`` tensor is the normal of counter ``i`` of the
    Philox4x32-10 stream (seed, offset), ``offset`` being a stream id (one per solver step).
    Computed in float32, bit-identical to the C++/CUDA and Triton kernels, then cast to
    ``dtype``; the op's increment is ``sqrt(dt)`` times this. Returns a ``shape`` tensor.
    """
    if isinstance(shape, int) or not all(isinstance(s, int) and not isinstance(s, bool) for s in shape):
        raise TypeError(f"shape must be a tuple of ints, got {shape!r}")
    if any(s < 0 for s in shape):
        raise ValueError(f"shape must have sizes >= 0, got {tuple(shape)}")
    check.non_negative_int("seed", seed)
    check.non_negative_int("offset", offset)
    if dtype not in check.FLOAT_DTYPES:
        raise TypeError(f"dtype must be a floating dtype (float16/bfloat16/float32/float64), got {dtype}")
    numel = 1
    for s in shape:
        numel *= s
    return _philox_normals(numel, seed, offset, device=device).view(tuple(shape)).to(dtype)
