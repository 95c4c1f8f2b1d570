"""Every backend against the op contract (stdiff.ops.contract): names, argument order and defaults,
custom-op schemas (forward and backward), output layout, and which gradients are computed."""
from __future__ import annotations

import inspect

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from stdiff import ops
from stdiff.ops import contract
from stdiff.ops._dispatch import _load


def _modules() -> dict[str, object]:
    """{backend: module} of the backends available here (the module runs the ops)."""
    return {name: _load(name)[0] for name in ops.BACKENDS if _load(name)[0] is not None}


def _device(backend: str) -> str:
    return "cuda" if backend == "cuda" or (backend == "triton" and torch.cuda.is_available()) else "cpu"


MODULES = _modules()
RUNNABLE = [b for b in MODULES if b != "cuda" or torch.cuda.is_available()]


@pytest.mark.parametrize("backend", list(MODULES))
@pytest.mark.parametrize("op", list(contract.OPS))
def test_backend_functions_have_the_contract_signature(backend, op):
    params = inspect.signature(getattr(MODULES[backend], op)).parameters
    assert tuple(params) == contract.OPS[op].params
    reference = inspect.signature(getattr(ops.reference, op)).parameters
    assert [p.default for p in params.values()] == [p.default for p in reference.values()]
    public = tuple(inspect.signature(getattr(ops, op)).parameters)
    assert public == (*contract.OPS[op].params, "backend")


def _namespaces() -> list[str]:
    spaces = []
    if "cpu" in MODULES or ops.backend_status()["cpu"][0]:
        spaces.append("stdiff")
    if "triton" in MODULES:
        spaces.append("stdiff_triton")
    return spaces


@pytest.mark.parametrize("namespace", _namespaces())
@pytest.mark.parametrize("name", list(contract.SCHEMAS))
def test_custom_op_schemas_are_the_contract(namespace, name):
    got = getattr(getattr(torch.ops, namespace), name).default._schema
    want = torch._C.parse_schema(f"{namespace}::{name}{contract.SCHEMAS[name]}")
    assert str(got) == str(want)


def _inputs(op: str, device: str) -> dict[str, torch.Tensor | None]:
    """Tensor inputs of ``op`` ((2, C, 4, 5), a (2, C) bias), keyed by parameter name."""
    torch.manual_seed(0)
    r = lambda c=3: torch.randn(2, c, 4, 5, device=device)  # noqa: E731
    return {
        "convgru_gates": {"gx": r(6), "gh": r(6), "h": r()},
        "convgru_update": {"cx": r(), "ch": r(), "u": r(), "h": r()},
        "spade_norm": {"h": r(), "gamma": r(), "beta": r(), "bias": torch.randn(2, 3, device=device)},
        "sde_step": {"y": r(), "f": r(), "g": r(), "dW": r(), "g_pred": r()},
        "sde_predict": {"y": r(), "g": r(), "dW": r()},
    }[op]


_SCALARS = {"sde_step": {"dt": 0.1, "g_is_raw": True}, "sde_predict": {"g_is_raw": True}}


def _call(backend: str, op: str, tensors: dict) -> tuple[torch.Tensor, ...]:
    out = getattr(ops, op)(**tensors, **_SCALARS.get(op, {}), backend=backend)
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("backend", RUNNABLE)
@pytest.mark.parametrize("op", list(contract.OPS))
def test_channels_last_inputs_give_channels_last_outputs_and_grads(backend, op):
    device = _device(backend)
    tensors = {
        k: v.to(memory_format=torch.channels_last).requires_grad_(True) if v.dim() == 4 else v.requires_grad_(True)
        for k, v in _inputs(op, device).items()
    }
    outs = _call(backend, op, tensors)
    want = _call("reference", op, {k: v.detach() for k, v in tensors.items()})
    for got, ref in zip(outs, want):
        assert got.is_contiguous(memory_format=torch.channels_last), f"{op} on {backend}: output is not channels_last"
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    sum(o.sum() for o in outs).backward()
    for name, t in tensors.items():
        if t.dim() == 4:
            assert t.grad.is_contiguous(memory_format=torch.channels_last), f"{op} on {backend}: grad of {name}"


@pytest.mark.parametrize("backend", RUNNABLE)
@pytest.mark.parametrize("op", list(contract.OPS))
def test_only_the_needed_gradients_and_they_match_the_reference(backend, op):
    """Each differentiable input alone requires grad: it gets the reference's gradient, others none."""
    device = _device(backend)
    for wanted in contract.OPS[op].differentiable:
        grads = {}
        for which in (backend, "reference"):
            tensors = _inputs(op, device)
            tensors[wanted].requires_grad_(True)
            outs = _call(which, op, tensors)
            weights = [torch.linspace(-1, 1, o.numel(), device=device).view_as(o) for o in outs]
            (grads[which],) = torch.autograd.grad(sum((o * w).sum() for o, w in zip(outs, weights)), [tensors[wanted]])
        torch.testing.assert_close(grads[backend], grads["reference"], atol=1e-5, rtol=1e-5, msg=f"{op}: {wanted}")


def _backward_namespaces() -> list[tuple[str, str]]:
    spaces = [("stdiff", "cpu")] if "cpu" in MODULES else []
    if "triton" in MODULES:
        spaces.append(("stdiff_triton", _device("triton")))
    if "cuda" in RUNNABLE:
        spaces.append(("stdiff", "cuda"))
    return spaces


@pytest.mark.parametrize("namespace, device", _backward_namespaces())
def test_backward_ops_compute_only_what_output_mask_asks(namespace, device):
    lib = getattr(torch.ops, namespace)
    x = lambda: torch.randn(2, 3, 4, 5, device=device)  # noqa: E731
    grad, g, dw, gp = x(), x(), x(), x()
    full = lib.sde_step_backward(grad, g, dw, 0.1, gp, True, None, 0, [True, True, True, True])
    assert len(full) == 4
    only_g = lib.sde_step_backward(grad, g, dw, 0.1, gp, True, None, 0, [False, True, False, False])
    assert len(only_g) == 1 and torch.equal(only_g[0], full[1])
    no_dw = lib.sde_predict_backward(grad, g, dw, None, True, None, 0, [True, False])
    assert len(no_dw) == 1
    h, gamma = x(), x()
    spade = lib.spade_norm_backward(grad, h, gamma, 1e-5, [True, True, True])
    assert [t.shape for t in spade] == [h.shape, h.shape, h.shape[:2]]
    only_h = lib.spade_norm_backward(grad, h, gamma, 1e-5, [True, False, False])
    assert len(only_h) == 1
    torch.testing.assert_close(only_h[0], spade[0])  # the same math, up to float32 rounding


@pytest.mark.parametrize("value", ["no", 1, None, 0.0])
@pytest.mark.parametrize("op", ["sde_step", "sde_predict"])
def test_flags_must_be_bool(op, value):
    y = torch.zeros(2, 3)
    args = (y, y, y, y, 0.1) if op == "sde_step" else (y, y, y)
    with pytest.raises(TypeError, match="g_is_raw must be a bool"):
        getattr(ops, op)(*args, g_is_raw=value)
    with pytest.raises(TypeError, match="standard must be a bool"):
        ops.convgru_update(*(torch.zeros(1, 2, 3, 3) for _ in range(4)), standard=value)


class _BackwardCalls(TorchDispatchMode):
    """Records (op name, output_mask) of every ``*_backward`` custom op dispatched."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, list[bool]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name.split("::")[-1]
        if name.endswith("_backward"):
            self.calls.append((name, list(args[-1])))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("backend", [b for b in RUNNABLE if b != "reference"])
@pytest.mark.parametrize("op", list(contract.OPS))
def test_autograd_asks_the_backward_op_for_the_needed_gradients_only(backend, op):
    """A counter hook on the dispatcher: with one differentiable input requiring grad, autograd
    calls the backward op once, with an output mask asking for that input's gradient alone (the
    Conv-GRU pairs gx/gh and cx/ch share one gradient)."""
    slot = {"convgru_gates": {"gx": 0, "gh": 0, "h": 1}, "convgru_update": {"cx": 0, "ch": 0, "u": 1, "h": 2}}
    device = _device(backend)
    for wanted in contract.OPS[op].differentiable:
        if op == "spade_norm" and wanted == "beta" or op.startswith("sde") and wanted == "y":
            continue  # d(beta) and d(y) are the upstream gradient itself: no backward op runs
        tensors = _inputs(op, device)
        tensors[wanted].requires_grad_(True)
        outs = _call(backend, op, tensors)
        with _BackwardCalls() as hook:
            torch.autograd.grad(sum(o.sum() for o in outs), [tensors[wanted]])
        assert len(hook.calls) == 1, hook.calls
        name, mask = hook.calls[0]
        assert name == f"{op}_backward" and sum(mask) == 1, (wanted, mask)
        if op.startswith("convgru"):
            assert mask.index(True) == slot[op][wanted], (wanted, mask)
