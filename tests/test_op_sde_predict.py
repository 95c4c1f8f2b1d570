"""sde_predict on every available backend: the harness tests (tests/op_harness.py) and its own."""
from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from op_harness import (  # noqa: F401  (the harness tests run for this op)
    generate_for, test_backward_op_computes_only_the_asked_gradients, test_double_backward, test_empty_tensors,
    test_gpu_sizes, test_gradcheck_float64, test_matches_reference, test_non_contiguous_inputs, test_opcheck,
)

from stdiff import ops

OP = "sde_predict"
pytest_generate_tests = generate_for(OP)


@settings(max_examples=20, deadline=None)
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4), raw=st.booleans())
def test_reference_matches_formula(shape, raw):
    y, g, dw = (torch.randn(shape) for _ in range(3))
    gg = torch.tanh(g) if raw else g
    torch.testing.assert_close(ops.sde_predict(y, g, dw, g_is_raw=raw, backend="reference"), y + gg * dw)
