"""One case table per fused op: its variants, its input builder and the accuracy rule.

Shared by the per-op tests (``tests/test_op_<op>.py``) and ``stdiff bench ops``: a case is an op,
a variant (the flags of one use: ``"bias"``, ``"heun+raw+noise"``, ...) and a shape. The SPADE and
Conv-GRU ops take (N, C, H, W) shapes (the gates get 2C channels); the SDE ops any shape.

The accuracy rule, one for every backend and device: float32/float64 results (outputs and input
gradients) match the reference backend in the same dtype to :data:`TIGHT`; bfloat16/float16
results are at most twice as far from the float64 reference as the reference backend's own
result in that dtype, plus one unit of the dtype's epsilon times the largest magnitude (a floor
for cases where PyTorch happens to be exact): :func:`check_accuracy`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .contract import OP_NAMES, OPS

__all__ = ["CASES", "OpCase", "TIGHT", "inputs", "call", "check_accuracy", "accuracy_error"]

#: (rtol, atol) of float32/float64 outputs and gradients against the reference in the same dtype
TIGHT: dict[torch.dtype, dict[str, dict[str, float]]] = {
    torch.float32: {"output": dict(rtol=2e-5, atol=2e-5), "gradient": dict(rtol=1e-4, atol=1e-4)},
    torch.float64: {"output": dict(rtol=1e-10, atol=1e-10), "gradient": dict(rtol=1e-9, atol=1e-9)},
}

Draw = Callable[..., Tensor]  # draw(shape, scale=1.0, shift=0.0, uniform=False) -> tensor


@dataclass(frozen=True)
class OpCase:
    """The case table of one op.

    ``variants``: name -> flags; ``benchmarked``: the variants the model uses (timed by ``stdiff
    bench ops``); ``build(shape, flags, draw)``: the op's keyword arguments (contract parameter
    names); ``per_row``: (N, C, H, W) shapes only (else any shape); ``units``: tensors of the
    shape a fused kernel reads and writes (forward, backward), for the bytes a benchmark row moves.
    """

    op: str
    variants: dict[str, dict[str, bool]]
    benchmarked: tuple[str, ...]
    build: Callable[[tuple[int, ...], dict[str, bool], Draw], dict[str, object]]
    per_row: bool = True
    units: Callable[[dict[str, bool]], tuple[int, int]] = field(default=lambda flags: (0, 0))


def _gates(shape, flags, draw):
    n, c, h, w = shape
    return {"gx": draw((n, 2 * c, h, w), 2.0), "gh": draw((n, 2 * c, h, w)), "h": draw(shape)}


def _update(shape, flags, draw):
    return {"cx": draw(shape, 2.0), "ch": draw(shape), "u": draw(shape, uniform=True), "h": draw(shape),
            "standard": flags.get("standard", False)}


def _spade(shape, flags, draw):
    return {"h": draw(shape, 3.0, 1.0), "gamma": draw(shape, 0.5), "beta": draw(shape),
            "bias": draw(shape[:2]) if flags.get("bias") else None, "eps": 1e-5}


def _noise_args(flags) -> dict[str, object]:
    return {"g_is_raw": flags.get("raw", False), "seed": 11 if flags.get("noise") else None, "offset": 3 if flags.get("noise") else 0}


def _step(shape, flags, draw):
    return {"y": draw(shape), "f": draw(shape), "g": draw(shape), "dW": None if flags.get("noise") else draw(shape, 0.3),
            "dt": 0.1, "g_pred": draw(shape) if flags.get("heun") else None, **_noise_args(flags)}


def _predict(shape, flags, draw):
    noise = flags.get("noise", False)
    return {"y": draw(shape), "g": draw(shape), "dW": None if noise else draw(shape, 0.3),
            "dt": 0.1 if noise else None, **_noise_args(flags)}


CASES: dict[str, OpCase] = {
    "convgru_gates": OpCase(
        "convgru_gates", {"official": {}}, ("official",), _gates,
        # fwd: gx, gh (2 each), h -> u, rh; bwd: 2 grads, gx, gh, h -> grad_g (2), grad_h
        units=lambda flags: (7, 10)),
    "convgru_update": OpCase(
        "convgru_update", {"official": {}, "standard": {"standard": True}}, ("official",), _update,
        # fwd: cx, ch, u, h -> h'; bwd: grad, cx, ch, u, h -> grad_c, grad_u, grad_h
        units=lambda flags: (5, 8)),
    "spade_norm": OpCase(
        "spade_norm", {"plain": {}, "bias": {"bias": True}}, ("bias",), _spade,
        # fwd: h, gamma, beta -> out; bwd: grad, h, gamma -> grad_h, grad_gamma
        units=lambda flags: (4, 5)),
    "sde_step": OpCase(
        "sde_step",
        {"euler": {}, "raw": {"raw": True}, "heun+raw": {"heun": True, "raw": True},
         "heun+raw+noise": {"heun": True, "raw": True, "noise": True}},
        ("heun+raw", "heun+raw+noise"), _step, per_row=False,
        # y, f, g, g_pred, [dW] -> y'; grad, g, g_pred, [dW] -> grads
        units=lambda flags: (5, 6) if flags.get("noise") else (6, 8)),
    "sde_predict": OpCase(
        "sde_predict", {"plain": {}, "raw": {"raw": True}, "raw+noise": {"raw": True, "noise": True}},
        ("raw", "raw+noise"), _predict, per_row=False,
        units=lambda flags: (3, 3) if flags.get("noise") else (4, 5)),
}
assert tuple(CASES) == OP_NAMES, "every op of the contract has a case table"


def inputs(op: str, variant: str, shape: Sequence[int], dtype: torch.dtype = torch.float32,
           device: torch.device | str = "cpu", requires_grad: bool = False,
           generator: torch.Generator | None = None) -> dict[str, object]:
    """Keyword arguments of ``op`` (contract parameter names) for one variant and shape.

    Values are drawn in float64 and rounded to ``dtype`` (so every dtype sees the same numbers up
    to rounding); the differentiable tensors require grad when ``requires_grad``.
    """
    case = CASES[op]

    def draw(size, scale: float = 1.0, shift: float = 0.0, uniform: bool = False) -> Tensor:
        base = torch.rand if uniform else torch.randn
        t = base(tuple(size), dtype=torch.float64, generator=generator)
        return (t * scale + shift).to(device=device, dtype=dtype)

    kwargs = case.build(tuple(shape), case.variants[variant], draw)
    if requires_grad:
        for name in OPS[op].differentiable:
            if isinstance(kwargs.get(name), Tensor):
                kwargs[name].requires_grad_(True)
    return kwargs


def call(fn: Callable[..., object], kwargs: dict[str, object]) -> tuple[Tensor, ...]:
    """``fn(**kwargs)`` with the outputs as a tuple."""
    out = fn(**kwargs)
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def accuracy_error(got: Tensor, ref: Tensor, truth: Tensor) -> tuple[float, float, float]:
    """(max error of ``got``, of ``ref``, floor) against the float64 ``truth``: the low-precision rule."""
    eps = torch.finfo(ref.dtype).eps
    err = (got.double() - truth.double()).abs().max().item() if got.numel() else 0.0
    own = (ref.double() - truth.double()).abs().max().item() if ref.numel() else 0.0
    floor = eps * (1.0 + (truth.abs().max().item() if truth.numel() else 0.0))
    return err, own, floor


def check_accuracy(kind: str, got: Tensor, ref: Tensor, truth: Tensor) -> None:
    """The accuracy rule for one output or gradient (``kind``: "output" or "gradient"): ``got``
    (a backend) and ``ref`` (the reference backend) in the same dtype, ``truth`` in float64."""
    assert got.shape == ref.shape and got.dtype == ref.dtype, f"{kind}: {got.shape} {got.dtype} vs {ref.shape} {ref.dtype}"
    if ref.dtype in TIGHT:
        torch.testing.assert_close(got, ref, **TIGHT[ref.dtype][kind])
        return
    err, own, floor = accuracy_error(got, ref, truth)
    assert err <= 2 * own + floor, f"{kind} ({ref.dtype}): error {err:.3g} vs the reference's {own:.3g} (floor {floor:.3g})"
