"""convgru_gates on every available backend: the harness tests (tests/op_harness.py) and its own."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from op_harness import (  # noqa: F401  (the harness tests run for this op)
    generate_for, record_triton_launches, test_backward_op_computes_only_the_asked_gradients, test_double_backward, test_empty_tensors,
    test_gpu_sizes, test_gradcheck_float64, test_matches_reference, test_non_contiguous_inputs, test_opcheck,
)

from stdiff import ops

OP = "convgru_gates"
pytest_generate_tests = generate_for(OP)


@settings(max_examples=25, deadline=None)
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 9), st.integers(1, 9)))
def test_reference_matches_naive_formula(shape):
    n, f, height, width = shape
    gx, gh = torch.randn(n, 2 * f, height, width), torch.randn(n, 2 * f, height, width)
    h = torch.randn(shape)
    u, rh = ops.convgru_gates(gx, gh, h, backend="reference")
    z = 1 / (1 + torch.exp(-(gx + gh)))
    torch.testing.assert_close(u, z[:, :f])
    torch.testing.assert_close(rh, z[:, f:] * h)


def test_channels_last_outputs_stay_channels_last(backend, device):
    cl = torch.channels_last
    gx, gh = (torch.randn(2, 16, 4, 4, device=device).contiguous(memory_format=cl) for _ in range(2))
    h = torch.randn(2, 8, 4, 4, device=device).contiguous(memory_format=cl)
    u, rh = ops.convgru_gates(gx, gh, h, backend=backend)
    assert u.is_contiguous(memory_format=cl) and rh.is_contiguous(memory_format=cl)


def test_triton_backward_uses_the_saved_u_and_computes_only_the_asked_gradients(monkeypatch):
    """A counter hook on the Triton gates backward kernel: it reads the forward's u (no update-gate
    sigmoid recomputed) and runs with NEED_G / NEED_H exactly as autograd asks."""
    convgru, device, launches = record_triton_launches(monkeypatch, "convgru", "_launch_gates")
    for wanted, need in (("h", dict(NEED_G=False, NEED_H=True)), ("gx", dict(NEED_G=True, NEED_H=False))):
        gx, gh = torch.randn(2, 6, 3, 4, device=device), torch.randn(2, 6, 3, 4, device=device)
        h = torch.randn(2, 3, 3, 4, device=device)
        {"h": h, "gx": gx}[wanted].requires_grad_(True)
        launches.clear()
        u, rh = ops.convgru_gates(gx, gh, h, backend="triton")
        (u.sum() + rh.sum()).backward()
        _, (kernel, args, flags) = launches
        assert kernel is convgru._gates_bwd_kernel and args[3].data_ptr() == u.data_ptr()  # (tuned, B, M, u, ...)
        assert {k: flags[k] for k in need} == need and flags["HAS_DU"] and flags["HAS_DRH"]


@pytest.mark.parametrize("absent", ["grad_u", "grad_rh"])
def test_backward_op_with_an_absent_upstream_gradient(backend, device, absent):
    """An output that got no gradient is passed as None (zero): every mask gives the reference formula's."""
    from stdiff.ops.backward import convgru_gates_backward as formula

    lib = torch.ops.stdiff_triton if backend == "triton" else torch.ops.stdiff
    gen = torch.Generator().manual_seed(5)
    r = lambda c: torch.randn(2, c, 3, 4, generator=gen).to(device)  # noqa: E731
    gx, gh, h = r(6), r(6), r(3)
    u = torch.sigmoid(gx[:, :3] + gh[:, :3])
    grads = {"grad_u": r(3), "grad_rh": r(3)}
    grads[absent] = None
    for mask in ([True, True], [True, False], [False, True]):
        args = (grads["grad_u"], grads["grad_rh"], u, gx, gh, h, mask)
        got, want = lib.convgru_gates_backward(*args), formula(*args)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    torch.library.opcheck(lib.convgru_gates_backward, (grads["grad_u"], grads["grad_rh"], u, gx, gh, h, [True, True]))
