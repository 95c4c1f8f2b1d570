"""Triton backend (stdiff.kernels) vs the reference ops: forward, backward, layouts, noise, opcheck.

Runs in the Triton interpreter on CPU tensors (tests/conftest.py sets TRITON_INTERPRET=1 when
no GPU is visible) and on CUDA tensors when a GPU is present. Accuracy criterion, for every
dtype: the Triton result's max error against a float64 truth is at most twice the reference
backend's own error in the same dtype, plus one unit of the dtype's epsilon times the largest
magnitude (a floor for cases where PyTorch happens to be exact).
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stdiff import ops

pytest.importorskip("triton")
kernels = pytest.importorskip("stdiff.kernels")
if not kernels.is_available()[0]:
    pytest.skip(f"triton backend unavailable: {kernels.is_available()[1]}", allow_module_level=True)

from stdiff.kernels import _runtime, spade  # noqa: E402
from stdiff.kernels import ops as kops  # noqa: E402

DEVICE = "cpu" if _runtime.INTERPRET else "cuda"
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
EXAMPLES = settings(max_examples=12, deadline=None)

nchw = st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 9), st.integers(1, 9))
any_shape = st.lists(st.integers(1, 7), min_size=1, max_size=4).map(tuple)
dtypes = st.sampled_from(DTYPES)


# ------------------------------------------------------------------ harness
def _randn(shape, dtype, scale=1.0, shift=0.0) -> torch.Tensor:
    """Random values already rounded to ``dtype``, returned in ``dtype`` on DEVICE."""
    return (torch.randn(shape, dtype=torch.float64) * scale + shift).to(device=DEVICE, dtype=dtype)


def _run(fn, inputs: list, grad_outs: list, dtype: torch.dtype):
    """Outputs and input gradients of ``fn`` with all tensor inputs cast to ``dtype``."""
    leaves = [t.detach().to(dtype).requires_grad_(True) if isinstance(t, torch.Tensor) else t for t in inputs]
    outs = fn(*leaves)
    outs = outs if isinstance(outs, tuple) else (outs,)
    tensors = [t for t in leaves if isinstance(t, torch.Tensor)]
    grads = torch.autograd.grad(outs, tensors, [g.to(dtype) for g in grad_outs])
    return [o.detach() for o in outs], [g.detach() for g in grads]


def _assert_accurate(name: str, got: torch.Tensor, ref: torch.Tensor, truth: torch.Tensor) -> None:
    assert got.shape == truth.shape and got.dtype == ref.dtype, name
    eps = torch.finfo(ref.dtype).eps
    err = (got.double() - truth).abs().max().item()
    own = (ref.double() - truth).abs().max().item()
    floor = eps * (1.0 + truth.abs().max().item())
    assert err <= 2 * own + floor, f"{name}: error {err:.3g} vs reference's {own:.3g} (floor {floor:.3g})"


def _compare(triton_fn, reference_fn, truth_fn, inputs: list, dtype: torch.dtype) -> None:
    """Triton vs reference (both in dtype) vs truth (float64) on outputs and all input gradients.

    ``inputs`` hold dtype-rounded tensors (and non-tensor arguments passed as they are).
    """
    with torch.no_grad():
        outs = reference_fn(*inputs)
    grad_outs = [_randn(o.shape, dtype) for o in (outs if isinstance(outs, tuple) else (outs,))]
    truth = _run(truth_fn, inputs, grad_outs, torch.float64)
    ref = _run(reference_fn, inputs, grad_outs, dtype)
    got = _run(triton_fn, inputs, grad_outs, dtype)
    for kind, index in (("output", 0), ("gradient", 1)):
        assert len(got[index]) == len(truth[index])
        for i, (x, y, z) in enumerate(zip(got[index], ref[index], truth[index])):
            _assert_accurate(f"{kind} {i} ({dtype})", x, y, z)


def _with(op, backend: str, **kwargs):
    """``op`` on a fixed backend with fixed keyword arguments, called with positional ones."""
    return lambda *args: op(*args, **kwargs, backend=backend)


def _truth_spade(h, gamma, beta, bias, eps):
    """SPADE with float64 statistics (the reference computes them in float32)."""
    var, mean = torch.var_mean(h, dim=(2, 3), keepdim=True, correction=0)
    out = (h - mean) * torch.rsqrt(var + eps) * (1 + gamma) + beta
    return out if bias is None else out + bias[:, :, None, None]


# ------------------------------------------------------------------ forward + backward vs reference
@EXAMPLES
@given(shape=nchw, dtype=dtypes)
def test_convgru_gates_matches_reference(shape, dtype):
    n, f, height, width = shape
    gates = (n, 2 * f, height, width)
    inputs = [_randn(gates, dtype, 2.0), _randn(gates, dtype), _randn(shape, dtype)]
    ref = _with(ops.convgru_gates, "reference")
    _compare(_with(ops.convgru_gates, "triton"), ref, ref, inputs, dtype)


@EXAMPLES
@given(shape=nchw, dtype=dtypes, standard=st.booleans())
def test_convgru_update_matches_reference(shape, dtype, standard):
    u = torch.rand(shape).to(DEVICE, dtype)
    inputs = [_randn(shape, dtype, 2.0), _randn(shape, dtype), u, _randn(shape, dtype)]
    ref = _with(ops.convgru_update, "reference", standard=standard)
    _compare(_with(ops.convgru_update, "triton", standard=standard), ref, ref, inputs, dtype)


@EXAMPLES
@given(shape=nchw, dtype=dtypes, with_bias=st.booleans())
def test_spade_norm_matches_reference(shape, dtype, with_bias):
    bias = _randn(shape[:2], dtype) if with_bias else None
    inputs = [_randn(shape, dtype, 3.0, 1.0), _randn(shape, dtype, 0.5), _randn(shape, dtype), bias, 1e-5]
    _compare(_with(ops.spade_norm, "triton"), _with(ops.spade_norm, "reference"), _truth_spade, inputs, dtype)


@settings(max_examples=8, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 9), st.integers(2, 9)),
    with_bias=st.booleans(),
    chunk=st.sampled_from([8, 32]),
)
def test_spade_norm_split_rows(shape, with_bias, chunk):
    """The split-row path (rows longer than SINGLE_PASS_MAX_HW, cut into SPLIT_CHUNK chunks)."""
    f32 = torch.float32
    bias = _randn(shape[:2], f32) if with_bias else None
    inputs = [_randn(shape, f32, 3.0, 1.0), _randn(shape, f32), _randn(shape, f32), bias, 1e-5]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(spade, "SINGLE_PASS_MAX_HW", 1)
        patch.setattr(spade, "SPLIT_CHUNK", chunk)
        _compare(_with(ops.spade_norm, "triton"), _with(ops.spade_norm, "reference"), _truth_spade, inputs, f32)


@EXAMPLES
@given(shape=any_shape, dtype=dtypes, raw=st.booleans(), heun=st.booleans())
def test_sde_step_matches_reference(shape, dtype, raw, heun):
    g_pred = _randn(shape, dtype) if heun else None
    y, f, g, dw = _randn(shape, dtype), _randn(shape, dtype), _randn(shape, dtype), _randn(shape, dtype, 0.3)
    ref = _with(ops.sde_step, "reference")
    _compare(_with(ops.sde_step, "triton"), ref, ref, [y, f, g, dw, 0.1, g_pred, raw], dtype)


@EXAMPLES
@given(shape=any_shape, dtype=dtypes, raw=st.booleans())
def test_sde_predict_matches_reference(shape, dtype, raw):
    inputs = [_randn(shape, dtype), _randn(shape, dtype), _randn(shape, dtype, 0.3), None, raw]
    ref = _with(ops.sde_predict, "reference")
    _compare(_with(ops.sde_predict, "triton"), ref, ref, inputs, dtype)


# ------------------------------------------------------------------ in-kernel Philox noise
def _noise(shape, seed: int, offset: int = 0, dt: float = 1.0) -> torch.Tensor:
    """The op's Brownian increment for (seed, offset): the predictor with y = 0 and g = 1."""
    zeros = torch.zeros(shape, device=DEVICE)
    return ops.sde_predict(zeros, torch.ones_like(zeros), None, dt=dt, seed=seed, offset=offset, backend="triton")


def test_noise_statistics():
    n = 1 << 16
    dt = 0.25
    w = _noise((n,), seed=1234, dt=dt).double().cpu()
    z = w / math.sqrt(dt)
    sd_mean, sd_var = 1 / math.sqrt(n), math.sqrt(2 / n)
    assert abs(z.mean().item()) < 5 * sd_mean
    assert abs(z.var().item() - 1) < 5 * sd_var
    assert abs(((z - z.mean()) ** 4).mean().item() / z.var().item() ** 2 - 3) < 5 * math.sqrt(24 / n)
    # independence: neighbours, other seeds and disjoint offsets are uncorrelated
    others = [z.roll(1), _noise((n,), seed=1235).double().cpu(), _noise((n,), seed=1234, offset=n).double().cpu()]
    for other in others:
        assert abs(torch.corrcoef(torch.stack([z, other]))[0, 1].item()) < 5 * sd_mean
    # the normal CDF at a few points
    for q, p in ((-1.0, 0.158655), (0.0, 0.5), (2.0, 0.977250)):
        assert abs((z < q).double().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / n)


def test_noise_is_a_counter_stream():
    """Equal (seed, offset) give equal noise; element i is counter i of stream (seed, offset)."""
    shape = (2, 3, 5, 7)
    a = _noise(shape, seed=7, offset=11)
    assert torch.equal(a, _noise(shape, seed=7, offset=11))
    assert not torch.equal(a, _noise(shape, seed=8, offset=11))
    flat = _noise((300,), seed=7, offset=11)
    assert torch.equal(a.flatten(), flat[: a.numel()])
    # offset is a stream id: the next offset is a new stream, not this one shifted by an element
    following = _noise((300,), seed=7, offset=12)
    for shift in (0, 1, -1):
        assert not torch.equal(following, flat.roll(shift))
    low, high = _noise((64,), seed=3, offset=2**32 - 1), _noise((64,), seed=3, offset=2**32)
    assert not torch.equal(low, high)  # the counter's high word is used
    big = _noise((1000,), seed=2**62 + 5, offset=2**62)
    assert torch.isfinite(big).all() and 0.7 < big.std().item() < 1.3
    assert torch.equal(big, ops.philox_normal((1000,), 2**62 + 5, 2**62, device=DEVICE))


def test_noise_shared_by_predictor_corrector_and_backward():
    shape = (2, 4, 3, 3)
    dt, seed, offset = 0.1, 99, 1000
    w = _noise(shape, seed, offset, dt)
    y, f, g, gp = (_randn(shape, torch.float32) for _ in range(4))
    pred = ops.sde_predict(y, g, None, dt=dt, g_is_raw=True, seed=seed, offset=offset, backend="triton")
    torch.testing.assert_close(pred, y + torch.tanh(g) * w, atol=1e-6, rtol=1e-6)
    inputs = [y, f, g, None, dt, gp, True]

    def triton_fn(y, f, g, dW, dt, g_pred, raw):
        return ops.sde_step(y, f, g, None, dt, g_pred, raw, seed=seed, offset=offset, backend="triton")

    def reference_fn(y, f, g, dW, dt, g_pred, raw):
        return ops.sde_step(y, f, g, w, dt, g_pred, raw, backend="reference")

    def truth_fn(y, f, g, dW, dt, g_pred, raw):
        return ops.sde_step(y, f, g, w.double(), dt, g_pred, raw, backend="reference")

    _compare(triton_fn, reference_fn, truth_fn, inputs, torch.float32)


def test_noise_does_not_depend_on_layout():
    shape = (2, 5, 3, 4)
    y, g = _randn(shape, torch.float32), _randn(shape, torch.float32)
    kwargs = dict(dt=0.5, seed=5, offset=3, backend="triton")
    nchw_out = ops.sde_predict(y, g, None, **kwargs)
    last = ops.sde_predict(
        y.to(memory_format=torch.channels_last), g.to(memory_format=torch.channels_last), None, **kwargs
    )
    assert torch.equal(nchw_out, last)


# ------------------------------------------------------------------ layouts, sizes, devices
def _layout_cases():
    """(op name, op, keyword arguments, channels of each input (0: a (N, C) bias), keeps layout)."""
    return [
        ("convgru_gates", ops.convgru_gates, {}, (6, 6, 3), True),
        ("convgru_update", ops.convgru_update, {"standard": True}, (3, 3, 3, 3), True),
        ("spade_norm", ops.spade_norm, {}, (3, 3, 3, 0), True),
        ("sde_step", ops.sde_step, {"dt": 0.1, "g_is_raw": True}, (3, 3, 3, 3), True),
        ("sde_predict", ops.sde_predict, {}, (3, 3, 3), True),
    ]


@pytest.mark.parametrize("case", _layout_cases(), ids=lambda c: c[0])
def test_layouts(case):
    """channels_last and strided inputs give the contiguous results (and gradients)."""
    name, op, kwargs, channels, keeps_layout = case
    inputs = [_randn((2, c, 4, 5) if c else (2, 3), torch.float32) for c in channels]
    expected = _with(op, "reference", **kwargs)(*inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    last = [t.to(memory_format=torch.channels_last) if t.dim() == 4 else t for t in inputs]
    strided = [torch.cat([t, t], dim=-1)[..., : t.shape[-1]] for t in inputs]
    for variant, args in (("channels_last", last), ("strided", strided)):
        leaves = [t.detach().requires_grad_(True) for t in args]
        outs = _with(op, "triton", **kwargs)(*leaves)
        outs = outs if isinstance(outs, tuple) else (outs,)
        for got, want in zip(outs, expected):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=f"{name} {variant}")
            if variant == "channels_last":
                assert got.is_contiguous(memory_format=torch.channels_last if keeps_layout else torch.contiguous_format)
        sum(o.sum() for o in outs).backward()
        assert all(t.grad is not None and t.grad.shape == t.shape for t in leaves)


def test_empty_tensors():
    e = torch.zeros(0, 3, 4, 4, device=DEVICE, requires_grad=True)
    e2 = torch.zeros(0, 6, 4, 4, device=DEVICE, requires_grad=True)
    u, rh = ops.convgru_gates(e2, e2, e, backend="triton")
    outs = [u, rh, ops.convgru_update(e, e, e, e, backend="triton"), ops.spade_norm(e, e, e, backend="triton")]
    outs += [ops.sde_step(e, e, e, None, 0.1, seed=0, backend="triton"), ops.sde_predict(e, e, e, backend="triton")]
    assert all(o.shape == (0, 3, 4, 4) for o in outs)
    sum(o.sum() for o in outs).backward()
    assert e.grad.shape == e.shape and e2.grad.shape == e2.shape


def test_cpu_tensors_need_the_interpreter(monkeypatch):
    monkeypatch.setattr(_runtime, "INTERPRET", False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        kernels.convgru_update(*(torch.zeros(1, 1, 2, 2) for _ in range(4)))


def test_is_available_names_the_mode():
    ok, reason = kernels.is_available()
    assert ok and ("interpreter" in reason if _runtime.INTERPRET else "CUDA" in reason)


# ------------------------------------------------------------------ custom-op checks
def _opcheck_cases():
    x = lambda c=3: _randn((2, c, 3, 4), torch.float32)  # noqa: E731
    return [
        ("gates", kops.convgru_gates, (x(6), x(6), x())),
        ("gates_backward", kops.convgru_gates_backward, (x(), x(), x(), x(6), x(6), x())),
        ("gates_backward_no_grad_u", kops.convgru_gates_backward, (None, x(), x(), x(6), x(6), x())),
        ("update", kops.convgru_update, (x(), x(), x(), x(), False)),
        ("update_standard_backward", kops.convgru_update_backward, (x(), x(), x(), x(), x(), True)),
        ("spade_bias", kops.spade_norm, (x(), x(), x(), _randn((2, 3), torch.float32), 1e-5)),
        ("spade", kops.spade_norm, (x(), x(), x(), None, 1e-3)),
        ("spade_backward", kops.spade_norm_backward, (x(), x(), x(), 1e-5, [True, True, True])),
        ("spade_backward_masked", kops.spade_norm_backward, (x(), x(), x(), 1e-5, [True, False, False])),
        ("step_heun_raw", kops.sde_step, (x(), x(), x(), x(), 0.1, x(), True, 0, 0)),
        ("step_noise", kops.sde_step, (x(), x(), x(), None, 0.1, None, False, 3, 17)),
        ("predict", kops.sde_predict, (x(), x(), x(), None, False, None, 0)),
        ("predict_noise_raw", kops.sde_predict, (x(), x(), None, 0.2, True, 1, 2)),
        ("step_backward", kops.sde_step_backward, (x(), x(), x(), 0.1, x(), True, None, 0, [True, True, True, True])),
        ("step_backward_noise", kops.sde_step_backward, (x(), x(), None, 0.1, None, False, 4, 5, [False, True, False, False])),
        ("predict_backward", kops.sde_predict_backward, (x(), x(), x(), None, True, None, 0, [True, True])),
    ]


@pytest.mark.parametrize("case", _opcheck_cases(), ids=lambda c: c[0])
def test_opcheck(case):
    """Schema, fake impl, autograd registration and AOT dispatch of every op (backward ops too)."""
    name, op, args = case
    if "backward" not in name:
        args = tuple(a.requires_grad_(True) if isinstance(a, torch.Tensor) else a for a in args)
    torch.library.opcheck(op, args)


# ------------------------------------------------------------------ GPU code generation without a GPU
_AOT_SCRIPT = textwrap.dedent(
    """
    import importlib.util, sys
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    spec = importlib.util.spec_from_file_location(
        "stdiff.kernels", sys.argv[1] + "/__init__.py", submodule_search_locations=[sys.argv[1]]
    )
    package = importlib.util.module_from_spec(spec)
    sys.modules["stdiff.kernels"] = package
    spec.loader.exec_module(package)
    from stdiff.kernels import convgru, sde, spade

    F32_PTRS = {"mean_ptr", "rstd_ptr", "pmean_ptr", "pm2_ptr", "p1_ptr", "p2_ptr", "p3_ptr"}
    CASES = [
        (convgru._gates_fwd_kernel, {"BLOCK": 1024}),
        (convgru._gates_bwd_kernel, {"BLOCK": 2048}),
        (convgru._update_fwd_kernel, {"STANDARD": True, "BLOCK": 1024}),
        (convgru._update_bwd_kernel, {"STANDARD": True, "BLOCK": 4096}),
        (spade._spade_fwd_rows_kernel, {"HAS_BIAS": True, "BLOCK_HW": 16, "TILE": 2048}),
        (spade._spade_bwd_rows_kernel, {"HAS_BIAS": True, "BLOCK_HW": 4096, "TILE": 4096}),
        (spade._spade_stats_kernel, {"CHUNK": 4096}),
        (spade._spade_fwd_split_kernel, {"HAS_BIAS": True, "CHUNK": 4096, "NCH_P2": 4}),
        (spade._spade_bwd_partial_kernel, {"CHUNK": 4096}),
        (spade._spade_bwd_split_kernel, {"HAS_BIAS": True, "CHUNK": 4096, "NCH_P2": 8}),
        (sde._sde_fwd_kernel, {"HAS_F": True, "HAS_GP": True, "HAS_W": False, "RAW": True, "BLOCK": 1024}),
        (sde._sde_fwd_kernel, {"HAS_F": False, "HAS_GP": False, "HAS_W": True, "RAW": False, "BLOCK": 1024}),
        (sde._sde_bwd_kernel, {"NEED_F": True, "NEED_G": True, "HAS_GP": True, "NEED_GP": True, "HAS_W": False,
                               "NEED_W": False, "RAW": True, "BLOCK": 2048}),
        (sde._sde_bwd_kernel, {"NEED_F": False, "NEED_G": True, "HAS_GP": False, "NEED_GP": False, "HAS_W": True,
                               "NEED_W": True, "RAW": False, "BLOCK": 2048}),
    ]
    for i, (fn, constexprs) in enumerate(CASES):
        dtype, capability, big = ("fp32", 90, False) if i % 2 == 0 else ("bf16", 80, True)
        signature = {}
        for name in fn.arg_names:
            if name in constexprs:
                signature[name] = "constexpr"
            elif name.endswith("_ptr"):
                signature[name] = "*fp32" if name in F32_PTRS else "*" + dtype
            elif name in ("eps", "dt", "noise_scale"):
                signature[name] = "fp32"
            else:
                signature[name] = "i64" if big and name in ("seed", "offset") else "i32"
        source = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
        triton.compile(source, target=GPUTarget("cuda", capability, 32), options={"num_warps": 8})
    # in-kernel noise, compiled as launched: no fused multiply-add, IEEE division and square root
    constexprs = {"HAS_F": False, "HAS_GP": False, "HAS_W": False, "RAW": False, "BLOCK": 1024}
    signature = {name: "constexpr" if name in constexprs else "*fp32" if name.endswith("_ptr") else
                 "fp32" if name in ("dt", "noise_scale") else "i64" for name in sde._sde_fwd_kernel.arg_names}
    source = ASTSource(fn=sde._sde_fwd_kernel, signature=signature, constexprs=constexprs)
    ptx = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"enable_fp_fusion": False}).asm["ptx"]
    assert "fma.rn.f32" not in ptx and "div.rn.f32" in ptx and "sqrt.rn.f32" in ptx, "noise not IEEE-exact"
    print("compiled", len(CASES))
    """
)


def test_kernels_compile_for_ampere_and_hopper():
    """Every kernel goes through Triton's GPU compiler (sm_80 / sm_90 PTX and cubin, no GPU needed).

    The interpreter does not type-check kernels the way the compiler does; this catches
    frontend and lowering errors on machines without a GPU.
    """
    env = dict(os.environ, TRITON_INTERPRET="0")
    package_dir = os.path.dirname(kernels.__file__)
    result = subprocess.run(
        [sys.executable, "-c", _AOT_SCRIPT, package_dir], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "compiled 14" in result.stdout
