"""spade_norm on every available backend: the harness tests (tests/op_harness.py) and its own."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from op_harness import (  # noqa: F401  (the harness tests run for this op)
    KERNELS, SPATIAL, compare, generate_for, record_triton_launches, test_backward_op_computes_only_the_asked_gradients,
    test_double_backward, test_empty_tensors, test_gpu_sizes, test_gradcheck_float64, test_matches_reference,
    test_non_contiguous_inputs, test_opcheck,
)

from stdiff import ops

OP = "spade_norm"
pytest_generate_tests = generate_for(OP)


def _naive_spade(h, gamma, beta, bias, eps):
    n, c, height, width = h.shape
    out = torch.empty_like(h, dtype=torch.float64)
    for i in range(n):
        for j in range(c):
            x = h[i, j].double()
            mean = x.sum() / x.numel()
            var = ((x - mean) ** 2).sum() / x.numel()
            y = (x - mean) / math.sqrt(var + eps) * (1 + gamma[i, j].double()) + beta[i, j].double()
            out[i, j] = y + (0 if bias is None else bias[i, j].double())
    return out


@settings(max_examples=25, deadline=None)
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 9), st.integers(1, 9)),
       with_bias=st.booleans())
def test_reference_matches_naive_loops(shape, with_bias):
    h, gamma, beta = (torch.randn(shape) for _ in range(3))
    h = h * 3 + 1
    bias = torch.randn(shape[:2]) if with_bias else None
    out = ops.spade_norm(h, gamma, beta, bias, backend="reference")
    torch.testing.assert_close(out.double(), _naive_spade(h, gamma, beta, bias, 1e-5), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("hw", SPATIAL)
def test_every_row_length(backend, device, hw, channels_last):
    """Row lengths 1 .. 128*128, NCHW rows and NHWC channel chunks (70 channels: 64 + 6)."""
    shape = (1, 70 if hw[0] * hw[1] <= 64 else 3, *hw)
    layout = (lambda t: t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t) if channels_last else None
    compare(OP, "bias", backend, device, shape, torch.float32, transform=layout)


@pytest.mark.skipif(not any(b == "triton" for b, _ in KERNELS), reason="triton backend unavailable")
@settings(max_examples=8, deadline=None)
@given(shape=st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 9), st.integers(2, 9)),
       variant=st.sampled_from(["plain", "bias"]), chunk=st.sampled_from([8, 32]))
def test_triton_split_rows(shape, variant, chunk):
    """The Triton split-row path (rows longer than SINGLE_PASS_MAX_HW, cut into SPLIT_CHUNK chunks)."""
    from stdiff.kernels import spade

    device = next(d for b, d in KERNELS if b == "triton")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(spade, "SINGLE_PASS_MAX_HW", 1)
        patch.setattr(spade, "SPLIT_CHUNK", chunk)
        compare(OP, variant, "triton", device, shape, torch.float32)


def test_triton_forward_keeps_no_statistics_and_backward_computes_only_the_asked(monkeypatch):
    """A counter hook on the Triton SPADE launches: the forward kernel writes the output alone (no
    mean/rstd buffers among its arguments), the backward runs with NEED_* exactly as autograd asks."""
    spade, device, launches = record_triton_launches(monkeypatch, "spade", "_launch_rows")
    h, gamma, beta = (torch.randn(2, 3, 4, 5, device=device) for _ in range(3))
    bias = torch.randn(2, 3, device=device)
    out = ops.spade_norm(h, gamma, beta, bias, backend="triton")
    ((kernel, args, _),) = launches
    tensors = [a for a in args[3:] if isinstance(a, torch.Tensor)]  # after (tuned, R, HW): h, gamma, beta, bias, out
    assert kernel is spade._spade_fwd_rows_kernel and len(tensors) == 5 and tensors[-1].data_ptr() == out.data_ptr()
    for wanted, need in (("h", (True, False, False)), ("gamma", (False, True, False)), ("bias", (False, False, True))):
        leaves = {"h": h.clone(), "gamma": gamma.clone(), "beta": beta, "bias": bias.clone()}
        leaves[wanted].requires_grad_(True)
        launches.clear()
        ops.spade_norm(**leaves, backend="triton").sum().backward()
        (_, (kernel, _, flags)) = launches
        assert kernel is spade._spade_bwd_rows_kernel
        assert (flags["NEED_H"], flags["NEED_GAMMA"], flags["NEED_BIAS"]) == need
