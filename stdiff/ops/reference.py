"""Pure-PyTorch reference implementations of the fused ops: the numerical truth.

Every other backend (C++/OpenMP, CUDA, Triton) must match these functions. They are plain
differentiable PyTorch, so autograd provides the backward pass and ``torch.compile`` traces
them as is. Arguments are NOT validated here; the public functions in ``stdiff.ops`` do that.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .contract import output_format
from .philox import normals

__all__ = [
    "convgru_gates",
    "convgru_update",
    "spade_norm",
    "sde_step",
    "sde_predict",
    "brownian_increment",
    "is_available",
]


def is_available() -> tuple[bool, str]:
    """The reference backend needs nothing but PyTorch."""
    return True, "pure PyTorch"


def convgru_gates(gx: Tensor, gh: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    """Update gate and reset-scaled state of a Conv-GRU cell.

    gx, gh: (N, 2F, H, W) gate pre-activations from the input and the state convs;
    h: (N, F, H, W). Returns ``u`` (N, F, H, W) and ``r * h`` (N, F, H, W), dense in the inputs'
    common layout (the op contract's rule; a channel half of a channels_last tensor is not).
    """
    u, r = torch.sigmoid(gx + gh).chunk(2, dim=1)
    fmt = output_format(gx, gh, h)
    return u.contiguous(memory_format=fmt), (r * h).contiguous(memory_format=fmt)


def convgru_update(cx: Tensor, ch: Tensor, u: Tensor, h: Tensor, standard: bool = False) -> Tensor:
    """New Conv-GRU state from the candidate pre-activations, all (N, F, H, W).

    Official STDiff form: ``(1 - u) * h + tanh(cx + ch)``; ``standard=True`` gives the textbook
    GRU ``(1 - u) * h + u * tanh(cx + ch)``.
    """
    c = torch.tanh(cx + ch)
    if standard:
        c = u * c
    return (1 - u) * h + c


def spade_norm(
    h: Tensor, gamma: Tensor, beta: Tensor, bias: Tensor | None = None, eps: float = 1e-5
) -> Tensor:
    """SPADE normalisation ``IN(h) * (1 + gamma) + beta (+ bias)``.

    h, gamma, beta: (N, C, H, W); bias: (N, C) or None (a per-channel additive term, e.g. the
    UNet's time-embedding projection). Instance-norm statistics (mean, biased variance) per
    (n, c) over H*W are computed in at least float32; the result has h's dtype.
    """
    acc = torch.promote_types(h.dtype, torch.float32)
    hf = h.to(acc)
    var, mean = torch.var_mean(hf, dim=(2, 3), keepdim=True, correction=0)
    out = (hf - mean) * torch.rsqrt(var + eps) * (1 + gamma.to(acc)) + beta.to(acc)
    if bias is not None:
        out = out + bias.to(acc)[:, :, None, None]
    return out.to(h.dtype)


def brownian_increment(like: Tensor, dt: float, seed: int, offset: int = 0) -> Tensor:
    """``sqrt(dt) * N(0, 1)`` shaped like ``like``: the increment every backend draws for dW=None.

    The normals are those of :func:`stdiff.ops.philox_normal` (bit-identical to the C++/CUDA and
    Triton kernels); float32 and lower precisions scale them by float32 ``sqrt(dt)`` as the
    kernels do, float64 in float64.
    """
    z = normals(like.numel(), seed, offset, device=like.device).view(like.shape)
    if like.dtype == torch.float64:
        return z.double() * math.sqrt(dt)
    return (z * math.sqrt(dt)).to(like.dtype)


def _diffusion(g: Tensor, g_is_raw: bool) -> Tensor:
    return torch.tanh(g) if g_is_raw else g


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
    """One SDE step; all tensors share y's shape.

    Euler-Maruyama: ``y + f dt + g dW``. With ``g_pred`` (diffusion at the Heun predictor point):
    the Euler-Heun corrector ``y + f dt + (g + g_pred) / 2 dW``. ``g_is_raw`` applies tanh to g and
    g_pred first. ``dW=None`` draws ``sqrt(dt) N(0, 1)`` from (seed, offset) and, like every
    backend, returns an NCHW-contiguous result.
    """
    drawn = dW is None
    if drawn:
        dW = brownian_increment(y, dt, seed, offset)
    gw = _diffusion(g, g_is_raw)
    if g_pred is not None:
        gw = 0.5 * (gw + _diffusion(g_pred, g_is_raw))
    out = y + f * dt + gw * dW
    return out.contiguous() if drawn else out


def sde_predict(
    y: Tensor,
    g: Tensor,
    dW: Tensor | None,
    dt: float | None = None,
    g_is_raw: bool = False,
    seed: int | None = None,
    offset: int = 0,
) -> Tensor:
    """Euler-Heun predictor ``y + g dW`` (tensors shaped like y); ``dW=None`` needs dt, seed
    (and gives an NCHW-contiguous result)."""
    if dW is None:
        return (y + _diffusion(g, g_is_raw) * brownian_increment(y, dt, seed, offset)).contiguous()
    return y + _diffusion(g, g_is_raw) * dW
