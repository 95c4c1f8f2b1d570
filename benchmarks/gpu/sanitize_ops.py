"""Call every fused op forward and backward once per case, for ``compute-sanitizer``.

A short program (seconds, not the test suite) that memcheck and racecheck can run whole:

    compute-sanitizer --tool memcheck --error-exitcode 1 python3 benchmarks/gpu/sanitize_ops.py
    compute-sanitizer --tool racecheck --error-exitcode 1 python3 benchmarks/gpu/sanitize_ops.py
    python3 benchmarks/gpu/sanitize_ops.py --device cpu --backends cpu   # the same calls on a CPU

The ops are those of the op contract (``stdiff.ops.contract.OPS``); an op there without inputs
below is an error, so a new op cannot be left out silently. Each op runs in float32 and
bfloat16 on shapes that reach every kernel path: a tail that is not a multiple of the vector
width, channels_last inputs, a SPADE row longer than one block (the looping kernel), explicit
and in-op (Philox) noise, all gradients and a single one (the backward ops' output mask).
Forward results are compared with the reference ops, so a kernel that reads memory it owns but
has not written (which memcheck does not report) still fails. Exit status 1 on any mismatch.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import torch
from torch import Tensor

from stdiff import ops
from stdiff.ops.contract import OPS


@dataclass(frozen=True)
class Case:
    """One call: ``op`` on (N, C, H, W) tensors, with these non-tensor flags."""

    op: str
    shape: tuple[int, int, int, int]
    flags: dict
    channels_last: bool = False


ODD, EVEN, LONG_ROW = (2, 3, 5, 7), (2, 4, 8, 8), (1, 2, 129, 129)  # LONG_ROW: H*W > 16384 elements

#: op -> cases; keys must equal the contract's ops (checked in :func:`cases`)
CASES: dict[str, list[Case]] = {
    "convgru_gates": [Case("convgru_gates", ODD, {}), Case("convgru_gates", EVEN, {}, channels_last=True)],
    "convgru_update": [Case("convgru_update", ODD, {"standard": False}),
                       Case("convgru_update", EVEN, {"standard": True}, channels_last=True)],
    "spade_norm": [Case("spade_norm", ODD, {"bias": True}),
                   Case("spade_norm", EVEN, {"bias": False}, channels_last=True),
                   Case("spade_norm", LONG_ROW, {"bias": True})],
    "sde_step": [Case("sde_step", ODD, {"heun": True, "g_is_raw": True, "noise": False}),
                 Case("sde_step", EVEN, {"heun": False, "g_is_raw": False, "noise": True}),
                 Case("sde_step", EVEN, {"heun": True, "g_is_raw": True, "noise": False}, channels_last=True)],
    "sde_predict": [Case("sde_predict", ODD, {"g_is_raw": True, "noise": False}),
                    Case("sde_predict", EVEN, {"g_is_raw": False, "noise": True})],
}


def cases() -> list[Case]:
    """Every case, for exactly the contract's ops (ValueError naming any op without cases)."""
    missing, unknown = sorted(set(OPS) - set(CASES)), sorted(set(CASES) - set(OPS))
    if missing or unknown:
        raise ValueError(f"sanitize_ops.py must have cases for exactly the contract's ops; "
                         f"missing {missing}, not in the contract {unknown}")
    return [case for name in OPS for case in CASES[name]]


def make_inputs(case: Case, dtype: torch.dtype, device: torch.device) -> tuple[dict[str, Tensor], dict]:
    """(tensor arguments by contract name, other keyword arguments) for one case."""
    n, c, h, w = case.shape
    fmt = torch.channels_last if case.channels_last else torch.contiguous_format

    def new(*shape: int) -> Tensor:
        t = torch.randn(*shape, device=device, dtype=dtype)
        return t.contiguous(memory_format=fmt) if t.dim() == 4 else t

    f = case.flags
    if case.op == "convgru_gates":
        return {"gx": new(n, 2 * c, h, w), "gh": new(n, 2 * c, h, w), "h": new(n, c, h, w)}, {}
    if case.op == "convgru_update":
        return {name: new(n, c, h, w) for name in ("cx", "ch", "u", "h")}, {"standard": f["standard"]}
    if case.op == "spade_norm":
        tensors = {name: new(n, c, h, w) for name in ("h", "gamma", "beta")}
        if f["bias"]:
            tensors["bias"] = new(n, c)
        return tensors, {"eps": 1e-5}
    noise = {"seed": 7, "offset": 3} if f["noise"] else {}
    if case.op == "sde_step":
        tensors = {name: new(n, c, h, w) for name in ("y", "f", "g")}
        if f["heun"]:
            tensors["g_pred"] = new(n, c, h, w)
        tensors["dW"] = None if f["noise"] else new(n, c, h, w)
        return tensors, {"dt": 0.1, "g_is_raw": f["g_is_raw"], **noise}
    if case.op == "sde_predict":
        tensors = {"y": new(n, c, h, w), "g": new(n, c, h, w), "dW": None if f["noise"] else new(n, c, h, w)}
        return tensors, {"dt": 0.1, "g_is_raw": f["g_is_raw"], **noise}
    raise ValueError(f"no inputs for op {case.op!r}")


def call(op: str, backend: str, tensors: dict[str, Tensor | None], kwargs: dict) -> list[Tensor]:
    """``stdiff.ops.<op>`` by keyword (the public functions take the contract's parameter names)."""
    out = getattr(ops, op)(**tensors, **kwargs, backend=backend)
    return list(out) if isinstance(out, (tuple, list)) else [out]


def run_case(case: Case, backend: str, dtype: torch.dtype, device: torch.device, only_first: bool) -> str | None:
    """Forward (checked against the reference) and backward of one case; a failure message or None."""
    tensors, kwargs = make_inputs(case, dtype, device)
    differentiable = [name for name in OPS[case.op].differentiable if tensors.get(name) is not None]
    wanted = differentiable[:1] if only_first else differentiable
    leaves = {name: t.detach().clone().requires_grad_(name in wanted) if t is not None else None
              for name, t in tensors.items()}
    outs = call(case.op, backend, leaves, kwargs)
    with torch.no_grad():
        expected = call(case.op, "reference", tensors, kwargs)
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    for got, want in zip(outs, expected):
        if not torch.allclose(got.float(), want.float(), atol=tol, rtol=tol):
            return f"forward differs from the reference by {(got.float() - want.float()).abs().max().item():.3g}"
    grads = torch.autograd.grad(outs, [leaves[name] for name in wanted], [torch.randn_like(o) for o in outs])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if not all(torch.isfinite(g).all() for g in grads):
        return "a gradient is not finite"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--backends", nargs="+", default=["cuda"], choices=ops.BACKENDS,
                        help="op backends to call (default: cuda)")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    status = ops.backend_status()
    for backend in args.backends:
        if not status[backend][0]:
            print(f"backend {backend!r} is not available: {status[backend][1]}", file=sys.stderr)
            return 2
    torch.manual_seed(0)
    failures, calls = [], 0
    for backend in args.backends:
        for dtype_name in args.dtypes:
            dtype = getattr(torch, dtype_name)
            for case in cases():
                for only_first in (False, True):
                    error = run_case(case, backend, dtype, device, only_first)
                    calls += 1
                    label = (f"{backend} {dtype_name} {case.op} {case.shape} {case.flags}"
                             f"{' channels_last' if case.channels_last else ''}{' one-grad' if only_first else ''}")
                    if error is not None:
                        failures.append(f"{label}: {error}")
                        print(f"FAIL {label}: {error}", flush=True)
    print(f"{calls} forward+backward calls of {len(OPS)} ops ({', '.join(OPS)}) on {args.backends} "
          f"{args.dtypes}: {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
