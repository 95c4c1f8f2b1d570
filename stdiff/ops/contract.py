"""The op contract: what every backend of the five fused ops must provide, written once.

- **Functions.** Each backend module (``stdiff.ops.reference``, ``stdiff.ops._compiled`` for "cpu"
  and "cuda", ``stdiff.kernels`` for "triton") exposes the five functions of :data:`OPS` with
  exactly these parameters, in this order, with these defaults (the public ``stdiff.ops``
  functions add ``backend`` and validate the arguments once).
- **Custom ops.** The compiled backends register ``<namespace>::<op>`` and its backward op with
  the schemas of :data:`SCHEMAS` (``stdiff::`` from C++, csrc/registration.cpp; ``stdiff_triton::``
  from these strings). A backward op with an ``output_mask`` computes only the gradients it asks
  for and returns those, in order; autograd passes ``ctx.needs_input_grad``.
- **Layout.** Outputs (and gradients) take the inputs' common layout: NCHW-contiguous, or
  channels_last when every 4-D input is channels_last; any other mix gives NCHW-contiguous.
  The SDE ops with in-op noise (``dW=None``) always return NCHW-contiguous results.
- **Noise.** ``dW=None`` draws ``sqrt(dt) * stdiff.ops.philox_normal(y.shape, seed, offset)``,
  ``offset`` being a stream id (one per solver step), bit-identical on every backend in float32.
- **Gradients.** Every tensor input in ``differentiable`` gets a gradient (when it requires one);
  ``gx`` and ``gh`` (and ``cx``, ``ch``) share one, and ``g_pred`` / ``dW`` / ``bias`` get one only
  when given.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class OpContract:
    """One op: its backend function's parameters (in order) and its differentiable inputs."""

    params: tuple[str, ...]
    differentiable: tuple[str, ...]


OPS: dict[str, OpContract] = {
    "convgru_gates": OpContract(("gx", "gh", "h"), ("gx", "gh", "h")),
    "convgru_update": OpContract(("cx", "ch", "u", "h", "standard"), ("cx", "ch", "u", "h")),
    "spade_norm": OpContract(("h", "gamma", "beta", "bias", "eps"), ("h", "gamma", "beta", "bias")),
    "sde_step": OpContract(
        ("y", "f", "g", "dW", "dt", "g_pred", "g_is_raw", "seed", "offset"), ("y", "f", "g", "dW", "g_pred")
    ),
    "sde_predict": OpContract(("y", "g", "dW", "dt", "g_is_raw", "seed", "offset"), ("y", "g", "dW")),
}

SCHEMAS: dict[str, str] = {
    "convgru_gates": "(Tensor gx, Tensor gh, Tensor h) -> (Tensor, Tensor)",
    "convgru_gates_backward": (
        "(Tensor? grad_u, Tensor? grad_rh, Tensor u, Tensor gx, Tensor gh, Tensor h) -> (Tensor, Tensor)"
    ),
    "convgru_update": "(Tensor cx, Tensor ch, Tensor u, Tensor h, bool standard=False) -> Tensor",
    "convgru_update_backward": (
        "(Tensor grad, Tensor cx, Tensor ch, Tensor u, Tensor h, bool standard) -> (Tensor, Tensor, Tensor)"
    ),
    "spade_norm": "(Tensor h, Tensor gamma, Tensor beta, Tensor? bias=None, float eps=1e-05) -> Tensor",
    "spade_norm_backward": "(Tensor grad, Tensor h, Tensor gamma, float eps, bool[3] output_mask) -> Tensor[]",
    "sde_step": (
        "(Tensor y, Tensor f, Tensor g, Tensor? dW, float dt, Tensor? g_pred=None, bool g_is_raw=False, "
        "int? seed=None, int offset=0) -> Tensor"
    ),
    "sde_step_backward": (
        "(Tensor grad, Tensor g, Tensor? dW, float dt, Tensor? g_pred, bool g_is_raw, int? seed, int offset, "
        "bool[4] output_mask) -> Tensor[]"
    ),
    "sde_predict": (
        "(Tensor y, Tensor g, Tensor? dW, float? dt=None, bool g_is_raw=False, int? seed=None, int offset=0) -> Tensor"
    ),
    "sde_predict_backward": (
        "(Tensor grad, Tensor g, Tensor? dW, float? dt, bool g_is_raw, int? seed, int offset, "
        "bool[2] output_mask) -> Tensor[]"
    ),
}


def output_format(*tensors: torch.Tensor | None, allow_channels_last: bool = True) -> torch.memory_format:
    """The layout of an op's outputs for these inputs (None entries are ignored): the rule above."""
    present = [t for t in tensors if t is not None]
    if all(t.is_contiguous() for t in present):
        return torch.contiguous_format
    if allow_channels_last and all(t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) for t in present):
        return torch.channels_last
    return torch.contiguous_format
