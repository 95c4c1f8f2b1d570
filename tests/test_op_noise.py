"""The in-op Philox noise of the SDE ops (``dW=None``) on every available backend and device.

Element ``i`` of the increment is ``sqrt(dt)`` times the normal of counter ``i`` of the
Philox4x32-10 stream (seed, offset): checked bitwise against an independent NumPy implementation
of csrc/philox.h, for reproducibility, layout independence, statistics, the predictor/corrector/
backward sharing one draw, and CPU/GPU bit equality. tests/test_noise_contract.py checks the same
contract through ``stdiff.ops.philox_normal`` and the SDE solver.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from op_harness import TARGETS

from stdiff import ops

NOISY = [t for t in TARGETS if t[0] != "reference" or t[1] == "cpu"]
ids = [f"{b}-{d}" for b, d in NOISY]
GPU = [t for t in TARGETS if t[1] == "cuda" and t[0] != "reference"]


def _noise(backend: str, device: str, shape, seed: int, offset: int = 0, dt: float = 1.0,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The op's Brownian increment for (seed, offset): the predictor with y = 0 and g = 1."""
    y = torch.zeros(shape, device=device, dtype=dtype)
    return ops.sde_predict(y, torch.ones_like(y), None, dt=dt, seed=seed, offset=offset, backend=backend)


# ---------------------------------------------------------------------------- the NumPy spec
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



@pytest.mark.parametrize("backend, device", NOISY, ids=ids)
@pytest.mark.parametrize("seed, offset", [(0, 0), (123456789, 5), (2**40 + 7, 2**33 + 1)])
def test_noise_matches_numpy_spec_bitwise(backend, device, seed, offset):
    got = _noise(backend, device, (4099,), seed, offset).cpu().numpy()
    np.testing.assert_array_equal(got, _numpy_normals(seed, offset, 4099))


@pytest.mark.parametrize("backend, device", NOISY, ids=ids)
def test_noise_is_a_reproducible_counter_stream(backend, device):
    """Equal (seed, offset) give equal noise; element i is counter i of stream (seed, offset); the
    next offset is a new stream, not this one shifted; both words of seed and offset are used;
    the thread count does not matter; any layout draws in logical order."""
    a = _noise(backend, device, (50_001,), 3, 9)
    assert torch.equal(a, _noise(backend, device, (50_001,), 3, 9))
    assert torch.equal(_noise(backend, device, (1_003,), 3, 9), a[:1_003])
    assert torch.equal(_noise(backend, device, (2, 3, 5, 7), 3, 9).flatten(), a[:210])
    assert not torch.equal(_noise(backend, device, (1_003,), 3, 10), a[:1_003])
    assert not torch.equal(_noise(backend, device, (1_003,), 4, 9), a[:1_003])
    following = _noise(backend, device, (300,), 3, 10)
    for shift in (1, -1):
        assert not torch.equal(following, a[:300].roll(shift))
    low, high = _noise(backend, device, (64,), 3, 2**32 - 1), _noise(backend, device, (64,), 3, 2**32)
    assert not torch.equal(low, high)
    big = _noise(backend, device, (1000,), 2**62 + 5, 2**62)
    assert torch.equal(big, ops.philox_normal((1000,), 2**62 + 5, 2**62, device=device))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(_noise(backend, device, (50_001,), 3, 9), a)
    finally:
        torch.set_num_threads(threads)
    y = torch.zeros(2, 3, 4, 5, device=device)
    ycl = y.contiguous(memory_format=torch.channels_last)
    kwargs = dict(dt=1.0, seed=3, offset=9, backend=backend)
    z = ops.sde_predict(y, torch.ones_like(y), None, **kwargs)
    zcl = ops.sde_predict(ycl, torch.ones_like(ycl), None, **kwargs)
    assert torch.equal(z.flatten(), a[:120]) and torch.equal(zcl, z)


@pytest.mark.parametrize("backend, device", NOISY, ids=ids)
def test_noise_statistics(backend, device):
    n = 1 << 20 if backend != "triton" or device == "cuda" else 1 << 16
    z = _noise(backend, device, (n,), 11, 0).double().cpu()
    assert abs(z.mean().item()) < 5 / math.sqrt(n)
    assert abs(z.var().item() - 1) < 5 * math.sqrt(2 / n)
    assert abs(((z**4).mean() / z.var() ** 2).item() - 3) < 5 * math.sqrt(24 / n)  # kurtosis of a normal
    # Kolmogorov-Smirnov distance to N(0, 1) (critical value at alpha = 1e-3: 1.95 / sqrt(n))
    s = torch.sort(z).values
    cdf = torch.special.ndtr(s)
    grid = torch.arange(1, n + 1, dtype=torch.float64) / n
    assert torch.maximum(grid - cdf, cdf - (grid - 1 / n)).max().item() < 1.95 / math.sqrt(n)
    # independence: neighbouring elements, Philox lanes, offsets and seeds
    bound = 5 / math.sqrt(n)
    for lag in (1, 2, 3, 4, 5):
        assert abs(torch.corrcoef(torch.stack([z[:-lag], z[lag:]]))[0, 1].item()) < bound
    for other in (_noise(backend, device, (n,), 11, 1), _noise(backend, device, (n,), 12, 0)):
        assert abs(torch.corrcoef(torch.stack([z, other.double().cpu()]))[0, 1].item()) < bound
    assert abs(torch.corrcoef(torch.stack([z**2, z.roll(1) ** 2]))[0, 1].item()) < bound


@pytest.mark.parametrize("backend, device", NOISY, ids=ids)
def test_step_noise_is_sqrt_dt_times_normal_and_backward_regenerates_it(backend, device):
    n, dt = 1_001, 0.04
    z = _noise(backend, device, (n,), 5, 2)
    y, f = torch.zeros(n, device=device), torch.zeros(n, device=device)
    g = torch.ones(n, device=device, requires_grad=True)
    out = ops.sde_step(y, f, g, None, dt, seed=5, offset=2, backend=backend)
    assert torch.equal(out, torch.tensor(math.sqrt(dt), dtype=torch.float32, device=device) * z)
    out.sum().backward()
    assert torch.equal(g.grad, out.detach())
    assert torch.equal(_noise(backend, device, (n,), 5, 2, dtype=torch.float64), z.double())


@pytest.mark.parametrize("backend, device", NOISY, ids=ids)
def test_predictor_corrector_and_backward_share_one_draw(backend, device):
    """sde_predict and sde_step with equal (seed, offset) use the same increment, and the step's
    gradients are those of the step with that increment given as dW."""
    shape, dt, seed, offset = (2, 4, 3, 3), 0.1, 99, 1000
    w = _noise(backend, device, shape, seed, offset, dt)
    gen = torch.Generator().manual_seed(0)
    y, f, g, gp = (torch.randn(shape, generator=gen).to(device).requires_grad_(True) for _ in range(4))
    pred = ops.sde_predict(y, g, None, dt=dt, g_is_raw=True, seed=seed, offset=offset, backend=backend)
    torch.testing.assert_close(pred, y + torch.tanh(g) * w, atol=1e-6, rtol=1e-6)
    drawn = ops.sde_step(y, f, g, None, dt, gp, True, seed=seed, offset=offset, backend=backend)
    given = ops.sde_step(y, f, g, w, dt, gp, True, backend="reference")
    torch.testing.assert_close(drawn, given, atol=1e-6, rtol=1e-6)
    weights = torch.randn(shape, generator=gen).to(device)
    for a, b in zip(torch.autograd.grad(drawn, (y, f, g, gp), weights), torch.autograd.grad(given, (y, f, g, gp), weights)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------- GPU: same bits as the CPU
@pytest.mark.skipif(not GPU, reason="needs CUDA kernels")
@pytest.mark.parametrize("backend", [b for b, _ in GPU] or ["cuda"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("start", [0, 1, 2, 3])
def test_noise_identical_to_cpu(backend, dtype, start):
    """Same (seed, offset, index) -> the same bits on both devices, for every pack width/alignment."""
    n = 4099 + start
    for seed, offset in ((0, 0), (987654321, 2**33 + 5)):
        y = torch.zeros(n, dtype=dtype)
        cpu = ops.sde_predict(y[start:], torch.ones_like(y[start:]), None, 1.0, seed=seed, offset=offset, backend="reference")
        yd = y.to("cuda")
        gpu = ops.sde_predict(yd[start:], torch.ones_like(yd[start:]), None, 1.0, seed=seed, offset=offset, backend=backend)
        assert torch.equal(gpu.cpu(), cpu)
        step = ops.sde_step(yd, torch.zeros_like(yd), torch.ones_like(yd), None, 0.25, seed=seed, offset=offset,
                            backend=backend)
        want = ops.sde_step(y, torch.zeros_like(y), torch.ones_like(y), None, 0.25, seed=seed, offset=offset,
                            backend="reference")
        assert torch.equal(step.cpu(), want)


@pytest.mark.skipif(not any(b == "cuda" for b, _ in GPU), reason="needs the CUDA kernels")
def test_cuda_graph_replay_matches_eager():
    """A fixed-step SDE solve with in-op noise is capturable and replays exactly."""
    y0 = torch.randn(4, 256, 16, 16, device="cuda")
    f, g = torch.randn_like(y0), torch.randn_like(y0)

    def solve(y):
        for k in range(5):
            yp = ops.sde_predict(y, g, None, 0.1, g_is_raw=True, seed=1, offset=k, backend="cuda")
            y = ops.sde_step(y, f, g, None, 0.1, g_pred=yp, g_is_raw=True, seed=1, offset=k, backend="cuda")
        return y

    static_in = y0.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        solve(static_in)  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = solve(static_in)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(static_out, solve(y0))
