"""Motion encoder, Conv-GRU and the SDE solvers (vs the official cell and torchsde)."""
from __future__ import annotations

import pytest
import torch
import torchsde
from hypothesis import given, settings
from hypothesis import strategies as st

from stdiff.models.motion import ConvGRU, MotionEncoder
from stdiff.models.sde import MotionSDE, time_grid


@pytest.mark.parametrize("size, ch, n_downs, out", [(64, 64, 2, (256, 16, 16)), (128, 32, 3, (256, 16, 16)), (32, 8, 1, (16, 16, 16))])
def test_motion_encoder_shapes(size, ch, n_downs, out):
    enc = MotionEncoder(3, ch, n_downs)
    assert enc(torch.randn(2, 3, size, size)).shape == (2, *out)


@pytest.mark.parametrize("standard", [False, True])
def test_convgru_hoisted_equals_official_cell(standard):
    torch.manual_seed(0)
    gru = ConvGRU(8, standard=standard)
    xs = torch.randn(2, 4, 8, 6, 5)
    h0 = torch.randn(2, 8, 6, 5)
    for start in (None, h0):
        torch.testing.assert_close(gru(xs, start), gru.forward_unfused(xs, start), atol=1e-5, rtol=1e-5)


def test_convgru_streaming_equals_batch():
    gru = ConvGRU(4)
    xs = torch.randn(1, 5, 4, 3, 3)
    h = None
    for i in range(5):
        h = gru(xs[:, i : i + 1], h)
    torch.testing.assert_close(h, gru(xs))


class _FixedBrownian(torchsde.BrownianInterval.__mro__[1]):
    """A Brownian path for torchsde, piecewise linear through given knots (times, W values)."""

    def __init__(self, times: torch.Tensor, w: torch.Tensor):
        self.times, self.w = times, w

    def _at(self, t):
        t = float(t)
        k = int(torch.searchsorted(self.times, torch.tensor(t, dtype=torch.float64), right=True)) - 1
        k = min(max(k, 0), len(self.times) - 2)
        a, b = float(self.times[k]), float(self.times[k + 1])
        return self.w[k] + (t - a) / (b - a) * (self.w[k + 1] - self.w[k])

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        return self._at(tb) - self._at(ta)

    def __repr__(self):
        return "FixedBrownian"

    dtype = property(lambda self: self.w.dtype)
    device = property(lambda self: self.w.device)
    shape = property(lambda self: self.w.shape[1:])
    levy_area_approximation = property(lambda self: "none")


class _TorchsdeWrapper(torch.nn.Module):
    noise_type = "diagonal"

    def __init__(self, sde: MotionSDE, shape, sde_type: str):
        super().__init__()
        self.sde, self.shape, self.sde_type = sde, shape, sde_type

    def f(self, t, y):
        return self.sde.f(y.view(-1, *self.shape)).flatten(1)

    def g(self, t, y):
        return self.sde.g(y.view(-1, *self.shape)).flatten(1)


def _randomised_sde(method: str) -> MotionSDE:
    torch.manual_seed(1)
    sde = MotionSDE(4, n_layers=2, method=method, dt=0.1, backend="reference")
    for net in (sde.drift, sde.diffusion):  # the last conv is zero-initialised: randomise to test
        torch.nn.init.normal_(net.net[-1].weight, std=0.2)
        torch.nn.init.normal_(net.net[-1].bias, std=0.2)
    return sde


@settings(max_examples=6, deadline=None)
@given(
    method=st.sampled_from(["euler_heun", "euler"]),
    t0=st.sampled_from([1.0, 4.0]),
    offsets=st.lists(st.floats(0.05, 1.3), min_size=1, max_size=4, unique=True),
)
def test_solver_matches_torchsde(method, t0, offsets):
    sde = _randomised_sde(method)
    times = sorted(t0 + o for o in offsets)
    y0 = torch.randn(2, 4, 3, 3)
    grid = time_grid(t0, times[-1], sde.dt)
    dw = sde.brownian_increments(y0, t0, times, torch.Generator().manual_seed(0))
    ours = sde.solve(y0, t0, times, dW=dw)
    w = torch.cat([torch.zeros(1, 2, 36), dw.flatten(2).cumsum(0)])
    ts = torch.tensor([t0, *times], dtype=torch.float64)
    wrapper = _TorchsdeWrapper(sde, (4, 3, 3), "stratonovich" if method == "euler_heun" else "ito")
    with torch.no_grad():
        theirs = torchsde.sdeint(wrapper, y0.flatten(1), ts, bm=_FixedBrownian(grid, w), method=method, dt=sde.dt)
    torch.testing.assert_close(ours.flatten(2), theirs[1:].float(), atol=2e-5, rtol=1e-5)


def test_on_grid_query_hits_step_exactly():
    sde = _randomised_sde("euler_heun")
    y0 = torch.randn(1, 4, 2, 2)
    dw = sde.brownian_increments(y0, 4.0, [5.0, 6.0], torch.Generator().manual_seed(3))
    both = sde.solve(y0, 4.0, [5.0, 6.0], dW=dw)
    first = sde.solve(y0, 4.0, [5.0], dW=dw[:10])
    assert torch.equal(both[0], first[0])
    assert len(time_grid(4.0, 6.0, 0.1)) == 21


def test_ode_mode_is_deterministic_and_fused_noise_reproducible():
    sde = _randomised_sde("ode")
    y0 = torch.randn(1, 4, 2, 2)
    torch.testing.assert_close(sde.solve(y0, 0.0, [0.5, 1.0]), sde.solve(y0, 0.0, [0.5, 1.0]))
    sde.method = "euler_heun"
    a = sde.solve(y0, 0.0, [0.5, 1.0], seed=7)
    b = sde.solve(y0, 0.0, [0.5, 1.0], seed=7)
    c = sde.solve(y0, 0.0, [0.5, 1.0], seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_solver_gradients_flow_and_bad_times_raise():
    sde = _randomised_sde("euler_heun")
    y0 = torch.randn(1, 4, 2, 2, requires_grad=True)
    sde.solve(y0, 0.0, [0.35], generator=torch.Generator().manual_seed(0)).sum().backward()
    assert y0.grad is not None and sde.drift.net[0].weight.grad is not None
    with pytest.raises(ValueError, match="strictly increasing"):
        sde.solve(y0, 1.0, [2.0, 1.5])
    with pytest.raises(ValueError, match="dW must have shape"):
        sde.solve(y0, 0.0, [1.0], dW=torch.zeros(3, 1, 4, 2, 2))
