"""The tests every fused op gets, on every backend available here (imported by tests/test_op_<op>.py).

A per-op test module sets ``OP``, imports the ``test_*`` functions below and
``pytest_generate_tests = generate_for(OP)``, which parametrizes them over the available
(backend, device) targets, the op's variants (``stdiff.ops.cases``) and the dtypes. Inputs, shapes
and the accuracy rule come from the op's case table, the truth from the reference backend.

Targets: the reference, the C++ kernels ("cpu"), Triton in its interpreter on CPU tensors (set by
tests/conftest.py when no GPU is visible), and with a GPU the reference, "cuda" and "triton" on
CUDA tensors. ``STDIFF_REQUIRE_EXT=1`` (CI) turns a missing C++ extension into a failure.
"""
from __future__ import annotations

import importlib
import os
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stdiff import ops
from stdiff.ops import backward as reference_backward
from stdiff.ops import cases
from stdiff.ops.cases import CASES, call, check_accuracy, inputs
from stdiff.ops.contract import OPS, SCHEMAS


def targets() -> list[tuple[str, str]]:
    """(backend, device) pairs that can run here."""
    status = ops.backend_status()
    if not status["cpu"][0] and os.environ.get("STDIFF_REQUIRE_EXT", "0") not in ("", "0"):
        raise RuntimeError(f"STDIFF_REQUIRE_EXT is set but the compiled ops are unavailable: {status['cpu'][1]}")
    pairs = [("reference", "cpu")]
    if status["cpu"][0]:
        pairs.append(("cpu", "cpu"))
    if status["triton"][0] and "interpreter" in status["triton"][1]:
        pairs.append(("triton", "cpu"))
    if torch.cuda.is_available():
        pairs.append(("reference", "cuda"))
        pairs += [(name, "cuda") for name in ("cuda", "triton") if status[name][0]]
    return pairs


TARGETS = targets()
KERNELS = [t for t in TARGETS if t[0] != "reference"]  # the backends judged against the reference
LOW = (torch.bfloat16, torch.float16)


def dtypes(backend: str) -> tuple[torch.dtype, ...]:
    """The dtypes a backend computes in their own precision (Triton computes float64 in float32)."""
    return (torch.float32, *LOW) if backend == "triton" else (torch.float32, torch.float64, *LOW)


#: (H, W) pairs covering H*W = 1 .. 128*128: odd, prime and 16-byte-aligned row lengths
SPATIAL = [(1, 1), (1, 7), (3, 5), (4, 4), (5, 13), (8, 8), (16, 16), (31, 33), (64, 64), (128, 128)]


@st.composite
def shapes(draw, op: str) -> tuple[int, ...]:
    """Odd shapes for ``op``: (N, C, H, W) with rows of 1 .. 128*128 elements (small N*C for long
    rows) for the row ops; any rank 1-4 for the SDE ops."""
    if not CASES[op].per_row:
        return tuple(draw(st.lists(st.integers(1, 7), min_size=1, max_size=4)))
    h, w = draw(st.one_of(st.sampled_from(SPATIAL), st.tuples(st.integers(1, 20), st.integers(1, 20))))
    return draw(st.integers(1, 3)), draw(st.integers(1, 5 if h * w <= 4096 else 2)), h, w


# tests that run on CUDA tensors only (none here without a GPU)
GPU_ONLY = ("test_gpu_sizes",)
# tests that also run on the reference backend (its own derivatives against finite differences)
WITH_REFERENCE = ("test_gradcheck_float64", "test_double_backward")


def _ids(pairs):
    return [f"{b}-{d}" for b, d in pairs]


def generate_for(op: str):
    """A ``pytest_generate_tests`` hook parametrizing the harness tests for ``op``."""

    def generate(metafunc) -> None:
        names = metafunc.fixturenames
        if "backend" in names and "dtype" in names:
            pairs = [t for t in KERNELS if t[1] == "cuda"] if metafunc.function.__name__ in GPU_ONLY else KERNELS
            combos = [(b, d, t) for b, d in pairs for t in dtypes(b)]
            metafunc.parametrize("backend, device, dtype", combos,
                                 ids=[f"{b}-{d}-{str(t)[6:]}" for b, d, t in combos])
        elif "backend" in names:
            pairs = TARGETS if metafunc.function.__name__ in WITH_REFERENCE else KERNELS
            metafunc.parametrize("backend, device", pairs, ids=_ids(pairs))
        if "variant" in names:
            metafunc.parametrize("variant", list(CASES[op].variants))
        if "op" in names:
            metafunc.parametrize("op", [op])

    return generate


# ------------------------------------------------------------------ harness
def record_triton_launches(monkeypatch, module_name: str, launcher: str):
    """A counter hook on the launcher ``launcher`` of ``stdiff.kernels.<module_name>``: returns
    (module, device, launches); every launch appends (kernel, positional args, constexpr flags).
    Skips when the Triton backend cannot run here."""
    pytest.importorskip("triton")
    kernels = pytest.importorskip("stdiff.kernels")
    if not kernels.is_available()[0]:
        pytest.skip(kernels.is_available()[1])
    module = importlib.import_module(f"stdiff.kernels.{module_name}")
    launches: list = []
    original = getattr(module, launcher)

    def hook(kernel, *args, **flags):
        launches.append((kernel, args, flags))
        return original(kernel, *args, **flags)

    monkeypatch.setattr(module, launcher, hook)
    return module, "cpu" if module.INTERPRET else "cuda", launches


def on(backend: str, op: str):
    """The public ``stdiff.ops.<op>`` on a fixed backend."""
    fn = getattr(ops, op)
    return lambda **kw: fn(**kw, backend=backend)


def fwd_bwd(fn, kwargs: dict, grad_outs: list | None, dtype: torch.dtype | None = None, op: str | None = None):
    """(outputs, gradients of the differentiable tensor inputs) of ``fn(**kwargs)``, the tensors cast
    to ``dtype`` first; ``grad_outs`` None: forward only."""
    leaves = {}
    for name, value in kwargs.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().to(dtype or value.dtype).clone()
            if grad_outs is not None and name in OPS[op].differentiable:
                value.requires_grad_(True)
        leaves[name] = value
    outs = call(fn, leaves)
    if grad_outs is None:
        return [o.detach() for o in outs], []
    tensors = [t for t in leaves.values() if isinstance(t, torch.Tensor) and t.requires_grad]
    grads = torch.autograd.grad(outs, tensors, [g.to(outs[0].dtype) for g in grad_outs])
    return [o.detach() for o in outs], [g.detach() for g in grads]


def compare(op: str, variant: str, backend: str, device: str, shape, dtype: torch.dtype, seed: int = 0,
            transform=None) -> None:
    """Outputs and input gradients of ``backend`` against the reference by the accuracy rule.

    ``transform``: applied to every tensor input (layouts); the reference sees the same tensors.
    """
    gen = torch.Generator().manual_seed(seed)
    kwargs = inputs(op, variant, shape, dtype, device, generator=gen)
    if transform is not None:
        kwargs = {k: transform(v) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    outs, _ = fwd_bwd(on("reference", op), kwargs, None, op=op)
    grad_outs = [torch.randn(o.shape, dtype=torch.float64, generator=gen).to(device=device, dtype=dtype) for o in outs]
    truth = fwd_bwd(on("reference", op), kwargs, grad_outs, torch.float64, op=op)
    ref = fwd_bwd(on("reference", op), kwargs, grad_outs, op=op)
    got = fwd_bwd(on(backend, op), kwargs, grad_outs, op=op)
    for kind, index in (("output", 0), ("gradient", 1)):
        assert len(got[index]) == len(truth[index])
        for g, r, t in zip(got[index], ref[index], truth[index]):
            check_accuracy(kind, g, r, t)


# ------------------------------------------------------------------ the tests every op gets
@settings(max_examples=6, deadline=None)
@given(data=st.data())
def test_matches_reference(op, variant, backend, device, dtype, data):
    """Odd shapes from hypothesis, every dtype: outputs and all input gradients by the accuracy rule."""
    compare(op, variant, backend, device, data.draw(shapes(op)), dtype, seed=data.draw(st.integers(0, 2**16)))


#: (N, C, H, W): preset sites, odd sizes (scalar path), rows > 16384 (loop kernels), one-element rows
GPU_SIZES = [(2, 256, 16, 16), (1, 128, 64, 64), (2, 3, 5, 7), (1, 5, 1, 1), (1, 2, 128, 128), (1, 3, 131, 129),
             (3, 512, 4, 4), (2, 70, 9, 9)]


@pytest.mark.parametrize("shape", GPU_SIZES, ids=lambda s: "x".join(map(str, s)))
def test_gpu_sizes(op, variant, backend, device, dtype, shape):
    """Model-sized and edge shapes on the GPU (vectorised, scalar and loop kernels), every dtype."""
    compare(op, variant, backend, device, shape, dtype)


def _strided(t: torch.Tensor) -> torch.Tensor:
    """The same values as t in a non-contiguous view (every other element of a wider tensor)."""
    wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
    wide[..., ::2] = t
    return wide[..., ::2]


def _layout(name: str):
    """Tensor transform of a layout case; "mixed" alternates strided and channels_last 4-D inputs."""
    cl = torch.channels_last
    state = {"k": 0}

    def mixed(t):
        if t.dim() != 4:
            return t
        state["k"] += 1
        return _strided(t) if state["k"] % 2 else t.contiguous(memory_format=cl)

    return {
        "channels_last": lambda t: t.contiguous(memory_format=cl) if t.dim() == 4 else t,
        "strided": lambda t: _strided(t) if t.dim() == 4 else t,
        "mixed": mixed,
    }[name]


@pytest.mark.parametrize("layout", ["channels_last", "strided", "mixed"])
def test_non_contiguous_inputs(op, variant, backend, device, layout):
    """channels_last, strided and mixed inputs give the reference's outputs and gradients (fp32)."""
    compare(op, variant, backend, device, (2, 3, 5, 6), torch.float32, transform=_layout(layout))


def test_empty_tensors(op, variant, backend, device):
    """Zero-size inputs give zero-size outputs and gradients."""
    shape = (0, 3, 4, 4)
    kwargs = inputs(op, variant, shape, torch.float32, device, requires_grad=True)
    outs = call(on(backend, op), kwargs)
    assert all(o.shape[0] == 0 for o in outs)
    tensors = [v for v in kwargs.values() if isinstance(v, torch.Tensor) and v.requires_grad]
    grads = torch.autograd.grad(outs, tensors, [torch.ones_like(o) for o in outs])
    assert all(g.shape == t.shape for g, t in zip(grads, tensors))


def _differentiable(op: str, variant: str, backend: str, device: str):
    """(function of the differentiable tensors, their values in float64) for gradcheck."""
    kwargs = inputs(op, variant, (2, 3, 3, 4), torch.float64, device, requires_grad=True,
                    generator=torch.Generator().manual_seed(1))
    names = [n for n in OPS[op].differentiable if isinstance(kwargs.get(n), torch.Tensor)]
    fn = on(backend, op)
    return (lambda *tensors: call(fn, {**kwargs, **dict(zip(names, tensors))})), tuple(kwargs[n] for n in names)


def test_gradcheck_float64(op, variant, backend, device):
    """First derivatives in float64 against finite differences (Triton computes in float32:
    its first derivatives are judged against the reference in test_matches_reference)."""
    if backend == "triton":
        pytest.skip("the Triton kernels compute float64 inputs in float32")
    fn, args = _differentiable(op, variant, backend, device)
    assert torch.autograd.gradcheck(fn, args)


def test_double_backward(op, variant, backend, device):
    """Second derivatives (create_graph=True): gradgradcheck in float64, and equal to the
    reference's on every backend (Triton to float32 rounding)."""
    fn, args = _differentiable(op, variant, backend, device)
    if backend != "triton":
        assert torch.autograd.gradgradcheck(fn, args)
    ref_fn, _ = _differentiable(op, variant, "reference", device)
    second = []
    for f in (fn, ref_fn):
        outs = f(*args)
        gen = torch.Generator().manual_seed(2)
        weights = [torch.randn(o.shape, dtype=o.dtype, generator=gen).to(device) for o in outs]
        firsts = torch.autograd.grad(outs, args, weights, create_graph=True)
        total = sum((g * g).sum() for g in firsts)
        second.append(torch.autograd.grad(total, args, allow_unused=True))
    tol = dict(rtol=1e-4, atol=1e-4) if backend == "triton" else dict(rtol=1e-7, atol=1e-7)
    for got, want in zip(*second):
        if want is None:
            assert got is None or not got.abs().any()
        else:
            torch.testing.assert_close(got, want, **tol)


def _backward_op(backend: str, op: str):
    namespace = "stdiff_triton" if backend == "triton" else "stdiff"
    return getattr(getattr(torch.ops, namespace), f"{op}_backward")


def _backward_args(op: str, variant: str, device: str) -> list:
    """Positional arguments of ``<op>_backward`` (without the mask) for one variant (float32)."""
    gen = torch.Generator().manual_seed(3)
    kw = inputs(op, variant, (2, 3, 4, 5), torch.float32, device, generator=gen)
    shape = (2, 3, 4, 5)
    grad = torch.randn(shape, generator=gen).to(device)
    if op == "convgru_gates":
        u = torch.sigmoid(kw["gx"][:, :3] + kw["gh"][:, :3])
        return [grad, torch.randn(shape, generator=gen).to(device), u, kw["gx"], kw["gh"], kw["h"]]
    if op == "convgru_update":
        return [grad, kw["cx"], kw["ch"], kw["u"], kw["h"], kw["standard"]]
    if op == "spade_norm":
        return [grad, kw["h"], kw["gamma"], kw["eps"]]
    if op == "sde_step":
        return [grad, kw["g"], kw["dW"], kw["dt"], kw["g_pred"], kw["g_is_raw"], kw["seed"], kw["offset"]]
    return [grad, kw["g"], kw["dW"], kw["dt"], kw["g_is_raw"], kw["seed"], kw["offset"]]


def _mask_width(op: str) -> int:
    """Entries of the output mask of ``<op>_backward`` (from its contract schema)."""
    return int(re.search(r"bool\[(\d+)\] output_mask", SCHEMAS[f"{op}_backward"]).group(1))


def _masks(n: int) -> list[list[bool]]:
    return [[bool(bits >> i & 1) for i in range(n)] for bits in range(2**n)]


def test_backward_op_computes_only_the_asked_gradients(op, variant, backend, device):
    """Every output mask: the backward op returns exactly the asked (and present) gradients, each
    equal to the reference formula's (stdiff.ops.backward)."""
    bwd = _backward_op(backend, op)
    args = _backward_args(op, variant, device)
    width = _mask_width(op)
    formula = reference_backward.BACKWARDS[f"{op}_backward"]
    for mask in _masks(width):
        got = bwd(*args, mask)
        want = formula(*args, mask)
        assert len(got) == len(want), f"mask {mask}: {len(got)} gradients, expected {len(want)}"
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, **cases.TIGHT[torch.float32]["gradient"], msg=f"mask {mask}")


def test_opcheck(op, variant, backend, device):
    """Schema, fake impl, autograd registration and AOT dispatch of the op and its backward op."""
    if backend == "triton" and device == "cpu" and variant not in CASES[op].benchmarked:
        pytest.skip("the interpreter is slow: opcheck of the model's variants only")
    namespace = "stdiff_triton" if backend == "triton" else "stdiff"
    lib = getattr(torch.ops, namespace)
    kw = inputs(op, variant, (2, 3, 3, 4), torch.float64 if backend != "triton" else torch.float32, device,
                requires_grad=True, generator=torch.Generator().manual_seed(4))
    args = [kw[name] for name in OPS[op].params]
    torch.library.opcheck(getattr(lib, op), tuple(args))
    if CASES[op].per_row:  # channels_last inputs (a (N, C) bias stays as it is)
        last = [a.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
                if isinstance(a, torch.Tensor) and a.dim() == 4 else a for a in args]
        torch.library.opcheck(getattr(lib, op), tuple(last))
    bwd_args = _backward_args(op, variant, device)
    torch.library.opcheck(getattr(lib, f"{op}_backward"), tuple(bwd_args) + ([True] * _mask_width(op),))
