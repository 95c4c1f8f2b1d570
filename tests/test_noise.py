"""stdiff.noise.NoiseStreams (addressable per-row normals) and the sampling loop's use of them."""
from __future__ import annotations

import math

import pytest
import torch

from stdiff.noise import NoiseStreams, _combine, _mix, _signed
from stdiff.pipeline import denoise_frames
from stdiff.sampling import make_sampler


def _python_normals(seed: int, key: tuple[int, ...], count: int) -> list[float]:
    """The documented generator in plain python integers (exact 64-bit arithmetic)."""
    h = seed
    for k in key:
        h = _combine(h, k)
    out = []
    for i in range(1, count + 1):
        bits = _mix(h + i * 0x9E3779B97F4A7C15)
        u1 = ((bits >> 32) + 1) * 2.0**-32
        u2 = (bits & 0xFFFFFFFF) * 2.0**-32
        out.append(math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2))
    return out


def test_tensor_generator_equals_the_python_definition():
    streams = NoiseStreams([0, 2**64 - 1, 12345])
    got = streams.randn((2, 7, -1), (5, 3), dtype=torch.float64)
    for row, seed in enumerate(streams.seeds):
        assert got[row].flatten().tolist() == pytest.approx(_python_normals(seed, (2, 7, -1), 15), abs=1e-12)
    assert _signed(2**64 - 1) == -1


def test_rows_are_addressable_and_prefix_stable():
    eight = NoiseStreams.for_videos(5, 3, 8)
    four = NoiseStreams.for_videos(5, 2, 4)
    assert len(eight) == 24 and len(four) == 8
    a = eight.randn((0, 3), (2, 4, 4)).view(3, 8, 2, 4, 4)
    b = four.randn((0, 3), (2, 4, 4)).view(2, 4, 2, 4, 4)
    assert torch.equal(a[:2, :4], b)
    assert torch.equal(eight.randn((0, 3), (2, 4, 4)), eight.randn((0, 3), (2, 4, 4)))   # deterministic
    assert not torch.equal(eight.randn((0, 3), (8,)), eight.randn((0, 4), (8,)))        # keys differ
    assert not torch.equal(NoiseStreams.for_videos(6, 3, 8).randn((0, 3), (8,)), eight.randn((0, 3), (8,)))


def test_standard_normal_and_independent():
    streams = NoiseStreams.for_videos(0, 4, 4)
    z = streams.randn((2, 1, 0), (4096,), dtype=torch.float64)
    w = streams.randn((2, 1, 1), (4096,), dtype=torch.float64)
    n = z.numel()
    assert abs(z.mean()) < 4 / math.sqrt(n) and abs(z.var() - 1) < 6 * math.sqrt(2 / n)
    assert abs(((z**4).mean() - 3)) < 0.15                                                # Gaussian kurtosis
    for x, y in ((z, w), (z[:-1], z[1:]), (z[:, :-1], z[:, 1:])):                         # keys, rows, elements
        assert abs(torch.corrcoef(torch.stack([x.flatten(), y.flatten()]))[0, 1]) < 4 / math.sqrt(x.numel())
    assert z.abs().max() < 7


def test_dtype_shape_device_and_errors():
    streams = NoiseStreams([1, 2], "cpu")
    z = streams.randn((0,), (3, 2), dtype=torch.float16)
    assert z.shape == (2, 3, 2) and z.dtype == torch.float16 and z.device.type == "cpu"
    assert streams.randn((0,), ()).shape == (2,)
    with pytest.raises(ValueError, match="seeds must be a non-empty sequence"):
        NoiseStreams([])
    with pytest.raises(TypeError, match="seeds must hold only ints"):
        NoiseStreams([1.5])
    with pytest.raises(TypeError, match="key must be a tuple of ints"):
        streams.randn([0], (3,))
    with pytest.raises(ValueError, match="num_samples must be an int >= 1"):
        NoiseStreams.for_videos(0, 1, 0)
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        NoiseStreams.for_videos(-1, 1, 1)
    g = NoiseStreams.from_generator(torch.Generator().manual_seed(0), 3)
    assert g.seeds == NoiseStreams.from_generator(torch.Generator().manual_seed(0), 3).seeds and len(g) == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_draws_equal_cpu_draws():
    cpu = NoiseStreams.for_videos(9, 2, 3).randn((2, 4, 5), (3, 16, 16))
    cuda = NoiseStreams.for_videos(9, 2, 3, "cuda").randn((2, 4, 5), (3, 16, 16))
    assert cuda.device.type == "cuda"
    torch.testing.assert_close(cuda.cpu(), cpu, atol=1e-6, rtol=0)


class _LinearDenoiser:
    """eps = 0.1 x + 0.2 cond + motion mean: deterministic, uses every input."""

    def condition(self, motion: torch.Tensor) -> torch.Tensor:
        return motion.mean(dim=(1, 2, 3))[:, None, None, None]

    def __call__(self, x, t, cond, shift):
        return 0.1 * x + 0.2 * cond + shift


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp"])
def test_loop_frames_do_not_depend_on_later_times_or_other_rows(sampler):
    """The diffusion half of query-set invariance: adding a later time, or more rows, leaves frames unchanged."""
    kw = {"eta": 1.0} if sampler == "ddim" else {}
    motion = torch.randn(3, 4, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    prev = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(1)) * 2 - 1
    streams = NoiseStreams.for_videos(2, 2, 2)

    def run(times, rows):
        return denoise_frames(_LinearDenoiser(), make_sampler(sampler, 4, **kw), motion[:len(times), :rows],
                              prev[:rows], NoiseStreams(streams.seeds[:rows]), times)

    full = run([3.0, 3.5, 4.0], 4)
    assert full.shape == (4, 3, 1, 4, 4) and full.abs().max() <= 1
    assert torch.equal(run([3.0, 3.5], 4), full[:, :2])
    assert torch.equal(run([3.0, 3.5, 4.0], 2), full[:2])
    assert not torch.equal(full[0], full[1])
    with pytest.raises(ValueError, match="one stream per batch row"):
        denoise_frames(_LinearDenoiser(), make_sampler(sampler, 4, **kw), motion, prev, NoiseStreams([1]), [3.0])
