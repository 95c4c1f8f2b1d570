"""The C++ CPU kernels (torch.ops.stdiff.*, backend "cpu") against the reference backend.

Needs the compiled extension (``pip install .`` or ``python setup.py build_ext --inplace``); the
module is skipped when it is missing, unless ``STDIFF_REQUIRE_EXT=1`` (CI) turns that into a failure.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stdiff import ops
from stdiff.ops import _compiled as C
from stdiff.ops import reference as R

_OK, _REASON = C.is_available("cpu")
if not _OK:
    if os.environ.get("STDIFF_REQUIRE_EXT", "0") not in ("", "0"):
        raise RuntimeError(f"STDIFF_REQUIRE_EXT is set but the compiled ops are unavailable: {_REASON}")
    pytest.skip(f"compiled ops unavailable: {_REASON}", allow_module_level=True)

STD = torch.ops.stdiff
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-5), torch.float64: dict(rtol=1e-10, atol=1e-10)}
GRAD_TOL = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.float64: dict(rtol=1e-9, atol=1e-9)}
# (H, W) pairs covering H*W = 1 .. 128*128, odd, prime and 16-byte-aligned row lengths
SPATIAL = [(1, 1), (1, 7), (3, 5), (4, 4), (5, 13), (8, 8), (16, 16), (31, 33), (64, 64), (128, 128)]


def _randn(*shape: int, dtype: torch.dtype = torch.float32, requires_grad: bool = False) -> torch.Tensor:
    return torch.randn(*shape, dtype=dtype).requires_grad_(requires_grad)


@st.composite
def nchw(draw, max_hw: int = 128 * 128) -> tuple[int, int, int, int]:
    """(N, C, H, W) with N*C odd-ish and H*W from 1 to 128*128 (small N*C for large rows)."""
    h, w = draw(st.one_of(st.sampled_from(SPATIAL), st.tuples(st.integers(1, 20), st.integers(1, 20))))
    n = draw(st.integers(1, 3))
    c = draw(st.integers(1, 5 if h * w <= 4096 else 2))
    return n, c, h, w


def _inputs(name: str, shape, dtype, requires_grad=False, **flags):
    """Positional args of op `name` (without flags) for a (N, C, H, W) shape."""
    n, c, h, w = shape
    r = lambda *s: _randn(*s, dtype=dtype, requires_grad=requires_grad)  # noqa: E731
    if name == "convgru_gates":
        return [r(n, 2 * c, h, w), r(n, 2 * c, h, w), r(n, c, h, w)]
    if name == "convgru_update":
        return [r(n, c, h, w) for _ in range(4)]
    if name == "spade_norm":
        x = (torch.randn(n, c, h, w, dtype=dtype) * 3 + 1).requires_grad_(requires_grad)
        return [x, r(n, c, h, w), r(n, c, h, w), r(n, c) if flags.get("bias") else None]
    if name == "sde_step":
        gp = r(n, c, h, w) if flags.get("heun") else None
        return [r(n, c, h, w), r(n, c, h, w), r(n, c, h, w), r(n, c, h, w), 0.1, gp, flags.get("raw", False)]
    if name == "sde_predict":
        return [r(n, c, h, w), r(n, c, h, w), r(n, c, h, w), None, flags.get("raw", False)]
    raise KeyError(name)


CASES = [
    ("convgru_gates", {}),
    ("convgru_update", {}),
    ("convgru_update", {"standard": True}),
    ("spade_norm", {}),
    ("spade_norm", {"bias": True}),
    ("sde_step", {}),
    ("sde_step", {"heun": True, "raw": True}),
    ("sde_step", {"raw": True}),
    ("sde_predict", {}),
    ("sde_predict", {"raw": True}),
]


def _call(module, name: str, args, flags):
    if name == "convgru_update":
        return module.convgru_update(*args, standard=flags.get("standard", False))
    return getattr(module, name)(*args)


def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _check_fwd_bwd(name, flags, args, dtype):
    """Forward outputs and input gradients of the cpu backend equal the reference."""
    ref_args = [a.detach().clone().requires_grad_(True) if isinstance(a, torch.Tensor) else a for a in args]
    cpp_args = [a.detach().clone().requires_grad_(True) if isinstance(a, torch.Tensor) else a for a in args]
    ref_out = _as_tuple(_call(R, name, ref_args, flags))
    cpp_out = _as_tuple(_call(C, name, cpp_args, flags))
    for got, want in zip(cpp_out, ref_out):
        torch.testing.assert_close(got, want, **TOL[dtype])
    upstream = [torch.randn_like(o) for o in ref_out]
    torch.autograd.backward(ref_out, upstream)
    torch.autograd.backward(cpp_out, upstream)
    for got, want in zip(cpp_args, ref_args):
        if isinstance(got, torch.Tensor):
            torch.testing.assert_close(got.grad, want.grad, **GRAD_TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name, flags", CASES)
@settings(max_examples=6, deadline=None)
@given(shape=nchw())
def test_matches_reference(name, flags, dtype, shape):
    _check_fwd_bwd(name, flags, _inputs(name, shape, dtype, **flags), dtype)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("hw", SPATIAL)
def test_spade_every_row_length(hw, channels_last):
    """Row lengths 1 .. 128*128, NCHW rows and NHWC channel chunks (70 channels: 64 + 6)."""
    args = _inputs("spade_norm", (1, 70 if hw[0] * hw[1] <= 64 else 3, *hw), torch.float32, bias=True)
    if channels_last:
        args[:3] = [a.contiguous(memory_format=torch.channels_last) for a in args[:3]]
    _check_fwd_bwd("spade_norm", {"bias": True}, args, torch.float32)


def _strided(t: torch.Tensor) -> torch.Tensor:
    """The same values as t in a non-contiguous view (every other element of a wider tensor)."""
    wide = torch.empty(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
    wide[..., ::2] = t
    return wide[..., ::2]


@pytest.mark.parametrize("layout", ["strided", "channels_last", "mixed"])
@pytest.mark.parametrize("name, flags", CASES)
def test_non_contiguous_inputs(name, flags, layout):
    args = _inputs(name, (2, 3, 5, 6), torch.float32, **flags)
    tensors = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.dim() == 4]
    for k, i in enumerate(tensors):
        if layout == "strided" or (layout == "mixed" and k % 2 == 0):
            args[i] = _strided(args[i])
        else:
            args[i] = args[i].contiguous(memory_format=torch.channels_last)
    _check_fwd_bwd(name, flags, args, torch.float32)


def test_channels_last_outputs_stay_channels_last():
    cl = torch.channels_last
    h, gamma, beta = (_randn(2, 8, 4, 4).contiguous(memory_format=cl) for _ in range(3))
    assert C.spade_norm(h, gamma, beta).is_contiguous(memory_format=cl)
    gx, gh = (_randn(2, 16, 4, 4).contiguous(memory_format=cl) for _ in range(2))
    u, rh = C.convgru_gates(gx, gh, h)
    assert u.is_contiguous(memory_format=cl) and rh.is_contiguous(memory_format=cl)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name, flags", CASES)
def test_low_precision_close_to_fp32(name, flags, dtype):
    """bf16/fp16 in, fp32 math inside: error of one final rounding (plus input rounding)."""
    args = _inputs(name, (2, 3, 8, 8), torch.float32, **flags)
    low = [a.to(dtype) if isinstance(a, torch.Tensor) else a for a in args]
    want = _as_tuple(_call(R, name, [a.float() if isinstance(a, torch.Tensor) else a for a in low], flags))
    got = _as_tuple(_call(C, name, low, flags))
    for g, w in zip(got, want):
        assert g.dtype == dtype
        torch.testing.assert_close(g.float(), w, rtol=2e-2, atol=2e-2)


def test_opcheck_every_op():
    """Schemas, fake impls, autograd registration and AOT dispatch of all 10 ops."""
    x = lambda *s: torch.randn(*s, dtype=torch.float64)  # noqa: E731
    grad = lambda *s: torch.randn(*s, dtype=torch.float64, requires_grad=True)  # noqa: E731
    cl = torch.channels_last
    samples = [
        (STD.convgru_gates, (grad(2, 6, 3, 4), grad(2, 6, 3, 4), grad(2, 3, 3, 4))),
        (STD.convgru_gates, tuple(t.contiguous(memory_format=cl) for t in (grad(2, 6, 3, 4), grad(2, 6, 3, 4), grad(2, 3, 3, 4)))),
        (STD.convgru_gates_backward, (x(2, 3, 3, 4), None, x(2, 3, 3, 4), x(2, 6, 3, 4), x(2, 6, 3, 4), x(2, 3, 3, 4))),
        (STD.convgru_update, (grad(2, 3, 4, 4), grad(2, 3, 4, 4), grad(2, 3, 4, 4), grad(2, 3, 4, 4), True)),
        (STD.convgru_update_backward, (x(2, 3, 4, 4), x(2, 3, 4, 4), x(2, 3, 4, 4), x(2, 3, 4, 4), x(2, 3, 4, 4), False)),
        (STD.spade_norm, (grad(2, 3, 4, 5), grad(2, 3, 4, 5), grad(2, 3, 4, 5), grad(2, 3), 1e-5)),
        (STD.spade_norm, tuple(t.contiguous(memory_format=cl) for t in (grad(2, 3, 4, 5), grad(2, 3, 4, 5), grad(2, 3, 4, 5))) + (None, 1e-3)),
        (STD.spade_norm_backward, (x(2, 3, 4, 5), x(2, 3, 4, 5), x(2, 3, 4, 5), 1e-5, [True, False, True])),
        (STD.sde_step, (grad(3, 5), grad(3, 5), grad(3, 5), grad(3, 5), 0.1, grad(3, 5), True, None, 0)),
        (STD.sde_step, (grad(3, 5), grad(3, 5), grad(3, 5), None, 0.1, None, False, 7, 2)),
        (STD.sde_step_backward, (x(3, 5), x(3, 5), None, 0.1, x(3, 5), True, 7, 2, [True, True, True, True])),
        (STD.sde_predict, (grad(3, 5), grad(3, 5), grad(3, 5), None, True, None, 0)),
        (STD.sde_predict, (grad(3, 5), grad(3, 5), None, 0.1, False, 7, 2)),
        (STD.sde_predict_backward, (x(3, 5), x(3, 5), x(3, 5), None, False, None, 0, [False, True])),
    ]
    for op, args in samples:
        torch.library.opcheck(op, args)


def test_gradcheck_float64():
    d = dict(dtype=torch.float64, requires_grad=True)
    r = lambda *s: torch.randn(*s, **d)  # noqa: E731
    checks = [
        (C.convgru_gates, (r(2, 6, 3, 3), r(2, 6, 3, 3), r(2, 3, 3, 3))),
        (lambda *a: C.convgru_update(*a, standard=False), (r(2, 3, 3, 3), r(2, 3, 3, 3), r(2, 3, 3, 3), r(2, 3, 3, 3))),
        (lambda *a: C.convgru_update(*a, standard=True), (r(2, 3, 3, 3), r(2, 3, 3, 3), r(2, 3, 3, 3), r(2, 3, 3, 3))),
        (C.spade_norm, (r(2, 3, 4, 5), r(2, 3, 4, 5), r(2, 3, 4, 5), r(2, 3))),
        (lambda y, f, g, w, gp: C.sde_step(y, f, g, w, 0.1, gp, True), (r(7), r(7), r(7), r(7), r(7))),
        (lambda y, f, g: C.sde_step(y, f, g, None, 0.1, None, True, seed=5, offset=1), (r(9), r(9), r(9))),
        (lambda y, g, w: C.sde_predict(y, g, w, g_is_raw=True), (r(7), r(7), r(7))),
        (lambda y, g: C.sde_predict(y, g, None, 0.1, seed=5), (r(9), r(9))),
    ]
    for fn, args in checks:
        assert torch.autograd.gradcheck(fn, args)


def test_compile_fullgraph_matches_eager():
    def step(gx, gh, h, cx, ch, gamma, beta, y, f, g):
        u, rh = C.convgru_gates(gx, gh, h)
        new = C.convgru_update(cx, ch * rh, u, h)
        out = C.spade_norm(new, gamma, beta)
        return out, C.sde_step(y, f, g, None, 0.1, None, True, seed=3, offset=4)

    args = [_randn(2, 8, 4, 4), _randn(2, 8, 4, 4)] + [_randn(2, 4, 4, 4) for _ in range(5)] + [_randn(3, 7) for _ in range(3)]
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    for got, want in zip(compiled(*args), step(*args)):
        torch.testing.assert_close(got, want)


# ---------------------------------------------------------------------------- Philox noise
def _numpy_normals(seed: int, offset: int, n: int) -> np.ndarray:
    """Independent NumPy implementation of csrc/philox.h (float32 ops, no FMA): the spec."""
    blocks = np.arange((n + 3) // 4, dtype=np.uint64)
    u32 = lambda v: (np.asarray(v, dtype=np.uint64) & np.uint64(0xFFFFFFFF))  # noqa: E731
    c = [u32(blocks), u32(blocks >> np.uint64(32)), u32(np.full_like(blocks, offset & 0xFFFFFFFF)),
         u32(np.full_like(blocks, offset >> 32))]
    k = [np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32)]
    m0, m1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
    for _ in range(10):
        p0, p1 = m0 * c[0], m1 * c[2]
        c = [u32((p1 >> np.uint64(32)) ^ c[1] ^ k[0]), u32(p1), u32((p0 >> np.uint64(32)) ^ c[3] ^ k[1]), u32(p0)]
        k = [u32(k[0] + np.uint64(0x9E3779B9)), u32(k[1] + np.uint64(0xBB67AE85))]
    f = np.float32

    def radius(w):
        u = (((w >> np.uint64(9)) << np.uint64(1)) | np.uint64(1)).astype(f) * f(2.0**-24)
        bits = u.view(np.uint32).astype(np.int64)
        e = ((bits >> 23) & 0xFF) - 127
        mbits = (bits & 0x7FFFFF) | 0x3F800000
        big = mbits > 0x3FB504F3
        mbits = np.where(big, mbits - 0x800000, mbits)
        e = np.where(big, e + 1, e)
        m = mbits.astype(np.uint32).view(f)
        s = (m - f(1)) / (m + f(1))
        s2 = s * s
        p = s2 * f(0.11111111) + f(0.14285715)
        p = s2 * p + f(0.2)
        p = s2 * p + f(0.33333334)
        p = s2 * p + f(1)
        ln_m = (f(2) * s) * p
        fe = e.astype(f)
        ln_u = fe * f(0.693359375) + (fe * f(-2.12194440e-4) + ln_m)
        return np.sqrt(f(-2) * ln_u)

    def angle(w):
        kk = (w >> np.uint64(8)).astype(np.int64)
        q = (kk + (1 << 21)) >> 22
        x = (kk - (q << 22)).astype(f) * f(2.0**-24) * f(6.28318548)
        z = x * x
        ps = z * f(-1.9515295891e-4) + f(8.3321608736e-3)
        ps = z * ps + f(-1.6666654611e-1)
        sn = (z * x) * ps + x
        pc = z * f(2.443315711809948e-5) + f(-1.388731625493765e-3)
        pc = z * pc + f(4.166664568298827e-2)
        cs = (z * z) * pc + (f(1) - f(0.5) * z)
        quad = q & 3
        cos = np.select([quad == 0, quad == 1, quad == 2], [cs, -sn, -cs], sn)
        sin = np.select([quad == 0, quad == 1, quad == 2], [sn, cs, -sn], -cs)
        return cos, sin

    ra, rb = radius(c[0]), radius(c[2])
    ca, sa = angle(c[1])
    cb, sb = angle(c[3])
    return np.stack([ra * ca, ra * sa, rb * cb, rb * sb], axis=1).reshape(-1)[:n]


def _noise(n: int, seed: int, offset: int, dtype=torch.float32) -> torch.Tensor:
    y = torch.zeros(n, dtype=dtype)
    return C.sde_predict(y, torch.ones_like(y), None, 1.0, seed=seed, offset=offset)


@pytest.mark.parametrize("seed, offset", [(0, 0), (123456789, 5), (2**40 + 7, 2**33 + 1)])
def test_noise_matches_numpy_spec_bitwise(seed, offset):
    got = _noise(4099, seed, offset).numpy()
    np.testing.assert_array_equal(got, _numpy_normals(seed, offset, 4099))


def test_noise_is_reproducible_and_layout_independent():
    a, b = _noise(50_001, 3, 9), _noise(50_001, 3, 9)
    assert torch.equal(a, b)
    assert torch.equal(_noise(1_003, 3, 9), a[:1_003])  # element i depends on (seed, offset, i) only
    assert not torch.equal(_noise(1_003, 3, 10), a[:1_003]) and not torch.equal(_noise(1_003, 4, 9), a[:1_003])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(_noise(50_001, 3, 9), a)
    finally:
        torch.set_num_threads(threads)
    # noise of an (N, C, H, W) tensor is indexed in logical (contiguous) order for any layout
    y = torch.zeros(2, 3, 4, 5)
    z = C.sde_predict(y, torch.ones_like(y), None, 1.0, seed=3, offset=9)
    ycl = y.contiguous(memory_format=torch.channels_last)
    zcl = C.sde_predict(ycl, torch.ones_like(ycl), None, 1.0, seed=3, offset=9)
    assert torch.equal(z.flatten(), a[:120]) and torch.equal(zcl, z)


def test_noise_statistics():
    n = 1 << 20
    z = _noise(n, 11, 0).double()
    assert abs(z.mean().item()) < 5 / math.sqrt(n)
    assert abs(z.var().item() - 1) < 5 * math.sqrt(2 / n)
    assert abs(((z**4).mean() / z.var() ** 2).item() - 3) < 0.05  # kurtosis of a normal
    # Kolmogorov-Smirnov distance to N(0, 1) (critical value at alpha = 1e-3: 1.95 / sqrt(n))
    s = torch.sort(z).values
    cdf = torch.special.ndtr(s)
    grid = torch.arange(1, n + 1, dtype=torch.float64) / n
    ks = torch.maximum(grid - cdf, cdf - (grid - 1 / n)).max().item()
    assert ks < 1.95 / math.sqrt(n)
    # independence: correlations across neighbouring elements, Philox lanes and offsets
    bound = 5 / math.sqrt(n)
    for lag in (1, 2, 3, 4, 5):
        assert abs(torch.corrcoef(torch.stack([z[:-lag], z[lag:]]))[0, 1].item()) < bound
    for other in (_noise(n, 11, 1).double(), _noise(n, 12, 0).double()):
        assert abs(torch.corrcoef(torch.stack([z, other]))[0, 1].item()) < bound
    assert abs(torch.corrcoef(torch.stack([z**2, z.roll(1) ** 2]))[0, 1].item()) < bound


def test_step_noise_is_sqrt_dt_times_normal_and_backward_regenerates_it():
    n, dt = 1_001, 0.04
    z = _noise(n, 5, 2)
    y, f = torch.zeros(n), torch.zeros(n)
    g = torch.ones(n, requires_grad=True)
    out = C.sde_step(y, f, g, None, dt, seed=5, offset=2)
    assert torch.equal(out, torch.tensor(math.sqrt(dt), dtype=torch.float32) * z)
    out.sum().backward()
    assert torch.equal(g.grad, out.detach())
    z64 = _noise(n, 5, 2, dtype=torch.float64)
    assert torch.equal(z64, z.double())


# ---------------------------------------------------------------------------- errors, dispatch, loading
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: STD.convgru_gates(torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 2), torch.zeros(1, 3, 2, 2)), "gx must have shape"),
        (lambda: STD.convgru_update(torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(2, 2).double(), torch.zeros(2, 2)), "u must have h's dtype"),
        (lambda: STD.spade_norm(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), None, 1e-5), "h must be \\(N, C, H, W\\)"),
        (lambda: STD.spade_norm(*[torch.zeros(1, 2, 3, 3)] * 3, torch.zeros(2, 1), 1e-5), "bias must have shape"),
        (lambda: STD.spade_norm(*[torch.zeros(1, 2, 3, 3, dtype=torch.long)] * 3, None, 1e-5), "expected a float32"),
        (lambda: STD.sde_step(*[torch.zeros(3)] * 3, None, 0.1, None, False, None, 0), "needs a seed"),
        (lambda: STD.sde_step(*[torch.zeros(3)] * 4, 0.1, None, False, 1, 0), "either dW or seed"),
        (lambda: STD.sde_predict(*[torch.zeros(3)] * 2, None, None, False, 1, 0), "finite dt > 0"),
    ],
)
def test_launchers_reject_bad_tensors(call, match):
    with pytest.raises(RuntimeError, match=match):
        call()


def test_public_api_dispatches_to_cpu_kernels():
    h, gamma, beta = (_randn(1, 2, 3, 3) for _ in range(3))
    torch.testing.assert_close(ops.spade_norm(h, gamma, beta, backend="cpu"), R.spade_norm(h, gamma, beta))
    assert ops.backend_status()["cpu"][0]


def test_version_mismatch_refuses_to_load(monkeypatch):
    monkeypatch.setattr(C, "build_info", lambda: {"torch": "0.0.1", "cuda_built": False})
    ok, reason = C._load_cpu.__wrapped__()
    assert not ok and "built for torch 0.0.1" in reason and "rebuild" in reason
    monkeypatch.setattr(C, "build_info", lambda: None)
    ok, reason = C._load_cpu.__wrapped__()
    assert not ok and "not built" in reason


def _isa_outputs() -> dict[str, torch.Tensor]:
    """Outputs and gradients of every op on fixed inputs (for the instruction-set comparison)."""
    torch.manual_seed(1234)
    out: dict[str, torch.Tensor] = {}
    for name, flags in CASES:
        args = _inputs(name, (2, 3, 9, 11), torch.float32, requires_grad=True, **flags)
        res = _as_tuple(_call(C, name, args, flags))
        grads = torch.autograd.grad(res, [a for a in args if isinstance(a, torch.Tensor)], [torch.ones_like(r) for r in res])
        for i, t in enumerate(res + grads):
            out[f"{name}{sorted(flags.items())}[{i}]"] = t.detach()
    out["noise"] = _noise(10_007, 9, 3)
    return out


_ISA_SCRIPT = """
import importlib.util, sys, torch
spec = importlib.util.spec_from_file_location("cpp_tests", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
torch.save(mod._isa_outputs(), sys.argv[2])
print(torch.ops.stdiff.cpu_isa())
"""


@pytest.mark.parametrize("isa", ["base", "avx2"])
def test_every_instruction_set_gives_the_same_results(isa, tmp_path):
    """The kernels compiled for each ISA agree; the Philox noise is bit-identical across them."""
    dst = tmp_path / "out.pt"
    env = dict(os.environ, STDIFF_CPU_ISA=isa)
    # cwd=tmp_path: `python -c` puts the working directory first on sys.path, and from a source
    # checkout that would import the uncompiled source tree instead of the installed package
    run = subprocess.run([sys.executable, "-c", _ISA_SCRIPT, __file__, str(dst)], env=env, capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split()[-1] in (isa, "base")
    theirs, ours = torch.load(dst), _isa_outputs()
    assert theirs.keys() == ours.keys()
    for key in ours:
        torch.testing.assert_close(theirs[key], ours[key], rtol=1e-5, atol=1e-5, msg=key)
    assert torch.equal(theirs["noise"], ours["noise"])


def test_thread_count_does_not_change_results():
    args = _inputs("spade_norm", (3, 5, 16, 16), torch.float32, bias=True)
    two = C.spade_norm(*args)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(C.spade_norm(*args), two)
    finally:
        torch.set_num_threads(threads)
