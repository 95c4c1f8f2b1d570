"""The reference ops vs independent naive formulas, gradcheck, validation and dispatch."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stdiff import ops
from stdiff.ops import _dispatch, reference

shapes = st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 9), st.integers(1, 9))


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
@given(shape=shapes, with_bias=st.booleans())
def test_spade_norm_matches_naive(shape, with_bias):
    h, gamma, beta = (torch.randn(shape) for _ in range(3))
    h = h * 3 + 1
    bias = torch.randn(shape[:2]) if with_bias else None
    out = ops.spade_norm(h, gamma, beta, bias, backend="reference")
    torch.testing.assert_close(out.double(), _naive_spade(h, gamma, beta, bias, 1e-5), atol=2e-5, rtol=1e-5)


@settings(max_examples=25, deadline=None)
@given(shape=shapes, standard=st.booleans())
def test_convgru_matches_naive(shape, standard):
    n, f, height, width = shape
    gx, gh = torch.randn(n, 2 * f, height, width), torch.randn(n, 2 * f, height, width)
    h, cx, ch = (torch.randn(shape) for _ in range(3))
    u, rh = ops.convgru_gates(gx, gh, h, backend="reference")
    z = 1 / (1 + torch.exp(-(gx + gh)))
    torch.testing.assert_close(u, z[:, :f])
    torch.testing.assert_close(rh, z[:, f:] * h)
    new = ops.convgru_update(cx, ch, u, h, standard=standard, backend="reference")
    cand = (torch.exp(2 * (cx + ch)) - 1) / (torch.exp(2 * (cx + ch)) + 1)
    torch.testing.assert_close(new, (1 - u) * h + (u * cand if standard else cand))


@settings(max_examples=20, deadline=None)
@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4), raw=st.booleans(), heun=st.booleans())
def test_sde_ops_match_formula(shape, raw, heun):
    y, f, g, gp, dw = (torch.randn(shape) for _ in range(5))
    dt = 0.1
    gg = torch.tanh(g) if raw else g
    gpp = torch.tanh(gp) if raw else gp
    out = ops.sde_step(y, f, g, dw, dt, g_pred=gp if heun else None, g_is_raw=raw, backend="reference")
    expected = y + f * dt + ((gg + gpp) / 2 if heun else gg) * dw
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(ops.sde_predict(y, g, dw, g_is_raw=raw, backend="reference"), y + gg * dw)


def test_gradcheck_float64():
    d = dict(dtype=torch.float64, requires_grad=True)
    h, gamma, beta = (torch.randn(2, 3, 4, 5, **d) for _ in range(3))
    bias = torch.randn(2, 3, **d)
    assert torch.autograd.gradcheck(lambda *a: ops.spade_norm(*a, backend="reference"), (h, gamma, beta, bias))
    gx, gh = torch.randn(2, 6, 3, 3, **d), torch.randn(2, 6, 3, 3, **d)
    hh, cx, ch, u = (torch.randn(2, 3, 3, 3, **d) for _ in range(4))
    assert torch.autograd.gradcheck(lambda *a: ops.convgru_gates(*a, backend="reference"), (gx, gh, hh))
    assert torch.autograd.gradcheck(lambda *a: ops.convgru_update(*a, backend="reference"), (cx, ch, u, hh))
    y, f, g, gp, dw = (torch.randn(7, **d) for _ in range(5))
    assert torch.autograd.gradcheck(
        lambda *a: ops.sde_step(*a[:4], 0.1, g_pred=a[4], g_is_raw=True, backend="reference"), (y, f, g, dw, gp)
    )


def test_in_op_noise_is_reproducible_and_normal():
    y = torch.zeros(200_000)
    a = ops.sde_predict(y, torch.ones_like(y), None, dt=0.04, seed=3, offset=5, backend="reference")
    b = ops.sde_predict(y, torch.ones_like(y), None, dt=0.04, seed=3, offset=5, backend="reference")
    c = ops.sde_predict(y, torch.ones_like(y), None, dt=0.04, seed=3, offset=6, backend="reference")
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert abs(a.mean().item()) < 0.002 and abs(a.std().item() - 0.2) < 0.002
    # the step and the predictor see the same increment for the same (seed, offset)
    step = ops.sde_step(y, torch.zeros_like(y), torch.ones_like(y), None, 0.04, seed=3, offset=5, backend="reference")
    torch.testing.assert_close(step, a)


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
