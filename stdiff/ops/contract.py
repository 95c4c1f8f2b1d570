"""The op contract: what every backend of the five fused ops must provide, written once.

- **Names.** :data:`OP_NAMES` (the keys of :data:`OPS`) is the one list of the fused ops; each has
  a backward op ``<op>_backward``. Every other list of op names (benchmarks, tests) derives from it.
- **Functions.** Each backend module (``stdiff.ops.reference``, ``stdiff.ops._compiled`` for "cpu"
  and "cuda", ``stdiff.kernels`` for "triton") exposes the five functions of :data:`OPS` with
  exactly these parameters, in this order, with these defaults (the public ``stdiff.ops``
  functions add ``backend`` and validate the arguments once).
- **Custom ops.** The compiled backends register ``<namespace>::<op>`` and ``<op>_backward`` with
  the schemas of :data:`SCHEMAS`, read from ``schemas.def`` next to this file (the C++ library
  ``stdiff::`` includes the same file in csrc/registration.cpp; ``stdiff_triton::`` is defined from
  :data:`SCHEMAS`), and with the fake (meta) implementations of :data:`FAKES`.
- **Gradient rule.** Every backward op takes an ``output_mask`` (from ``ctx.needs_input_grad``),
  computes only the gradients it asks for and returns those, in order. Double backward goes
  through :mod:`stdiff.ops.backward` (the backward ops' formulas in reference PyTorch) on every backend.
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

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor


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
#: the fused ops, in the contract's order
OP_NAMES: tuple[str, ...] = tuple(OPS)

SCHEMA_FILE = Path(__file__).with_name("schemas.def")


def _read_schemas(path: Path) -> dict[str, str]:
    """{op name: schema} from the ``STDIFF_OP(name, "schema" "continued")`` lines of ``path``."""
    text = re.sub(r"//[^\n]*", "", path.read_text())
    schemas = {
        name: "".join(re.findall(r'"([^"]*)"', body))
        for name, body in re.findall(r"STDIFF_OP\(\s*(\w+)\s*,((?:\s*\"[^\"]*\")+)\s*\)", text)
    }
    expected = [name for op in OP_NAMES for name in (op, f"{op}_backward")]
    if sorted(schemas) != sorted(expected):
        raise RuntimeError(f"{path.name} must define the schemas of {expected}, found {sorted(schemas)}")
    return schemas


#: name -> schema of every custom op (forward and backward), e.g. "(Tensor gx, ...) -> (Tensor, Tensor)"
SCHEMAS: dict[str, str] = _read_schemas(SCHEMA_FILE)


def output_format(*tensors: Tensor | None, allow_channels_last: bool = True) -> torch.memory_format:
    """The layout of an op's outputs for these inputs (None entries are ignored): the rule above."""
    present = [t for t in tensors if t is not None]
    if all(t.is_contiguous() for t in present):
        return torch.contiguous_format
    if allow_channels_last and all(t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) for t in present):
        return torch.channels_last
    return torch.contiguous_format


# ---------------------------------------------------------------------------- fake (meta) implementations
def _empty(like: Tensor, fmt: torch.memory_format, shape: Sequence[int] | None = None) -> Tensor:
    return torch.empty(like.shape if shape is None else shape, dtype=like.dtype, device=like.device, memory_format=fmt)


def _asked(grads: Sequence[Callable[[], Tensor] | None], output_mask: Sequence[bool]) -> list[Tensor]:
    """The gradients an output mask asks for, in order (None: the input is absent, no gradient)."""
    return [make() for make, needed in zip(grads, output_mask) if make is not None and needed]


def _fake_gates(gx, gh, h):
    fmt = output_format(gx, gh, h)
    return _empty(h, fmt), _empty(h, fmt)


def _fake_gates_backward(grad_u, grad_rh, u, gx, gh, h, output_mask):
    fmt = output_format(gx, gh, h, grad_u, grad_rh, u)
    return _asked((lambda: _empty(h, fmt, gx.shape), lambda: _empty(h, fmt)), output_mask)


def _fake_update(cx, ch, u, h, standard=False):
    return _empty(h, output_format(cx, ch, u, h))


def _fake_update_backward(grad, cx, ch, u, h, standard, output_mask):
    fmt = output_format(cx, ch, u, h, grad)
    return _asked([lambda: _empty(h, fmt)] * 3, output_mask)


def _fake_spade(h, gamma, beta, bias=None, eps=1e-5):
    return _empty(h, output_format(h, gamma, beta))


def _fake_spade_backward(grad, h, gamma, eps, output_mask):
    fmt = output_format(h, gamma, grad)
    bias = lambda: _empty(h, torch.contiguous_format, h.shape[:2])  # noqa: E731
    return _asked((lambda: _empty(h, fmt), lambda: _empty(h, fmt), bias), output_mask)


def _fake_sde_step(y, f, g, dW, dt, g_pred=None, g_is_raw=False, seed=None, offset=0):
    return _empty(y, output_format(y, f, g, dW, g_pred, allow_channels_last=dW is not None))


def _fake_sde_step_backward(grad, g, dW, dt, g_pred, g_is_raw, seed, offset, output_mask):
    new = lambda: _empty(grad, output_format(grad, g, dW, g_pred, allow_channels_last=dW is not None))  # noqa: E731
    return _asked((new, new, new if g_pred is not None else None, new if dW is not None else None), output_mask)


def _fake_sde_predict(y, g, dW, dt=None, g_is_raw=False, seed=None, offset=0):
    return _empty(y, output_format(y, g, dW, allow_channels_last=dW is not None))


def _fake_sde_predict_backward(grad, g, dW, dt, g_is_raw, seed, offset, output_mask):
    new = lambda: _empty(grad, output_format(grad, g, dW, allow_channels_last=dW is not None))  # noqa: E731
    return _asked((new, new if dW is not None else None), output_mask)


#: name -> fake implementation (shapes, dtypes and layouts of the outputs) of every custom op
FAKES: dict[str, Callable[..., object]] = {
    "convgru_gates": _fake_gates,
    "convgru_gates_backward": _fake_gates_backward,
    "convgru_update": _fake_update,
    "convgru_update_backward": _fake_update_backward,
    "spade_norm": _fake_spade,
    "spade_norm_backward": _fake_spade_backward,
    "sde_step": _fake_sde_step,
    "sde_step_backward": _fake_sde_step_backward,
    "sde_predict": _fake_sde_predict,
    "sde_predict_backward": _fake_sde_predict_backward,
}
