"""Backend selection, loading, argument errors and per-backend machinery of the fused ops.

Dispatch (``auto``, ``STDIFF_BACKEND``, one warning per missing backend), validation errors that
name the argument (public functions and C++ launchers), the C++ extension's build check, its
instruction-set variants and thread-count independence, ``torch.compile`` of the ops, and the
Triton package's modes and GPU code generation. Accuracy and gradients are tested per op in
tests/test_op_<op>.py.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

from stdiff import ops
from stdiff.ops import _compiled as C
from stdiff.ops import _dispatch, reference
from stdiff.ops.cases import CASES, call, inputs

STD = torch.ops.stdiff
CPP, CPP_REASON = C.is_available("cpu")
needs_cpp = pytest.mark.skipif(not CPP, reason=f"compiled ops unavailable: {CPP_REASON}")


def _triton():
    """The stdiff.kernels package when the Triton backend runs here, else None."""
    try:
        import stdiff.kernels as kernels
    except ImportError:
        return None
    return kernels if kernels.is_available()[0] else None


KERNELS = _triton()
needs_triton = pytest.mark.skipif(KERNELS is None, reason="triton backend unavailable")


# ---------------------------------------------------------------------------- validation and dispatch
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: ops.spade_norm(torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.randn(2, 3, 4)), "h must be a 4-D"),
        (lambda: ops.spade_norm(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 4)), "gamma must have shape"),
        (lambda: ops.spade_norm(torch.randn(1, 2, 3, 3), torch.randn(1, 2, 3, 3), torch.randn(1, 2, 3, 3), torch.randn(2)), "bias must have shape"),
        (lambda: ops.spade_norm(torch.randn(1, 2, 3, 3), torch.randn(1, 2, 3, 3).double(), torch.randn(1, 2, 3, 3)), "gamma must have the dtype"),
        (lambda: ops.spade_norm(torch.randn(1, 2, 3, 3), torch.randn(1, 2, 3, 3), torch.randn(1, 2, 3, 3), eps=0.0), "eps must be finite and > 0"),
        (lambda: ops.convgru_gates(torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2), torch.randn(1, 3, 2, 2)), "gx must have shape"),
        (lambda: ops.convgru_update(*[torch.randn(1, 2, 2, 2)] * 3, torch.randn(1, 2, 2, 3)), "cx must have shape"),
        (lambda: ops.sde_step(torch.randn(3), torch.randn(3), torch.randn(3), torch.randn(3), -0.1), "dt must be finite and > 0"),
        (lambda: ops.sde_step(torch.randn(3), torch.randn(3), torch.randn(3), None, 0.1), "needs seed"),
        (lambda: ops.sde_predict(torch.randn(3), torch.randn(3), torch.randn(4)), "dW must have shape"),
        (lambda: ops.sde_predict(torch.randn(3), torch.randn(3), torch.randn(3), backend="fast"), "backend must be"),
        (lambda: ops.sde_predict(torch.randn(3), torch.randn(3), torch.randn(3), backend="cuda"), "cannot run on cpu"),
    ],
)
def test_bad_arguments_name_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_integer_tensors_rejected():
    with pytest.raises(TypeError, match="gx must have a floating dtype"):
        ops.convgru_gates(torch.zeros(1, 2, 1, 1, dtype=torch.long), torch.zeros(1, 2, 1, 1), torch.zeros(1, 1, 1, 1))


def test_env_override_and_single_warning(monkeypatch):
    monkeypatch.setattr(_dispatch, "ENV_BACKEND", "reference")
    assert _dispatch.resolve("auto", "cpu") is reference
    monkeypatch.setattr(_dispatch, "ENV_BACKEND", "auto")
    monkeypatch.setattr(_dispatch, "_warned", set())
    monkeypatch.setitem(_dispatch._MODULES, "cpu", "stdiff.ops._no_such_backend")
    _dispatch._loaded.clear()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert _dispatch.resolve("auto", "cpu") is reference
            assert _dispatch.resolve("auto", "cpu") is reference
        assert sum("falling back" in str(w.message) for w in caught) == 1
    finally:
        _dispatch._loaded.clear()


def test_backend_status_lists_all_backends():
    status = ops.backend_status()
    assert set(status) == set(ops.BACKENDS) and status["reference"][0]


# ---------------------------------------------------------------------------- the C++ extension
@needs_cpp
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


@needs_cpp
def test_public_api_dispatches_to_cpu_kernels():
    h, gamma, beta = (torch.randn(1, 2, 3, 3) for _ in range(3))
    torch.testing.assert_close(ops.spade_norm(h, gamma, beta, backend="cpu"), reference.spade_norm(h, gamma, beta))
    assert ops.backend_status()["cpu"][0]


@needs_cpp
def test_version_mismatch_refuses_to_load(monkeypatch):
    monkeypatch.setattr(C, "build_info", lambda: {"torch": "0.0.1", "cuda_built": False})
    ok, reason = C._load_cpu.__wrapped__()
    assert not ok and "built for torch 0.0.1" in reason and "rebuild" in reason
    monkeypatch.setattr(C, "build_info", lambda: None)
    ok, reason = C._load_cpu.__wrapped__()
    assert not ok and "not built" in reason


def _isa_outputs() -> dict[str, torch.Tensor]:
    """Outputs and gradients of every op and variant on fixed inputs (for the instruction-set comparison)."""
    out: dict[str, torch.Tensor] = {}
    for op, case in CASES.items():
        for variant in case.variants:
            kwargs = inputs(op, variant, (2, 3, 9, 11), requires_grad=True, generator=torch.Generator().manual_seed(1234))
            res = call(getattr(C, op), kwargs)
            tensors = [v for v in kwargs.values() if isinstance(v, torch.Tensor) and v.requires_grad]
            grads = torch.autograd.grad(res, tensors, [torch.ones_like(r) for r in res])
            for i, t in enumerate(res + grads):
                out[f"{op}-{variant}[{i}]"] = t.detach()
    y = torch.zeros(10_007)
    out["noise"] = C.sde_predict(y, torch.ones_like(y), None, 1.0, seed=9, offset=3)
    return out


_ISA_SCRIPT = """
import importlib.util, sys, torch
spec = importlib.util.spec_from_file_location("cpp_tests", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
torch.save(mod._isa_outputs(), sys.argv[2])
print(torch.ops.stdiff.cpu_isa())
"""


@needs_cpp
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


@needs_cpp
def test_thread_count_does_not_change_results():
    args = inputs("spade_norm", "bias", (3, 5, 16, 16))
    two = C.spade_norm(**args)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(C.spade_norm(**args), two)
    finally:
        torch.set_num_threads(threads)


@needs_cpp
def test_compile_fullgraph_matches_eager():
    """The C++ ops called directly inside torch.compile(fullgraph=True) give the eager results
    (tests/test_compile.py compiles model blocks through the public functions on every backend)."""
    backend, device = "cpu", "cpu"

    def step(gx, gh, h, cx, ch, gamma, beta, y, f, g):
        u, rh = ops.convgru_gates(gx, gh, h, backend=backend)
        new = ops.convgru_update(cx, ch * rh, u, h, backend=backend)
        out = ops.spade_norm(new, gamma, beta, backend=backend)
        return out, ops.sde_step(y, f, g, None, 0.1, None, True, seed=3, offset=4, backend=backend)

    r = lambda *s: torch.randn(*s, device=device)  # noqa: E731
    args = [r(2, 8, 4, 4), r(2, 8, 4, 4)] + [r(2, 4, 4, 4) for _ in range(5)] + [r(3, 7) for _ in range(3)]
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    for got, want in zip(compiled(*args), step(*args)):
        torch.testing.assert_close(got, want)


# ---------------------------------------------------------------------------- the Triton package
@needs_triton
def test_cpu_tensors_need_the_interpreter(monkeypatch):
    from stdiff.kernels import _runtime

    kernels = KERNELS
    monkeypatch.setattr(_runtime, "INTERPRET", False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        kernels.convgru_update(*(torch.zeros(1, 1, 2, 2) for _ in range(4)))


@needs_triton
def test_is_available_names_the_mode():
    from stdiff.kernels import _runtime

    kernels = KERNELS
    ok, reason = kernels.is_available()
    assert ok and ("interpreter" in reason if _runtime.INTERPRET else "CUDA" in reason)



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
        (convgru._gates_bwd_kernel, {"HAS_DU": True, "HAS_DRH": True, "NEED_G": True, "NEED_H": True, "BLOCK": 2048}),
        (convgru._gates_bwd_kernel, {"HAS_DU": False, "HAS_DRH": True, "NEED_G": False, "NEED_H": True, "BLOCK": 2048}),
        (convgru._update_fwd_kernel, {"STANDARD": True, "BLOCK": 1024}),
        (convgru._update_bwd_kernel, {"STANDARD": True, "NEED_C": True, "NEED_U": True, "NEED_H": True, "BLOCK": 4096}),
        (convgru._update_bwd_kernel, {"STANDARD": False, "NEED_C": False, "NEED_U": True, "NEED_H": False,
                                      "BLOCK": 4096}),
        (spade._spade_fwd_rows_kernel, {"HAS_BIAS": True, "BLOCK_HW": 16, "TILE": 2048}),
        (spade._spade_bwd_rows_kernel, {"NEED_H": True, "NEED_GAMMA": True, "NEED_BIAS": True, "BLOCK_HW": 4096,
                                        "TILE": 4096}),
        (spade._spade_bwd_rows_kernel, {"NEED_H": False, "NEED_GAMMA": True, "NEED_BIAS": False, "BLOCK_HW": 64,
                                        "TILE": 4096}),
        (spade._spade_stats_kernel, {"CHUNK": 4096}),
        (spade._spade_fwd_split_kernel, {"HAS_BIAS": True, "CHUNK": 4096, "NCH_P2": 4}),
        (spade._spade_bwd_partial_kernel, {"NEED_H": True, "NEED_GAMMA": True, "NEED_BIAS": True, "CHUNK": 4096}),
        (spade._spade_bwd_split_kernel, {"NEED_H": True, "NEED_BIAS": True, "CHUNK": 4096, "NCH_P2": 8}),
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


@needs_triton
def test_kernels_compile_for_ampere_and_hopper():
    """Every kernel goes through Triton's GPU compiler (sm_80 / sm_90 PTX and cubin, no GPU needed).

    The interpreter does not type-check kernels the way the compiler does; this catches
    frontend and lowering errors on machines without a GPU.
    """
    env = dict(os.environ, TRITON_INTERPRET="0")
    package_dir = os.path.dirname(KERNELS.__file__)
    result = subprocess.run(
        [sys.executable, "-c", _AOT_SCRIPT, package_dir], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "compiled 17" in result.stdout
