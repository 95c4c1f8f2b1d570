"""One Predictor shared by threads: a call's frames for a given seed do not depend on other threads.

Real threads on the tiny preset (random weights, DDIM with 3 steps). The calls start together at a
barrier, so their denoising steps interleave (torch releases the GIL inside every op).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from stdiff import Predictor

KW = dict(num_frames=2, sampler="ddim", steps=3, progress=False)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module", autouse=True)
def one_intra_op_thread():
    """One intra-op thread per call: each call's arithmetic is then the same alone and in company."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _clips(n: int, length: int, seed: int) -> torch.Tensor:
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
    requests = [[(_clips(1 + t, 4, 10 * t + i), 10 * t + i) for i in range(4)] for t in range(2)]

    def thread(reqs: list[tuple[torch.Tensor, int]]) -> list[torch.Tensor]:
        return [p.predict(x, seed=seed, **KW).frames for x, seed in reqs]

    alone = [thread(reqs) for reqs in requests]
    _assert_same(alone, _together([lambda reqs=reqs: thread(reqs) for reqs in requests]))


def test_two_streams_on_one_predictor_in_threads():
    p = Predictor.from_pretrained("tiny", seed=0)
    videos = [_clips(1, 4, seed) for seed in (1, 2)]

    def follow(x: torch.Tensor) -> list[torch.Tensor]:
        stream, out = p.stream(), []
        for k in range(x.shape[1]):
            stream.push(x[:, k])
            if k >= 1:
                out.append(stream.predict(seed=3, **KW).frames)
        return out

    alone = [follow(x) for x in videos]
    _assert_same(alone, _together([lambda x=x: follow(x) for x in videos]))


def test_to_waits_for_running_predicts():
    """``to(dtype=...)`` during other threads' predicts neither crashes them nor mixes dtypes in a call."""
    p = Predictor.from_pretrained("tiny", seed=0)
    x = _clips(1, 4, 0)
    stop = threading.Event()

    def predicts() -> list[torch.Tensor]:
        out = []
        while not stop.is_set() or not out:
            out.append(p.predict(x, seed=1, **KW).frames)
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
    again = p.predict(x, seed=1, **KW).frames
    assert torch.equal(again, p.predict(x, seed=1, **KW).frames)
