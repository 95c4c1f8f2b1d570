"""The CUDA kernels (backend "cuda") against the reference and against the CPU kernels. GPU only.

fp32/fp64: close to the reference; bf16/fp16: the error vs an fp64 truth is at most twice the
error of PyTorch's own computation in that dtype; the in-op Philox noise is bit-identical to the
CPU kernels' for the same (seed, offset, element). Memory checking:
``compute-sanitizer --tool memcheck python -m pytest tests/test_ops_cuda.py -q -x`` (and
``--tool racecheck``).
"""
from __future__ import annotations

import pytest
import torch

from stdiff.ops import _compiled as C
from stdiff.ops import reference as R

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

if torch.cuda.is_available():
    _OK, _REASON = C.is_available("cuda")
    if not _OK:
        pytest.skip(f"CUDA kernels unavailable: {_REASON}", allow_module_level=True)

STD = torch.ops.stdiff
DEV = "cuda"
CASES = [
    ("convgru_gates", {}),
    ("convgru_update", {}),
    ("convgru_update", {"standard": True}),
    ("spade_norm", {}),
    ("spade_norm", {"bias": True}),
    ("sde_step", {}),
    ("sde_step", {"heun": True, "raw": True}),
    ("sde_step", {"heun": True, "raw": True, "noise": True}),
    ("sde_predict", {"raw": True}),
    ("sde_predict", {"noise": True}),
]
# (N, C, H, W): preset sites, odd sizes (scalar path), rows > 16384 (loop kernel), one-element rows
SHAPES = [(2, 256, 16, 16), (1, 128, 64, 64), (2, 3, 5, 7), (1, 5, 1, 1), (1, 2, 128, 128), (1, 3, 131, 129),
          (3, 512, 4, 4), (2, 70, 9, 9)]


def _inputs(name, shape, dtype, **flags):
    n, c, h, w = shape
    r = lambda *s: torch.randn(*s, dtype=dtype, device=DEV)  # noqa: E731
    if name == "convgru_gates":
        return [r(n, 2 * c, h, w), r(n, 2 * c, h, w), r(n, c, h, w)]
    if name == "convgru_update":
        return [r(n, c, h, w), r(n, c, h, w), torch.rand(n, c, h, w, dtype=dtype, device=DEV), r(n, c, h, w)]
    if name == "spade_norm":
        return [r(n, c, h, w) * 3 + 1, r(n, c, h, w), r(n, c, h, w), r(n, c) if flags.get("bias") else None]
    dw = None if flags.get("noise") else r(n, c, h, w)
    if name == "sde_step":
        gp = r(n, c, h, w) if flags.get("heun") else None
        return [r(n, c, h, w), r(n, c, h, w), r(n, c, h, w), dw, 0.1, gp, flags.get("raw", False)]
    return [r(n, c, h, w), r(n, c, h, w), dw, 0.1, flags.get("raw", False)]


def _call(module, name, args, flags):
    if name == "convgru_update":
        return module.convgru_update(*args, standard=flags.get("standard", False))
    kwargs = {"seed": 11, "offset": 3} if flags.get("noise") else {}
    return getattr(module, name)(*args, **kwargs)


def _tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _fwd_bwd(module, name, args, flags, upstream=None):
    """(outputs, input grads) of one call; upstream grads are drawn when not given."""
    leaves = [a.detach().clone().requires_grad_(True) if isinstance(a, torch.Tensor) else a for a in args]
    outs = _tuple(_call(module, name, leaves, flags))
    if upstream is None:
        upstream = [torch.randn_like(o) for o in outs]
    tensors = [a for a in leaves if isinstance(a, torch.Tensor)]
    grads = torch.autograd.grad(outs, tensors, upstream)
    return [o.detach() for o in outs], list(grads), upstream


def test_noise_is_philox_normal_on_both_devices():
    """The op contract's noise: the CUDA kernels and the reference's PyTorch Philox (on CUDA
    tensors too) draw bit for bit ``stdiff.ops.philox_normal``, with offset a stream id."""
    from stdiff import ops

    for seed, offset in ((0, 0), (987654321, 2**33 + 5), (2**63 - 1, 7)):
        want = ops.philox_normal((3, 5, 7, 11), seed, offset)
        y = torch.zeros(3, 5, 7, 11, device=DEV)
        gpu = C.sde_predict(y, torch.ones_like(y), None, 1.0, seed=seed, offset=offset)
        assert torch.equal(gpu.cpu(), want)
        assert torch.equal(ops.philox_normal((3, 5, 7, 11), seed, offset, device=DEV).cpu(), want)


def _cpu_noise_args(args):
    return [a.cpu() if isinstance(a, torch.Tensor) else a for a in args]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name, flags", CASES)
def test_fp32_and_fp64_match_reference(name, flags, shape):
    for dtype, tol in ((torch.float32, 2e-5), (torch.float64, 1e-10)):
        args = _inputs(name, shape, dtype, **flags)
        if flags.get("noise"):  # the reference draws other noise: compare with the CPU kernels instead
            want_out, want_grads, up = _fwd_bwd(C, name, _cpu_noise_args(args), flags)
            up = [u.to(DEV) for u in up]
        else:
            want_out, want_grads, up = _fwd_bwd(R, name, args, flags)
        got_out, got_grads, _ = _fwd_bwd(C, name, args, flags, up)
        for got, want in zip(got_out + got_grads, want_out + want_grads):
            torch.testing.assert_close(got.cpu(), want.cpu(), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name, flags", [c for c in CASES if not c[1].get("noise")])
def test_low_precision_error_at_most_twice_pytorch(name, flags, dtype):
    args = _inputs(name, (4, 64, 16, 16), torch.float32, **flags)
    low = [a.to(dtype) if isinstance(a, torch.Tensor) else a for a in args]
    truth = [a.double() if isinstance(a, torch.Tensor) else a for a in low]
    t_out, t_grads, up = _fwd_bwd(R, name, truth, flags)
    up_low = [u.to(dtype) for u in up]
    ours_out, ours_grads, _ = _fwd_bwd(C, name, low, flags, up_low)
    torch_out, torch_grads, _ = _fwd_bwd(R, name, low, flags, up_low)
    for ours, theirs, want in zip(ours_out + ours_grads, torch_out + torch_grads, t_out + t_grads):
        assert ours.dtype == dtype
        err_ours = (ours.double() - want).abs().max().item()
        err_torch = (theirs.double() - want).abs().max().item()
        assert err_ours <= 2 * err_torch + 1e-6, (err_ours, err_torch)


@pytest.mark.parametrize("layout", ["channels_last", "strided"])
@pytest.mark.parametrize("name, flags", [c for c in CASES if not c[1].get("noise")])
def test_non_contiguous_inputs(name, flags, layout):
    args = _inputs(name, (2, 40, 6, 5), torch.float32, **flags)
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor) and a.dim() == 4:
            if layout == "channels_last":
                args[i] = a.contiguous(memory_format=torch.channels_last)
            else:
                wide = torch.zeros(*a.shape[:-1], 2 * a.shape[-1], device=DEV)
                wide[..., ::2] = a
                args[i] = wide[..., ::2]
    want_out, want_grads, up = _fwd_bwd(R, name, args, flags)
    got_out, got_grads, _ = _fwd_bwd(C, name, args, flags, up)
    for got, want in zip(got_out + got_grads, want_out + want_grads):
        torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("start", [0, 1, 2, 3])
def test_noise_identical_to_cpu(dtype, start):
    """Same (seed, offset, index) -> the same bits on both devices, for every pack width/alignment."""
    n = 4099 + start
    for seed, offset in ((0, 0), (987654321, 2**33 + 5)):
        y = torch.zeros(n, dtype=dtype)
        cpu = C.sde_predict(y[start:], torch.ones_like(y[start:]), None, 1.0, seed=seed, offset=offset)
        yd = y.to(DEV)
        gpu = C.sde_predict(yd[start:], torch.ones_like(yd[start:]), None, 1.0, seed=seed, offset=offset)
        assert torch.equal(gpu.cpu(), cpu)
        step = C.sde_step(yd, torch.zeros_like(yd), torch.ones_like(yd), None, 0.25, seed=seed, offset=offset)
        assert torch.equal(step.cpu(), C.sde_step(y, torch.zeros_like(y), torch.ones_like(y), None, 0.25, seed=seed,
                                                  offset=offset))


def test_opcheck_every_op():
    x = lambda *s: torch.randn(*s, dtype=torch.float64, device=DEV)  # noqa: E731
    g = lambda *s: x(*s).requires_grad_(True)  # noqa: E731
    cl = torch.channels_last
    samples = [
        (STD.convgru_gates, (g(2, 6, 3, 4), g(2, 6, 3, 4), g(2, 3, 3, 4))),
        (STD.convgru_gates_backward, (x(2, 3, 3, 4), x(2, 3, 3, 4), x(2, 3, 3, 4), x(2, 6, 3, 4), x(2, 6, 3, 4), x(2, 3, 3, 4))),
        (STD.convgru_update, (g(2, 3, 4, 4), g(2, 3, 4, 4), g(2, 3, 4, 4), g(2, 3, 4, 4), False)),
        (STD.convgru_update_backward, (x(2, 3, 4, 4), x(2, 3, 4, 4), x(2, 3, 4, 4), x(2, 3, 4, 4), x(2, 3, 4, 4), True)),
        (STD.spade_norm, (g(2, 3, 4, 5), g(2, 3, 4, 5), g(2, 3, 4, 5), g(2, 3), 1e-5)),
        (STD.spade_norm, tuple(t.contiguous(memory_format=cl) for t in (g(2, 3, 4, 5), g(2, 3, 4, 5), g(2, 3, 4, 5))) + (None, 1e-5)),
        (STD.spade_norm_backward, (x(2, 3, 4, 5), x(2, 3, 4, 5), x(2, 3, 4, 5), 1e-5, [True, False, True])),
        (STD.sde_step, (g(3, 5), g(3, 5), g(3, 5), None, 0.1, g(3, 5), True, 7, 2)),
        (STD.sde_step_backward, (x(3, 5), x(3, 5), x(3, 5), 0.1, None, False, None, 0, [True, True, False, True])),
        (STD.sde_predict, (g(3, 5), g(3, 5), g(3, 5), None, True, None, 0)),
        (STD.sde_predict_backward, (x(3, 5), x(3, 5), None, 0.1, True, 7, 2, [True, False])),
    ]
    for op, args in samples:
        torch.library.opcheck(op, args)


def test_gradcheck_float64():
    r = lambda *s: torch.randn(*s, dtype=torch.float64, device=DEV, requires_grad=True)  # noqa: E731
    assert torch.autograd.gradcheck(C.spade_norm, (r(2, 3, 4, 5), r(2, 3, 4, 5), r(2, 3, 4, 5), r(2, 3)))
    assert torch.autograd.gradcheck(C.convgru_gates, (r(2, 6, 3, 3), r(2, 6, 3, 3), r(2, 3, 3, 3)))
    assert torch.autograd.gradcheck(lambda y, f, g: C.sde_step(y, f, g, None, 0.1, None, True, seed=5), (r(9), r(9), r(9)))


def test_cuda_graph_replay_matches_eager():
    """A fixed-step SDE solve with in-op noise is capturable and replays exactly."""
    y0 = torch.randn(4, 256, 16, 16, device=DEV)
    f, g = torch.randn_like(y0), torch.randn_like(y0)

    def solve(y):
        for k in range(5):
            yp = C.sde_predict(y, g, None, 0.1, g_is_raw=True, seed=1, offset=k)
            y = C.sde_step(y, f, g, None, 0.1, g_pred=yp, g_is_raw=True, seed=1, offset=k)
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
