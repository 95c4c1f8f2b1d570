"""Motion encoder, Conv-GRU and the SDE solvers (vs the official cell and torchsde).

The SDE tests with constant g (zero drift, ``y(t) = y0 + g W(t)``) check the law of the states
at off-grid times; the noise source ``_RowNoise`` is an addressable test double of
:class:`stdiff.models.brownian.NoiseSource` (one seed per row, a torch.Generator per key).
"""
from __future__ import annotations

import math

import pytest
import torch
import torchsde
from hypothesis import given, settings
from hypothesis import strategies as st

from stdiff.models.motion import ConvGRU, MotionEncoder
from stdiff import ops
from stdiff.models import brownian
from stdiff.models.sde import MotionSDE, time_grid, torchsde_grid


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
    """A Brownian path, piecewise linear through given knots (times, W values): for torchsde and as ``bm``."""

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


class _RowNoise:
    """Addressable normals: row r of ``randn(key, shape)`` comes from a generator seeded by (seeds[r], key)."""

    def __init__(self, seeds: list[int]):
        self.seeds = seeds
        self.keys: list[tuple[int, ...]] = []

    def randn(self, key, shape, dtype=torch.float32):
        self.keys.append(tuple(key))
        rows = [torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(hash((seed, *key)) & (2**62 - 1)))
                for seed in self.seeds]
        return torch.stack(rows)


def _randomised_sde(method: str) -> MotionSDE:
    torch.manual_seed(1)
    sde = MotionSDE(4, n_layers=2, method=method, dt=0.1, backend="reference")
    for net in (sde.drift, sde.diffusion):  # the last conv is zero-initialised: randomise to test
        torch.nn.init.normal_(net.net[-1].weight, std=0.2)
        torch.nn.init.normal_(net.net[-1].bias, std=0.2)
    return sde


G = 0.5


def _constant_g_sde(method: str = "euler_heun") -> MotionSDE:
    """Zero drift, g = G everywhere: y(t) = y0 + G (W(t) - W(t0))."""
    sde = MotionSDE(1, n_layers=1, method=method, dt=0.1, backend="reference")
    torch.nn.init.constant_(sde.diffusion.net[-1].bias, math.atanh(G))
    return sde


def _fixed_path(t0: float, t_end: float, rows: int, dim: int, seed: int) -> _FixedBrownian:
    knots = time_grid(t0, t0 + 0.1 * math.ceil((t_end - t0) / 0.1 + 1e-9), 0.1)
    steps = torch.randn(len(knots) - 1, rows, dim, generator=torch.Generator().manual_seed(seed)) * 0.1**0.5
    return _FixedBrownian(knots, torch.cat([torch.zeros(1, rows, dim), steps.cumsum(0)]))


_SOLVER_CASES = dict(
    method=st.sampled_from(["euler_heun", "euler"]),
    t0=st.sampled_from([1.0, 2.0, 4.0]),
    offsets=st.lists(st.floats(0.05, 1.3), min_size=1, max_size=4, unique=True),
)


def _solver_case(method: str, t0: float, offsets: list[float], path_seed: int):
    """(sde, times, y0 (2, 4, 3, 3), a Brownian path to times[-1] + 0.1, torchsde's view of the sde)."""
    sde = _randomised_sde(method)
    times = sorted(t0 + o for o in offsets)
    y0 = torch.randn(2, 4, 3, 3)
    bm = _fixed_path(t0, times[-1] + 0.1, 2, 36, seed=path_seed)
    wrapper = _TorchsdeWrapper(sde, (4, 3, 3), "stratonovich" if method == "euler_heun" else "ito")
    return sde, times, y0, bm, wrapper


@settings(max_examples=6, deadline=None)
@given(**_SOLVER_CASES)
def test_exact_grid_state_is_torchsde_solved_to_that_time_alone(method, t0, offsets):
    """Each query's state equals torchsde (float64 times, same path) asked for that time only."""
    sde, times, y0, bm, wrapper = _solver_case(method, t0, offsets, path_seed=0)
    ours = sde.solve(y0, t0, times, bm=bm)
    with torch.no_grad():
        for t, state in zip(times, ours):
            ts = torch.tensor([t0, t], dtype=torch.float64)
            theirs = torchsde.sdeint(wrapper, y0.flatten(1), ts, bm=bm, method=method, dt=sde.dt)[1]
            torch.testing.assert_close(state.flatten(1), theirs.float(), atol=2e-5, rtol=1e-5)


@settings(max_examples=6, deadline=None)
@given(**_SOLVER_CASES)
def test_torchsde_grid_matches_torchsde_with_float32_times(method, t0, offsets):
    """grid="torchsde": torchsde.sdeint's loop on float32 ts, interpolating between steps."""
    sde, times, y0, bm, wrapper = _solver_case(method, t0, offsets, path_seed=1)
    ours = sde.solve(y0, t0, times, bm=bm, grid="torchsde")
    ts = torch.tensor([t0, *times], dtype=torch.float32)
    with torch.no_grad():
        theirs = torchsde.sdeint(wrapper, y0.flatten(1), ts, bm=bm, method=method, dt=sde.dt)
    torch.testing.assert_close(ours.flatten(2), theirs[1:], atol=1e-6, rtol=1e-6)


def test_torchsde_grid_accumulates_float32_times():
    points, after = torchsde_grid(0.0, [3.0, 4.0], 0.1)
    assert points.dtype == torch.float32 and len(points) == 42 and after == [31, 41]
    assert float(points[30]) == pytest.approx(2.999999, abs=1e-6) and float(points[30]) < 3.0
    assert 0 < float(points[-1] - points[-2]) < 1e-5  # the extra tiny last step


@pytest.mark.parametrize("later", [[], [0.1], [1.0, 2.5]])
def test_off_grid_variance_does_not_depend_on_later_times(later):
    sde = _constant_g_sde()
    y0 = torch.zeros(20000, 1, 1, 1)
    with torch.no_grad():
        states = sde.solve(y0, 0.0, [0.05, *later], generator=torch.Generator().manual_seed(0))
    var = states[0].var().item()
    assert var == pytest.approx(G**2 * 0.05, rel=0.05)  # 4 standard errors of the sample variance


def test_bridge_joint_law_inside_one_step():
    """Two off-grid queries and the grid point after them: Cov(y(s), y(t)) = G^2 min(s, t)."""
    sde = _constant_g_sde()
    y0 = torch.zeros(20000, 1, 1, 1)
    times = [0.03, 0.07, 0.1]
    with torch.no_grad():
        states = sde.solve(y0, 0.0, times, noise=_RowNoise(list(range(20000)))).flatten(1)
    cov = states @ states.T / states.shape[1]
    expected = torch.tensor([[min(s, t) for t in times] for s in times]) * G**2
    torch.testing.assert_close(cov, expected, atol=0.003 * G**2 * 4, rtol=0)


@pytest.mark.parametrize("source", ["generator", "noise"])
def test_off_grid_queries_leave_the_main_path_unchanged(source):
    sde = _randomised_sde("euler_heun")
    y0 = torch.randn(3, 4, 2, 2)

    def solve(times):
        noise = dict(generator=torch.Generator().manual_seed(3)) if source == "generator" else dict(noise=_RowNoise([5, 6, 7]))
        return sde.solve(y0, 4.0, times, **noise)

    with torch.no_grad():
        alone = solve([4.3, 5.0])
        with_off_grid = solve([4.25, 4.3, 4.71, 5.0])
    assert torch.equal(alone[0], with_off_grid[1]) and torch.equal(alone[1], with_off_grid[3])


def test_addressable_noise_query_set_and_row_invariance():
    sde = _randomised_sde("euler_heun")
    y0 = torch.randn(3, 4, 2, 2)
    with torch.no_grad():
        alone = sde.solve(y0, 4.0, [4.25], noise=_RowNoise([5, 6, 7]))
        more = sde.solve(y0, 4.0, [4.22, 4.25, 4.27, 5.0, 6.33], noise=_RowNoise([5, 6, 7]))
        fewer_rows = sde.solve(y0[:2], 4.0, [4.27, 6.33], noise=_RowNoise([5, 6]))
    assert torch.equal(alone[0], more[1])
    torch.testing.assert_close(fewer_rows[0], more[2, :2], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(fewer_rows[1], more[4, :2], atol=1e-6, rtol=1e-6)


def test_noise_keys_follow_the_contract():
    sde = _randomised_sde("euler_heun")
    noise = _RowNoise([0])
    with torch.no_grad():
        sde.solve(torch.zeros(1, 4, 2, 2), 0.0, [0.2, 0.25], noise=noise)
    assert noise.keys[:2] == [(0, 0), (0, 1)]
    bridge = noise.keys[3:]
    assert noise.keys[2] == (0, 2) and len(bridge) == brownian.BRIDGE_DEPTH + 1
    assert all(key[:2] == (1, 2) for key in bridge) and len(set(bridge)) == len(bridge)


def _reference_philox_normal(shape, seed, offset, device=None, dtype=torch.float32):
    """What the reference backend's in-op noise draws for (seed, offset), at dt = 1."""
    return ops.reference.brownian_increment(torch.empty(shape, device=device, dtype=dtype), 1.0, seed, offset)


def test_in_op_noise_off_grid_side_steps(monkeypatch):
    """seed=: the bridge regenerates the in-op increment (its grid point after agrees with it)."""
    monkeypatch.setattr(ops, "philox_normal", _reference_philox_normal, raising=False)
    sde = _constant_g_sde()
    y0 = torch.zeros(20000, 1, 1, 1)
    with torch.no_grad():
        alone = sde.solve(y0, 0.0, [0.1, 0.2], seed=4)
        states = sde.solve(y0, 0.0, [0.03, 0.1, 0.15, 0.2], seed=4)
        again = sde.solve(y0, 0.0, [0.15], seed=4)
    assert torch.equal(alone, states[[1, 3]]) and torch.equal(again[0], states[2])
    flat = states.flatten(1)
    cov = flat @ flat.T / flat.shape[1]
    times = [0.03, 0.1, 0.15, 0.2]
    expected = torch.tensor([[min(s, t) for t in times] for s in times]) * G**2
    torch.testing.assert_close(cov, expected, atol=0.004 * G**2 * 4, rtol=0)


@pytest.mark.skipif(not hasattr(ops, "philox_normal"), reason="needs stdiff.ops.philox_normal (kernels branch)")
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_philox_normal_regenerates_the_in_op_increment(device):
    """With constant g the in-op step is y + G dW: philox_normal must give the same dW / sqrt(dt)."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    sde = _constant_g_sde().to(device)
    sde.backend = "auto"
    y0 = torch.zeros(64, 1, 4, 4, device=device)
    with torch.no_grad():
        main = sde.solve(y0, 0.0, [0.1, 0.2], seed=9)
        with_bridge = sde.solve(y0, 0.0, [0.1, 0.15, 0.2], seed=9)
    z = ops.philox_normal(tuple(y0.shape), 9, 1, device=device)
    torch.testing.assert_close(main[1] - main[0], G * 0.1**0.5 * z, atol=1e-5, rtol=1e-5)
    assert torch.equal(main, with_bridge[[0, 2]])
    side = (with_bridge[1] - with_bridge[0]) / G  # W(0.15) - W(0.1) given dW: mean dW / 2, variance 0.1 / 4
    assert (side - 0.5 * 0.1**0.5 * z).std().item() == pytest.approx(0.025**0.5, rel=0.2)


def test_on_grid_query_hits_step_exactly():
    sde = _randomised_sde("euler_heun")
    y0 = torch.randn(1, 4, 2, 2)
    bm = _fixed_path(4.0, 6.0, 1, 16, seed=3)
    both = sde.solve(y0, 4.0, [5.0, 6.0], bm=bm)
    first = sde.solve(y0, 4.0, [5.0], bm=bm)
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


def test_solver_gradients_flow_and_bad_arguments_raise():
    sde = _randomised_sde("euler_heun")
    y0 = torch.randn(1, 4, 2, 2, requires_grad=True)
    sde.solve(y0, 0.0, [0.35], generator=torch.Generator().manual_seed(0)).sum().backward()
    assert y0.grad is not None and sde.drift.net[0].weight.grad is not None
    with pytest.raises(ValueError, match="strictly increasing"):
        sde.solve(y0, 1.0, [2.0, 1.5])
    with pytest.raises(ValueError, match="grid must be one of"):
        sde.solve(y0, 0.0, [1.0], grid="float32")
    with pytest.raises(ValueError, match="at most one of generator, noise, seed, bm; got noise, seed"):
        sde.solve(y0, 0.0, [1.0], noise=_RowNoise([0]), seed=1)
    with pytest.raises(ValueError, match=r"bm\(ta, tb\) must return a tensor with 16 elements"):
        sde.solve(y0, 0.0, [1.0], bm=lambda ta, tb: torch.zeros(3))
    with pytest.raises(TypeError, match="noise must have a randn"):
        sde.solve(y0, 0.0, [1.0], noise=torch.Generator())
