"""convgru_update on every available backend: the harness tests (tests/op_harness.py) and its own."""
from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from op_harness import (  # noqa: F401  (the harness tests run for this op)
    generate_for, record_triton_launches, test_backward_op_computes_only_the_asked_gradients, test_double_backward, test_empty_tensors,
    test_gpu_sizes, test_gradcheck_float64, test_matches_reference, test_non_contiguous_inputs, test_opcheck,
)

from stdiff import ops

OP = "convgru_update"
pytest_generate_tests = generate_for(OP)


@settings(max_examples=25, deadline=None)
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 9), st.integers(1, 9)),
       standard=st.booleans())
def test_reference_matches_naive_formula(shape, standard):
    u = torch.rand(shape)
    h, cx, ch = (torch.randn(shape) for _ in range(3))
    new = ops.convgru_update(cx, ch, u, h, standard=standard, backend="reference")
    cand = (torch.exp(2 * (cx + ch)) - 1) / (torch.exp(2 * (cx + ch)) + 1)
    torch.testing.assert_close(new, (1 - u) * h + (u * cand if standard else cand))


def test_triton_backward_computes_only_the_asked_gradients(monkeypatch):
    """A counter hook on the Triton update backward kernel: NEED_C / NEED_U / NEED_H follow autograd."""
    convgru, device, launches = record_triton_launches(monkeypatch, "convgru", "launch_flat")
    for wanted, need in (("cx", (True, False, False)), ("u", (False, True, False)), ("h", (False, False, True))):
        tensors = {name: torch.randn(2, 3, 3, 4, device=device) for name in ("cx", "ch", "u", "h")}
        tensors[wanted].requires_grad_(True)
        launches.clear()
        ops.convgru_update(**tensors, backend="triton").sum().backward()
        kernel, _, flags = launches[-1]
        assert kernel is convgru._update_bwd_kernel
        assert (flags["NEED_C"], flags["NEED_U"], flags["NEED_H"]) == need
