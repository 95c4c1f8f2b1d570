"""stdiff.Predictor: inputs, times, seeds, long horizons, streaming, fast vs reference path."""
from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from stdiff.checkpoint import save_pretrained
from stdiff.config import MotionConfig, STDiffConfig, UNetConfig
from stdiff.models import STDiff
from stdiff.prediction import Prediction, future_times
from stdiff.noise import NoiseStreams
from stdiff.pipeline import encode_context, sample
from stdiff.planning import WorkLimits, plan_chunks
from stdiff.predictor import Predictor

# A micro model (16 px, ~40 K parameters) so that every test runs in seconds on 2 CPU cores.
MICRO = STDiffConfig(
    image_size=16,
    channels=1,
    motion=MotionConfig(model_channels=4, n_downs=2),
    unet=UNetConfig(block_out_channels=[8, 16], down_block_types=["DownBlock2D", "AttnDownBlock2D"],
                    up_block_types=["AttnUpBlock2D", "UpBlock2D"], attention_head_dim=[None, 8],
                    layers_per_block=1, norm_num_groups=4),
    num_observed=3,
    num_future=3,
    train_future_k=2,
)
FAST = dict(sampler="ddpm", steps=3, progress=False)


def micro_model(seed: int = 0) -> STDiff:
    """MICRO with random weights; the zero-initialised SDE output layers are perturbed too, so the
    motion SDE has a non-zero drift and diffusion."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = STDiff(MICRO)
        with torch.no_grad():
            for p in model.sde.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Micro models gain nothing from intra-op threads, and on a shared 2-core machine OpenMP
    threads that wait for each other make each call 10-20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model() -> STDiff:
    return micro_model()


@pytest.fixture(scope="module")
def fast(model) -> Predictor:
    return Predictor(model, dtype=torch.float32)  # the fast path's numerics, on any CPU


@pytest.fixture(scope="module")
def reference(model) -> Predictor:
    return Predictor(model, exact_reference=True)


def clips(n: int = 2, t: int = 3, seed: int = 0) -> torch.Tensor:
    """(n, t, 1, 16, 16) floats in [0, 1] with a moving bright square (so frame differences are not zero)."""
    g = torch.Generator().manual_seed(seed)
    x = 0.2 * torch.rand(n, t, 1, 16, 16, generator=g)
    for k in range(t):
        x[:, k, :, 4:9, 2 + 2 * k:7 + 2 * k] = 1.0
    return x


# ---- shapes, dtypes, input forms ---------------------------------------------------------------
def test_shapes_dtypes_and_result(fast):
    out = fast.predict(clips(2, 3), num_frames=2, num_samples=3, seed=0, return_motion=True, **FAST)
    assert isinstance(out, Prediction)
    assert out.frames.shape == (2, 3, 2, 1, 16, 16) and out.frames.dtype == torch.float32
    assert out.frames.min() >= 0 and out.frames.max() <= 1
    assert out.times == [3.0, 4.0]
    assert out.motion.shape == (2, 3, 2, 16, 4, 4)
    assert out.observed.shape == (2, 3, 1, 16, 16)
    assert out.mean().shape == out.std().shape == (2, 2, 1, 16, 16)
    assert torch.allclose(out.mean(), out.frames.mean(1))
    assert out.std().max() > 0
    single = fast.predict(clips(1, 3)[0], num_frames=1, seed=0, **FAST)
    assert single.frames.shape == (1, 1, 1, 1, 16, 16) and single.motion is None
    assert torch.equal(single.std(), torch.zeros(1, 1, 1, 16, 16))


def test_uint8_numpy_and_float_inputs_agree(fast):
    x8 = (clips(1, 3) * 255).round().to(torch.uint8)
    a = fast.predict(x8, num_frames=2, seed=3, **FAST).frames
    b = fast.predict(x8.numpy(), num_frames=2, seed=3, **FAST).frames
    c = fast.predict(x8.double() / 255, num_frames=2, seed=3, **FAST).frames
    d = fast.predict((x8.float() / 255).numpy()[0], num_frames=2, seed=3, **FAST).frames
    assert torch.equal(a, b) and torch.equal(a, c) and torch.equal(a, d)


def test_default_horizon_and_samplers(fast):
    for sampler in ("ddpm", "ddim", "dpmpp"):
        out = fast.predict(clips(1, 3), num_samples=2, sampler=sampler, steps=2, seed=0, progress=False)
        assert out.frames.shape == (1, 2, MICRO.num_future, 1, 16, 16)
        assert torch.isfinite(out.frames).all()


# ---- seeds -------------------------------------------------------------------------------------
def test_seeds(fast):
    x = clips(2, 3)
    a = fast.predict(x, num_frames=2, num_samples=2, seed=7, **FAST).frames
    b = fast.predict(x, num_frames=2, num_samples=2, seed=7, **FAST).frames
    c = fast.predict(x, num_frames=2, num_samples=2, seed=8, **FAST).frames
    d = fast.predict(x, num_frames=2, num_samples=2, generator=torch.Generator().manual_seed(7), **FAST).frames
    e = fast.predict(x, num_frames=2, num_samples=2, generator=torch.Generator().manual_seed(7), **FAST).frames
    assert torch.equal(a, b) and torch.equal(d, e)
    assert (a - c).abs().max() > 1e-2
    assert (a[:, 0] - a[:, 1]).abs().max() > 1e-2  # samples of one video differ


# ---- times -------------------------------------------------------------------------------------
def test_fractional_times_and_fps(fast):
    x = clips(1, 3)
    out = fast.predict(x, times=[2.25, 2.5, 3.0, 4.75], num_samples=2, seed=0, **FAST)
    assert out.frames.shape[2] == 4 and out.times == [2.25, 2.5, 3.0, 4.75]
    four = fast.predict(x, num_frames=8, fps=4, seed=0, **FAST)
    assert four.times == [2 + k / 4 for k in range(1, 9)]
    assert four.frames.shape[2] == 8
    # frames at different times differ (the motion state moves along the SDE)
    assert (four.frames[0, 0, 0] - four.frames[0, 0, -1]).abs().max() > 1e-3


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0.01, 20.0, allow_nan=False), min_size=1, max_size=12, unique=True),
       st.integers(1, 4), st.integers(2, 5))
def test_plan_chunks_properties(offsets, horizon, context_len):
    t_last = 4.0
    times = sorted(t_last + round(o, 3) for o in offsets)
    times = [t for i, t in enumerate(times) if i == 0 or t - times[i - 1] > 1e-3]
    chunks = plan_chunks(times, t_last, horizon, context_len)
    generated = [t for c in chunks for t in c.times]
    assert all(round(t, 6) in {round(g, 6) for g in generated} for t in times)      # every query time is made
    assert generated == sorted(generated) and len(set(map(lambda t: round(t, 6), generated))) == len(generated)
    for k, c in enumerate(chunks):
        assert c.t0 == t_last + k * horizon
        assert all(c.t0 < t <= c.t0 + horizon + 1e-9 for t in c.times)
    made = {round(t, 6) for t in generated} | {round(t_last - j, 6) for j in range(context_len)}
    for c in chunks[1:]:  # the integer-grid context of every later chunk exists when it starts
        assert all(round(c.t0 - j, 6) in made for j in range(context_len))


def test_plan_chunks_at_1x_adds_nothing():
    chunks = plan_chunks([4.0 + k for k in range(1, 15)], 4.0, 6, 4)
    assert [c.times for c in chunks] == [[5.0, 6, 7, 8, 9, 10], [11.0, 12, 13, 14, 15, 16], [17.0, 18]]
    gap = plan_chunks([5.5, 30.0], 4.0, 10, 3)   # far times: the grid frames bridge the gap
    assert [c.times for c in gap] == [[5.5, 12.0, 13.0, 14.0], [22.0, 23.0, 24.0], [30.0]]


def test_future_times_errors():
    with pytest.raises(ValueError, match="times must be strictly increasing"):
        future_times([5, 5], None, 1, 2.0, 3)
    with pytest.raises(ValueError, match="after the last observed"):
        future_times([2.0, 3.0], None, 1, 2.0, 3)
    with pytest.raises(ValueError, match="either times or num_frames"):
        future_times([3.0], 2, 1, 2.0, 3)
    assert future_times(np.array([2.5, 3.5]), None, 1, 2.0, 3) == [2.5, 3.5]
    assert future_times(None, None, 2, 2.0, 3) == [2.5, 3.0, 3.5]


# ---- long horizons -----------------------------------------------------------------------------
def test_long_horizon_chunks(fast):
    x = clips(2, 3)
    short = fast.predict(x, num_frames=3, num_samples=2, seed=1, **FAST).frames
    long = fast.predict(x, num_frames=8, num_samples=2, seed=1, **FAST)
    assert long.frames.shape == (2, 2, 8, 1, 16, 16) and torch.isfinite(long.frames).all()
    # the first chunk (the trained horizon, 3 frames) is the same computation as the short prediction
    assert torch.equal(long.frames[:, :, :3], short)
    four = fast.predict(x, num_frames=20, fps=4, seed=1, **FAST)   # 5 frame units: two chunks at 4x
    assert four.frames.shape[2] == 20


def test_long_horizon_fast_matches_reference(fast, reference):
    x = clips(2, 3)
    kw = dict(times=[2.5, 4.0, 7.25, 12.0], num_samples=2, seed=5, return_motion=True, **FAST)
    a, b = fast.predict(x, **kw), reference.predict(x, **kw)
    diff = (a.frames - b.frames).abs()
    assert diff.max() < 2e-3 and diff.mean() < 2e-5
    torch.testing.assert_close(a.motion, b.motion, atol=1e-5, rtol=1e-5)


# ---- fast path vs reference path ---------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["ddpm", "dpmpp"])
def test_fast_path_matches_reference(fast, reference, sampler):
    x = clips(2, 3)
    kw = dict(num_frames=3, num_samples=2, sampler=sampler, steps=4, seed=11, progress=False)
    a, b = fast.predict(x, **kw), reference.predict(x, **kw)
    # fp32 rounding differences (channels_last convolutions, op backends) of ~1e-6 in eps are
    # amplified by up to sigma_t / alpha_t (~160 at t = 999) in the x0 estimate of a step.
    diff = (a.frames - b.frames).abs()
    assert diff.max() < 2e-3 and diff.mean() < 2e-5


def test_reference_path_is_official_algorithm(model, reference):
    """exact_reference=True gives what the pipeline's sample(exact=True) gives for the same seed."""
    x = clips(1, 3)
    out = reference.predict(x, num_frames=2, num_samples=2, seed=4, **FAST).frames
    official = copy.deepcopy(model).set_backend("reference")
    direct = sample(official, x, [3.0, 4.0], 2, "ddpm", 3, exact=True, noise=NoiseStreams.for_videos(4, 1, 2))
    torch.testing.assert_close(out, direct.frames, atol=1e-6, rtol=0)


def test_low_precision_unet(model):
    p = Predictor(model).to(dtype=torch.bfloat16)
    assert p.model.unet.conv_in.weight.dtype == torch.bfloat16
    assert p.model.conv_gru.gate_conv.weight.dtype == torch.float32  # motion path stays fp32
    out = p.predict(clips(1, 3), num_frames=2, num_samples=2, seed=0, **FAST)
    assert out.frames.dtype == torch.float32 and torch.isfinite(out.frames).all()
    ref32 = Predictor(model, dtype=torch.float32).predict(clips(1, 3), num_frames=2, num_samples=2, seed=0, **FAST)
    assert (out.frames - ref32.frames).abs().mean() < 0.05
    with pytest.raises(ValueError, match="float32 only"):
        Predictor(model, exact_reference=True).to(dtype=torch.float16)


# ---- streaming ---------------------------------------------------------------------------------
def test_stream_equals_batch(fast):
    x = (clips(2, 5) * 255).round() / 255
    stream = fast.stream()
    for k in range(3):
        stream.push(x[:, k])
    kw = dict(num_frames=4, num_samples=2, seed=2, return_motion=True, **FAST)
    a, b = stream.predict(**kw), fast.predict(x[:, :3], **kw)
    torch.testing.assert_close(a.frames, b.frames, atol=1e-5, rtol=0)
    torch.testing.assert_close(stream.state, encode_context(fast.model, x[:, :3]), atol=1e-6, rtol=1e-5)
    stream.push(x[:, 3]).push((x[:, 4] * 255).round().to(torch.uint8))
    assert stream.num_frames == 5
    c, d = stream.predict(times=[4.5, 6.0], **{**kw, "num_frames": None}), fast.predict(x, times=[4.5, 6.0], seed=2,
                                                                                         num_samples=2, **FAST)
    torch.testing.assert_close(c.frames, d.frames, atol=1e-5, rtol=0)
    assert c.times == [4.5, 6.0]


def test_stream_errors(fast):
    stream = fast.stream()
    stream.push(clips(2, 1)[:, 0])
    with pytest.raises(ValueError, match="at least 2 frames"):
        stream.predict(num_frames=1, **FAST)
    with pytest.raises(ValueError, match="frame must hold 2 video"):
        stream.push(clips(3, 1)[:, 0])
    with pytest.raises(TypeError, match="unexpected keyword"):
        stream.push(clips(2, 1)[:, 0]).predict(num_frames=1, temperature=2)
    stream.reset()
    assert stream.num_frames == 0 and stream.state is None


# ---- bad inputs --------------------------------------------------------------------------------
BAD = [
    (dict(frames=torch.rand(3, 16, 16)), ValueError, "frames must have shape"),
    (dict(frames=torch.rand(1, 3, 3, 16, 16)), ValueError, "1 channel"),
    (dict(frames=torch.rand(1, 3, 1, 16, 32)), ValueError, "16x16 pixels"),
    (dict(frames=torch.rand(1, 1, 1, 16, 16)), ValueError, "at least 2 frames"),
    (dict(frames=torch.full((1, 3, 1, 16, 16), float("nan"))), ValueError, "NaN"),
    (dict(frames=torch.rand(1, 3, 1, 16, 16) * 2), ValueError, r"\[0, 1\]"),
    (dict(frames=torch.ones(1, 3, 1, 16, 16, dtype=torch.int32)), TypeError, "uint8"),
    (dict(frames=[[0.5]]), TypeError, "torch.Tensor or numpy"),
    (dict(times=[1.5, 3.0]), ValueError, "after the last observed"),
    (dict(times=[3.0, 3.0]), ValueError, "strictly increasing"),
    (dict(times=[]), ValueError, "times must not be empty"),
    (dict(times=["4"]), TypeError, "real numbers"),
    (dict(times=[3.0], num_frames=2), ValueError, "either times or num_frames"),
    (dict(num_frames=0), ValueError, "num_frames"),
    (dict(fps=0), ValueError, "fps"),
    (dict(num_samples=0), ValueError, "num_samples"),
    (dict(sampler="euler"), ValueError, "sampler must be one of"),
    (dict(sampler=["ddim"]), ValueError, "sampler must be one of"),
    (dict(fps=float("nan")), ValueError, "fps must be a finite number"),
    (dict(fps=1e9), ValueError, "fps must be a finite number in"),
    (dict(times=[float("nan")]), ValueError, "times must be finite"),
    (dict(times=[2.0 + 1e-7]), ValueError, "at least 1e-06 frame units apart"),
    (dict(times=[4.0, 4.0000001]), ValueError, "at least 1e-06 frame units apart"),
    (dict(times=[1e12]), ValueError, "max_frames"),
    (dict(fps=1e-300), ValueError, "fps=1e-300 with num_frames=3 puts the last time beyond"),
    (dict(num_samples=10_000), ValueError, "max_batch"),
    (dict(motion_state=torch.zeros(1, 16, 2, 2)), ValueError, "motion_state must be a floating tensor of shape"),
    (dict(t_last=1.0), ValueError, "t_last must be a number"),
    (dict(steps=0), ValueError, "steps must be an int"),
    (dict(steps=2.5), ValueError, "steps must be an int"),
    (dict(seed=1, generator=torch.Generator()), ValueError, "either seed or generator"),
    (dict(seed=-1), ValueError, "seed must be"),
    (dict(generator=3), TypeError, "generator must be"),
]


@pytest.mark.parametrize("kwargs, error, message", BAD)
def test_bad_inputs(fast, kwargs, error, message):
    args = {"frames": clips(1, 3), "progress": False, "steps": 1, **kwargs}
    with pytest.raises(error, match=message):
        fast.predict(**args)


def test_work_limits_refuse_before_any_work(model):
    """Huge requests fail at once with the limit to raise; a raised limit lets a large one through."""
    p = Predictor(model)
    p.limits = WorkLimits(max_memory_bytes=1000)
    with pytest.raises(ValueError, match="max_memory_bytes"):
        p.predict(clips(1, 3), num_frames=2, seed=0, **FAST)
    p.limits = WorkLimits(max_frames=4)
    with pytest.raises(ValueError, match=r"num_frames = 5 is above the limit max_frames=4"):
        p.predict(clips(1, 3), num_frames=5, seed=0, **FAST)
    p.limits = WorkLimits(max_frames=5)
    assert p.predict(clips(1, 3), num_frames=5, seed=0, **FAST).frames.shape[2] == 5
    with pytest.raises(ValueError, match="max_batch must be an int >= 1"):
        WorkLimits(max_batch=0)


def test_prefix_stable_samples_videos_and_times(fast):
    """With a seed, sample s of video v depends on (seed, v, s) only, and a frame does not change
    when a later query time is added (on the SDE grid; off-grid times need the SDE's bridge)."""
    x = clips(2, 3)
    kw = dict(seed=9, return_motion=True, **FAST)
    eight = fast.predict(x, times=[3.0, 4.0], num_samples=8, **kw)
    four = fast.predict(x, times=[3.0, 4.0], num_samples=4, **kw)
    one_video = fast.predict(x[:1], times=[3.0, 4.0], num_samples=4, **kw)
    later = fast.predict(x, times=[3.0, 4.0, 5.0, 9.0], num_samples=4, **kw)
    # the same noise; only float rounding of convolutions over another batch size differs (other
    # noise would differ by ~0.5)
    close = dict(atol=1e-4, rtol=0)
    torch.testing.assert_close(eight.frames[:, :4], four.frames, **close)
    torch.testing.assert_close(one_video.frames, four.frames[:1], **close)
    torch.testing.assert_close(later.frames[:, :, :2], four.frames, **close)
    torch.testing.assert_close(later.motion[:, :, :2], four.motion, **close)


def test_predictor_leaves_the_callers_model_unchanged(model):
    model.train()
    before = {k: (v.clone(), v.is_contiguous()) for k, v in model.state_dict().items()}
    p = Predictor(model)
    p.predict(clips(1, 3), num_frames=1, seed=0, **FAST)
    assert model.training and model.backend == "auto"
    assert all(torch.equal(v, before[k][0]) and v.is_contiguous() == before[k][1]
               for k, v in model.state_dict().items())
    assert p.model is not model and p.model.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    model.eval()


def test_two_predictors_with_different_backends_in_threads(model):
    """exact_reference sets its own model's backend (no process-wide state): a fast and a reference
    predictor run side by side in threads and give what each gives alone."""
    fast_p, ref_p = Predictor(model), Predictor(model, exact_reference=True)
    assert ref_p.model.backend == "reference" and fast_p.model.backend == "auto"
    kw = dict(num_frames=2, num_samples=2, seed=1, **FAST)
    alone = [fast_p.predict(clips(1, 3), **kw).frames, ref_p.predict(clips(1, 3), **kw).frames]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda p: p.predict(clips(1, 3), **kw).frames, [fast_p, ref_p]))
    assert all(torch.equal(a, b) for a, b in zip(alone, together))


def test_constructor_errors(model, tmp_path):
    with pytest.raises(TypeError, match="STDiff"):
        Predictor(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="compile"):
        Predictor(model, exact_reference=True, compile=True)
    with pytest.raises(FileNotFoundError, match="neither a checkpoint folder nor a preset"):
        Predictor.from_pretrained(tmp_path / "missing")
    with pytest.raises(ValueError, match="not an stdiff checkpoint"):
        Predictor.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="dtype must be"):
        Predictor(model).to(dtype=torch.float64)


def test_from_pretrained_round_trip(model, tmp_path):
    save_pretrained(model, tmp_path / "ckpt")
    loaded = Predictor.from_pretrained(tmp_path / "ckpt")
    direct = Predictor(model)
    x = clips(1, 3)
    # same weights; only the memory alignment of loaded tensors (vectorised reductions) may differ
    torch.testing.assert_close(loaded.predict(x, num_frames=2, seed=0, **FAST).frames,
                               direct.predict(x, num_frames=2, seed=0, **FAST).frames, atol=1e-4, rtol=0)
    tiny = Predictor.from_pretrained("tiny", seed=1)
    assert tiny.config.image_size == 32 and tiny.device.type == "cpu"


# ---- outputs -----------------------------------------------------------------------------------
def test_outputs_and_score(fast, tmp_path):
    x = clips(2, 6)
    out = fast.predict(x[:, :3], num_frames=6, fps=2, num_samples=2, seed=0, **FAST)
    truth, truth_times = x[:, 3:], [3.0, 4.0, 5.0]
    out.save_gif(tmp_path / "p.gif", truth, truth_times)
    out.save_png_grid(tmp_path / "g.png", truth, truth_times)
    paths = out.save_frames(tmp_path / "frames")
    with Image.open(tmp_path / "p.gif") as gif:
        assert gif.n_frames == 3 + 6
    with Image.open(tmp_path / "g.png") as png:
        assert png.size[0] > png.size[1] > 0
    assert len(paths) == 2 * 2 * 6 and all(p.is_file() for p in paths)
    scores = out.score(truth, truth_times)
    assert scores["frames_scored"] == 3 and scores["psnr_best"] >= scores["psnr_mean"]
    perfect = Prediction(frames=truth[:, None].repeat(1, 2, 1, 1, 1, 1), times=truth_times)
    assert perfect.score(truth)["ssim_mean"] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="ground_truth must be a tensor of shape"):
        out.score(truth[:, :2], truth_times)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_and_compile_paths_match_reference(model):
    graphed = Predictor(model).to("cuda")
    reference = Predictor(model, exact_reference=True).to("cuda")
    x = clips(2, 3)
    kw = dict(num_frames=4, num_samples=2, sampler="ddpm", steps=5, seed=0, progress=False)
    a, b = graphed.predict(x, **kw), reference.predict(x, **kw)
    torch.testing.assert_close(a.frames, b.frames, atol=1e-3, rtol=0)
    bf16 = Predictor(model).to("cuda", torch.bfloat16).predict(x, **kw)
    assert torch.isfinite(bf16.frames).all()
    compiled = Predictor(model, compile=True).to("cuda").predict(x, **kw)
    torch.testing.assert_close(compiled.frames, b.frames, atol=1e-3, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_input_stays_on_the_gpu(model):
    """as_frames moves an input once, to the predictor's device, in its own dtype (no CPU float32 hop)."""
    from stdiff.prediction import as_frames

    x = (clips(1, 3) * 255).round().to(torch.uint8)
    on_gpu = as_frames(x.cuda(), 1, 16, device="cuda")
    assert on_gpu.device.type == "cuda" and on_gpu.dtype == torch.float32
    torch.testing.assert_close(on_gpu.cpu(), x.float() / 255, atol=0, rtol=0)
    out = Predictor(model).to("cuda").predict(x.cuda(), num_frames=1, seed=0, **FAST)
    assert out.observed.device.type == "cuda" and out.frames.device.type == "cuda"


# ---- one Predictor shared by threads -------------------------------------------------------------
# Real threads on the tiny preset (random weights, DDIM with 3 steps). The calls start together at a
# barrier, so their denoising steps interleave (torch releases the GIL inside every op); each call
# runs with one intra-op thread (the module's fixture), so its arithmetic is the same in company.
THREAD_KW = dict(num_frames=2, sampler="ddim", steps=3, progress=False)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _tiny_clips(n: int, length: int, seed: int) -> torch.Tensor:
    return torch.rand(n, length, 1, 32, 32, generator=torch.Generator().manual_seed(seed))


def _together(jobs: list[Callable[[], object]]) -> list[object]:
    """Run each job in its own thread, all released at once; their results in order."""
    barrier = threading.Barrier(len(jobs))

    def run(job: Callable[[], object]) -> object:
        barrier.wait()
        return job()

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(run, jobs))


def _assert_same(alone: list[list[torch.Tensor]], together: list[list[torch.Tensor]]) -> None:
    for a, b in zip(alone, together, strict=True):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert torch.equal(x, y), f"max |diff| {(x - y).abs().max():.3g}"


@pytest.mark.parametrize("device", DEVICES)
def test_threads_sharing_a_predictor_get_the_frames_of_their_seed(device):
    """Two threads, 4 predicts each, batch sizes 1 and 2: every result equals the same call run alone."""
    p = Predictor.from_pretrained("tiny", seed=0, device=device)
    requests = [[(_tiny_clips(1 + t, 4, 10 * t + i), 10 * t + i) for i in range(4)] for t in range(2)]

    def thread(reqs: list[tuple[torch.Tensor, int]]) -> list[torch.Tensor]:
        return [p.predict(x, seed=seed, **THREAD_KW).frames for x, seed in reqs]

    alone = [thread(reqs) for reqs in requests]
    _assert_same(alone, _together([lambda reqs=reqs: thread(reqs) for reqs in requests]))


def test_two_streams_on_one_predictor_in_threads():
    p = Predictor.from_pretrained("tiny", seed=0)
    videos = [_tiny_clips(1, 4, seed) for seed in (1, 2)]

    def follow(x: torch.Tensor) -> list[torch.Tensor]:
        stream, out = p.stream(), []
        for k in range(x.shape[1]):
            stream.push(x[:, k])
            if k >= 1:
                out.append(stream.predict(seed=3, **THREAD_KW).frames)
        return out

    alone = [follow(x) for x in videos]
    _assert_same(alone, _together([lambda x=x: follow(x) for x in videos]))


def test_to_waits_for_running_predicts():
    """``to(dtype=...)`` during other threads' predicts neither crashes them nor mixes dtypes in a call."""
    p = Predictor.from_pretrained("tiny", seed=0)
    x = _tiny_clips(1, 4, 0)
    stop = threading.Event()

    def predicts() -> list[torch.Tensor]:
        out = []
        while not stop.is_set() or not out:
            out.append(p.predict(x, seed=1, **THREAD_KW).frames)
        return out

    def switch() -> list[torch.Tensor]:
        for dtype in (torch.bfloat16, torch.float32) * 5 + (torch.bfloat16,):
            time.sleep(0.02)
            p.to(dtype=dtype)
        stop.set()
        return []

    results = _together([predicts, predicts, switch])
    assert all(torch.isfinite(f).all() for f in results[0] + results[1])
    assert p.dtype == torch.bfloat16 and p.model.unet.conv_in.weight.dtype == torch.bfloat16
    again = p.predict(x, seed=1, **THREAD_KW).frames
    assert torch.equal(again, p.predict(x, seed=1, **THREAD_KW).frames)
