"""Reliability, round 2: prediction inputs (issue 24, items 4, 6 and 11): non-finite motion states,
unbounded requests refused before the list of times is built, errors naming the argument,
NumPy integers wherever ints are accepted, meta/sparse tensors, oversized Philox requests."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from stdiff import Predictor, ops

from test_predictor import FAST, micro_model, one_thread  # noqa: F401 (autouse fixture)


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(micro_model())


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    return torch.rand(1, 3, 1, 16, 16, generator=torch.Generator().manual_seed(0))


# ---- item 4: non-finite motion states --------------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_motion_state_is_refused(predictor, frames, bad):
    stream = predictor.stream()
    for k in range(3):
        stream.push(frames[:, k])
    state = stream.state.clone()
    state[0, 0, 0, 0] = bad
    with pytest.raises(ValueError, match="motion_state contains NaN or infinite values"):
        predictor.predict(frames[:, -1:], num_frames=1, motion_state=state, t_last=2.0, **FAST)


# ---- item 6: unbounded requests refused before the times are built -------------------------------------
@pytest.mark.parametrize("num_frames", [10**9, 10**7, np.int64(10**12)])
def test_huge_num_frames_is_refused_before_building_the_times(predictor, frames, num_frames):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"num_frames = [\d,]+ is above the limit max_frames=10,000"):
        predictor.predict(frames, num_frames=num_frames, **FAST)
    assert time.perf_counter() - start < 1.0


# ---- item 11: errors naming the argument ------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, error, message", [
    (dict(fps=5e-324), ValueError, r"fps=5e-324 with num_frames=3 puts the last time beyond"),
    (dict(fps=1e-300, num_frames=2), ValueError, r"fps=1e-300 .* puts the last time beyond"),
    (dict(times=[10**400]), ValueError, r"times must be finite numbers below .* got 1000000"),
    (dict(times=[3.0, 2.0**60]), ValueError, r"times must be finite numbers below"),
    (dict(times=[3.0, float("nan")]), ValueError, r"times must be finite numbers below .* got nan"),
    (dict(num_samples=np.int64(0)), ValueError, r"num_samples must be an int >= 1"),
    (dict(steps=np.int64(10**6)), ValueError, r"steps must be an int in \[1, 1000\]"),
    (dict(seed=np.int64(-1)), ValueError, r"seed must be an int in \[0, "),
    (dict(seed=1.5), ValueError, r"seed must be an int"),
    (dict(num_samples=2.0), ValueError, r"num_samples must be an int >= 1, got 2.0"),
])
def test_bad_arguments_are_named(predictor, frames, kwargs, error, message):
    with pytest.raises(error, match=message):
        predictor.predict(frames, **{**FAST, **kwargs})


def test_numpy_integers_are_accepted_wherever_ints_are(predictor, frames):
    plain = predictor.predict(frames, num_frames=2, num_samples=2, seed=7, **FAST)
    numpy = predictor.predict(frames, num_frames=np.int64(2), num_samples=np.int64(2), seed=np.int64(7),
                              **{**FAST, "steps": np.int32(FAST["steps"])})
    assert torch.equal(plain.frames, numpy.frames)


@pytest.mark.parametrize("kind", ["meta", "sparse_coo", "sparse_csr"])
def test_meta_and_sparse_inputs_name_the_argument(predictor, frames, kind):
    if kind == "meta":
        bad = torch.empty(frames.shape, device="meta")
    elif kind == "sparse_coo":
        bad = frames.to_sparse()
    else:
        bad = frames[0, :, 0].to_sparse_csr()  # (T, H, W): a 3-D CSR tensor
    with pytest.raises(TypeError, match="frames (must be a dense tensor|is a meta tensor)"):
        predictor.predict(bad, num_frames=1, **FAST)
    stream = predictor.stream()
    with pytest.raises(TypeError, match="frame (must be a dense tensor|is a meta tensor)"):
        stream.push(bad[:, 0] if kind != "sparse_csr" else bad)


def test_meta_and_sparse_motion_states_name_the_argument(predictor, frames):
    stream = predictor.stream()
    for k in range(3):
        stream.push(frames[:, k])
    for bad in (torch.empty(stream.state.shape, device="meta"), stream.state.to_sparse()):
        with pytest.raises(TypeError, match="motion_state (must be a dense tensor|is a meta tensor)"):
            predictor.predict(frames[:, -1:], num_frames=1, motion_state=bad, t_last=2.0, **FAST)


@pytest.mark.parametrize("shape", [(10**12,), (10**6, 10**6), (2**31 + 1,)])
def test_philox_normal_refuses_huge_shapes_before_allocating(shape):
    with pytest.raises(ValueError, match=r"shape has [\d,]+ elements, above the limit of 2,147,483,648"):
        ops.philox_normal(shape, 0, 0)


def test_meta_times_name_the_argument(predictor, frames):
    with pytest.raises(TypeError, match="times is a meta tensor"):
        predictor.predict(frames, times=torch.empty(2, device="meta"), **FAST)
