"""The noise contract of the SDE ops, on every available backend and device.

``dW=None`` draws ``sqrt(dt) * philox_normal(shape, seed, offset)``: element ``i`` (row-major)
is counter ``i`` of the Philox4x32-10 stream (seed, offset), ``offset`` a stream id. Checked:
bitwise agreement of every backend with ``stdiff.ops.philox_normal`` (float32), and, through the
SDE solver, that the per-step increments are iid N(0, g^2 dt) (the Triton backend used to
shift the same normals by one element per step).
"""
from __future__ import annotations

import math

import pytest
import torch

from op_harness import TARGETS  # (backend, device) pairs that can run here

from stdiff import ops
from stdiff.models.sde import MotionSDE


ids = [f"{b}-{d}" for b, d in TARGETS]


def _in_op_normals(backend: str, device: str, shape, seed: int, offset: int, channels_last: bool = False):
    """The op's N(0, 1) draws: the predictor with y = 0, g = 1, dt = 1."""
    y = torch.zeros(shape, device=device)
    if channels_last:
        y = y.to(memory_format=torch.channels_last)
    return ops.sde_predict(y, torch.ones_like(y), None, dt=1.0, seed=seed, offset=offset, backend=backend)


@pytest.mark.parametrize("backend, device", TARGETS, ids=ids)
@pytest.mark.parametrize("seed, offset", [(0, 0), (123456789, 5), (2**40 + 7, 2**33 + 1), (2**63 - 1, 2**32 - 1)])
def test_every_backend_draws_philox_normal_bitwise(backend, device, seed, offset):
    shape = (2, 3, 7, 9)  # 378 elements: not a multiple of the 4 lanes of a Philox block
    want = ops.philox_normal(shape, seed, offset, device=device)
    for channels_last in (False, True):  # noise follows the logical index, whatever the layout
        got = _in_op_normals(backend, device, shape, seed, offset, channels_last)
        assert torch.equal(got, want), f"{backend} on {device}, channels_last={channels_last}"


@pytest.mark.parametrize("backend, device", TARGETS, ids=ids)
def test_step_increment_is_sqrt_dt_times_philox_normal(backend, device):
    shape, dt, seed, offset = (3, 5, 4, 4), 0.0625, 17, 3
    y = torch.randn(shape, device=device)
    f, g = torch.zeros_like(y), torch.ones_like(y)
    step = ops.sde_step(y, f, g, None, dt, seed=seed, offset=offset, backend=backend)
    want = ops.philox_normal(shape, seed, offset, device=device) * math.sqrt(dt)
    torch.testing.assert_close(step - y, want, atol=1e-6, rtol=0)


def test_philox_normal_is_a_counter_stream():
    a = ops.philox_normal((1000,), 7, 11)
    assert torch.equal(ops.philox_normal((10, 100), 7, 11).flatten(), a)
    assert torch.equal(ops.philox_normal((37,), 7, 11), a[:37])  # element i depends on (seed, offset, i) only
    assert ops.philox_normal((2, 3), 7, 11, dtype=torch.float64).dtype == torch.float64
    n = 1 << 16
    z = ops.philox_normal((n,), 1234, 0).double()
    assert abs(z.mean().item()) < 5 / math.sqrt(n) and abs(z.var().item() - 1) < 5 * math.sqrt(2 / n)
    for other in (ops.philox_normal((n,), 1234, 1), ops.philox_normal((n,), 1235, 0)):
        other = other.double()
        for shift in (0, 1, -1):  # streams of different offsets or seeds are not shifted copies
            corr = torch.corrcoef(torch.stack([z, other.roll(shift)]))[0, 1].item()
            assert abs(corr) < 5 / math.sqrt(n)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(shape=4, seed=0, offset=0), TypeError, "shape"),
        (dict(shape=(2, -1), seed=0, offset=0), ValueError, "shape"),
        (dict(shape=(2,), seed=-1, offset=0), ValueError, "seed"),
        (dict(shape=(2,), seed=0, offset=1.5), TypeError, "offset"),
        (dict(shape=(2,), seed=0, offset=0, dtype=torch.int32), TypeError, "dtype"),
    ],
)
def test_philox_normal_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        ops.philox_normal(**kwargs)


def _constant_g_sde(backend: str, device: str, method: str, g_raw: float, dt: float) -> MotionSDE:
    """A random motion SDE with zero drift and constant diffusion tanh(g_raw): y_{k+1} - y_k = g dW."""
    torch.manual_seed(0)
    sde = MotionSDE(4, n_layers=1, method=method, dt=dt, backend=backend).to(device)
    with torch.no_grad():
        for net, bias in ((sde.drift, 0.0), (sde.diffusion, g_raw)):
            net.net[-1].weight.zero_()
            net.net[-1].bias.fill_(bias)
    return sde


@pytest.mark.parametrize("method", ["euler", "euler_heun"])
@pytest.mark.parametrize("backend, device", TARGETS, ids=ids)
def test_solver_in_op_increments_are_iid_normal(backend, device, method):
    dt, steps, g_raw = 0.1, 8, 0.5
    sde = _constant_g_sde(backend, device, method, g_raw, dt)
    y0 = torch.randn(2, 4, 16, 16, device=device)
    with torch.no_grad():
        states = sde.solve(y0, 0.0, [k * dt for k in range(1, steps + 1)], seed=2024)
    path = torch.cat([y0[None], states]).flatten(1).double().cpu()
    z = (path[1:] - path[:-1]) / (math.tanh(g_raw) * math.sqrt(dt))  # (steps, elements), iid N(0, 1)
    n = z.numel()
    assert abs(z.mean().item()) < 5 / math.sqrt(n)
    assert abs(z.var().item() - 1) < 5 * math.sqrt(2 / n), "variance of the increments is not g^2 dt"
    per_step = z.var(dim=1)
    assert (per_step - 1).abs().max().item() < 5 * math.sqrt(2 / z.shape[1])
    pairs = (steps - 1) * z.shape[1]
    for shift in (0, 1, -1, 4):  # step k vs step k + 1, same element and shifted ones
        a, b = z[:-1], z[1:].roll(shift, dims=1)
        corr = torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()
        assert abs(corr) < 5 / math.sqrt(pairs), f"steps k and k+1 correlate at shift {shift}: {corr:.4f}"
    within = torch.corrcoef(torch.stack([z.flatten(), z.roll(1, dims=1).flatten()]))[0, 1].item()
    assert abs(within) < 5 / math.sqrt(n)
