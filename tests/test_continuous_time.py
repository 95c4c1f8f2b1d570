"""Continuous time: in-between ground truth, the gap-aware conditioning plan, and its training pairs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from stdiff.config import preset
from stdiff.data.synthetic import SyntheticMovingDigits
from stdiff.models import STDiff
from stdiff.noise import NoiseStreams
from stdiff.pipeline import denoise_frames, sample
from stdiff.sampling import make_sampler


@pytest.mark.parametrize("rate", [2, 4])
def test_inbetween_ground_truth_equals_the_clip_at_integer_times(rate):
    base = SyntheticMovingDigits(num_videos=40, num_frames=7, image_size=32, split="test")
    fine = SyntheticMovingDigits(num_videos=40, num_frames=6 * rate + 1, image_size=32, split="test", rate=rate)
    for i in range(40):
        assert np.array_equal(fine.generate(i)[::rate], base.generate(i))


def test_inbetween_frames_move_the_digit_part_of_the_way():
    """One digit, no wall hit: the frame at t + 1/2 is the digit at the mid position (bilinear weights)."""
    data = SyntheticMovingDigits(num_videos=200, num_frames=5, image_size=32, num_digits=1, split="test", rate=2)
    for i in range(200):
        if data.wall_hits(i) or len(list(data._digits(i))) != 1:
            continue
        (digit, _, path), = data._digits(i)
        clip = data.generate(i)
        mid = (path[0] + path[1]) / 2
        ys, xs = np.nonzero(clip[1, 0] > 0)
        mass = clip[1, 0][ys, xs]
        centre = np.array([(ys * mass).sum(), (xs * mass).sum()]) / mass.sum()
        dy, dx = np.nonzero(digit > 0)
        own = np.array([(dy * digit[dy, dx]).sum(), (dx * digit[dy, dx]).sum()]) / digit[dy, dx].sum()
        np.testing.assert_allclose(centre, mid + own, atol=0.02)
        assert not np.array_equal(clip[1], clip[0]) and not np.array_equal(clip[1], clip[2])
        return
    pytest.fail("no clip with one digit and no wall hit")


def _gap_aware(**kw) -> STDiff:
    cfg = preset("tiny", **kw)
    assert cfg.gap_conditioning == "scaled_motion"  # the demo configuration is gap-aware
    return STDiff(cfg).eval()


def test_conditioning_sources():
    blind, aware = STDiff(preset("tiny", gap_conditioning="none", gap_zero_prob=0.0)), _gap_aware()
    times = [3.25, 3.5, 3.75, 4.0, 4.25, 4.5, 4.75, 5.0]
    assert blind.conditioning_sources(3, times) == [-1, 0, 1, 2, 3, 4, 5, 6]
    assert aware.conditioning_sources(3, times) == [-1, -1, -1, -1, 3, 3, 3, 3]
    assert aware.conditioning_sources(3, [4, 5, 6]) == [-1, 0, 1]
    # no grid frame within one interval: chain to the frame before
    assert aware.conditioning_sources(3, [4.5, 5.5, 6]) == [-1, 0, 1]
    assert aware.conditioning_sources(2.5, [3, 3.5, 4]) == [-1, -1, 1]


def test_frame_condition_scales_the_motion_by_the_gap():
    model = _gap_aware()
    m = torch.randn(3, model.config.motion_channels, 8, 8)
    out = model.frame_condition(m, torch.tensor([0.0, 0.25, 2.0]))
    torch.testing.assert_close(out, m * torch.tensor([0.0, 0.25, 2.0]).view(3, 1, 1, 1))
    assert STDiff(preset("tiny", gap_conditioning="none", gap_zero_prob=0.0)).frame_condition(m, torch.zeros(3)) is m


def test_gap_aware_4x_chain_equals_the_1x_chain_at_integer_times():
    torch.manual_seed(0)
    model = _gap_aware()
    context = torch.rand(2, 4, 1, 32, 32)
    fine = [3 + j / 4 for j in range(1, 9)]
    out1 = sample(model, context, [4.0, 5.0], sampler="ddim", steps=3, noise=NoiseStreams.for_videos(5, 2, 1)).frames
    out4 = sample(model, context, fine, sampler="ddim", steps=3, noise=NoiseStreams.for_videos(5, 2, 1)).frames
    torch.testing.assert_close(out4[:, :, [3, 7]], out1, atol=1e-5, rtol=0)


def test_denoise_frames_refuses_bad_sources():
    noise = NoiseStreams.for_videos(0, 1, 1)
    with pytest.raises(ValueError, match="sources"):
        denoise_frames(None, make_sampler("ddim", 2), torch.zeros(2, 1, 4, 2, 2), torch.zeros(1, 1, 8, 8), noise,
                       [1.0, 2.0], sources=[-1, 1])


def test_gap_zero_training_pairs_need_a_gap_aware_model():
    with pytest.raises(ValueError, match="gap_zero_prob"):
        preset("tiny", gap_conditioning="none")
    with pytest.raises(ValueError, match="gap_conditioning"):
        preset("tiny", gap_conditioning="sideways")
    model = _gap_aware(gap_zero_prob=0.5).train()
    clip = torch.rand(2, 7, 1, 32, 32) * 2 - 1
    loss = model.training_loss(clip[:, :4], clip[:, 4:], generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss)


# ---- the stride protocol ------------------------------------------------------------------------
from types import SimpleNamespace  # noqa: E402

from stdiff.inbetween import blend_in_time, centroid_path_length, score_clips, stride_times  # noqa: E402


def test_blend_in_time_interpolates_between_grid_frames():
    start = torch.zeros(1, 1, 2, 2)
    grid = torch.stack([torch.full((1, 2, 2), 4.0), torch.full((1, 2, 2), 8.0)])[None]  # (1, 2, C, H, W)
    out = blend_in_time(start, grid, 4)
    assert out.shape == (1, 8, 1, 2, 2)
    torch.testing.assert_close(out[0, :, 0, 0, 0], torch.tensor([1.0, 2, 3, 4, 5, 6, 7, 8]))
    assert stride_times(3, 2, 4) == [3.25, 3.5, 3.75, 4.0, 4.25, 4.5, 4.75, 5.0]


def test_centroid_path_length_follows_a_moving_square():
    frames = torch.zeros(4, 1, 16, 16)
    for t in range(4):
        frames[t, 0, 5:8, 2 + 2 * t:5 + 2 * t] = 1
    torch.testing.assert_close(centroid_path_length(frames), torch.tensor(6.0))
    assert centroid_path_length(frames[:1].expand(3, -1, -1, -1)).item() == 0


class _TimeCodedPredictor:
    """Returns, for each asked time t, a frame of constant value t / 10 (the clips' time code)."""

    def predict(self, observed, times, num_samples, **_):
        n = observed.shape[0]
        frames = torch.stack([torch.full(observed.shape[2:], t / 10) for t in times])
        return SimpleNamespace(frames=frames[None, None].expand(n, num_samples, -1, -1, -1, -1))


def test_stride_protocol_scores_the_right_frames():
    stride, to, horizon = 4, 3, 2
    length = (to - 1) * stride + 1 + horizon * stride
    clip = torch.stack([torch.full((1, 12, 12), f / stride / 10) for f in range(length)])
    scores = score_clips(_TimeCodedPredictor(), clip[None].repeat(3, 1, 1, 1, 1), to, stride, horizon,
                         num_samples=2, sampler="ddim", steps=2, seed=0)
    summary = scores.summary()
    assert summary["model"]["psnr_on_grid"] > 75 and summary["model"]["psnr_between"] > 75
    assert summary["blend"]["psnr_between"] > 75  # a linear ramp is its own linear blend
    assert summary["copy_last"]["psnr_on_grid"] < 40
    assert scores.on_grid().tolist() == [False, False, False, True] * 2
    assert [r["time"] for r in scores.per_frame()] == stride_times(2, 2, 4)


# ---- what gap-aware conditioning can learn ----------------------------------------------------------
def _fit_and_score(model: STDiff, seed: int) -> tuple[float, float]:
    """Fit an MLP from the UNet's SPADE input ``frame_condition(motion, gap)`` to the displacement gap * v
    of velocity-like motion states m = v * pattern + noise; returns (held-out MSE, the floor any function
    of the motion alone cannot beat: E[v^2] Var(gap), gap independent of v)."""
    torch.manual_seed(seed)
    channels = model.config.motion_channels
    pattern = torch.randn(1, channels, 2, 2)
    gap_values = torch.arange(0, 13) / 4  # 0, 0.25, ..., 3: integer and in-between gaps

    def draw(n: int) -> tuple[Tensor, Tensor]:
        v = torch.rand(n) * 2 - 1
        gap = gap_values[torch.randint(0, len(gap_values), (n,))]
        motion = v.view(-1, 1, 1, 1) * pattern + 0.05 * torch.randn(n, channels, 2, 2)
        return model.frame_condition(motion, gap).flatten(1), gap * v

    x, y = draw(4096)
    head = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 64), torch.nn.SiLU(), torch.nn.Linear(64, 1))
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
    for step in range(600):
        batch = torch.randint(0, len(x), (256,))
        loss = F.mse_loss(head(x[batch]).squeeze(1), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x_test, y_test = draw(2048)
    with torch.no_grad():
        mse = F.mse_loss(head(x_test).squeeze(1), y_test).item()
    floor = (1 / 3) * gap_values.var(unbiased=False).item()  # E[v^2] for v ~ U(-1, 1) times Var(gap)
    return mse, floor


@pytest.mark.parametrize("seed", [0, 1])
def test_gap_aware_conditioning_learns_a_gap_dependent_shift_that_gap_blind_cannot(seed):
    """The displacement since the conditioning frame is gap * velocity. Through a gap-blind SPADE input
    (the official design) no learner gets below E[v^2] Var(gap); through the gap-aware one it is learnt."""
    aware_mse, floor = _fit_and_score(_gap_aware(), seed)
    blind_mse, _ = _fit_and_score(STDiff(preset("tiny", gap_conditioning="none", gap_zero_prob=0.0)), seed)
    assert blind_mse > 0.9 * floor
    assert aware_mse < 0.05 * floor


def test_training_feeds_each_target_its_gap():
    """frame_condition sees gap j - previous selected j (the first target: j + 1 from the last observed
    frame), and the gap-0 anchors get gap 0."""
    model = _gap_aware(gap_zero_prob=0.0, train_future_k=3).train()
    seen = []
    original = model.frame_condition

    def spy(motion, gap):
        seen.append(gap.clone())
        return original(motion, gap)

    model.frame_condition = spy
    clip = torch.rand(2, 7, 1, 32, 32) * 2 - 1
    model.training_loss(clip[:, :4], clip[:, 4:], generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(seen[0], torch.ones(6))  # k = 3 of 3 future frames: every gap is 1
    model.config.gap_zero_prob = 0.999
    model.training_loss(clip[:, :4], clip[:, 4:], k=2, generator=torch.Generator().manual_seed(0))
    assert seen[1].shape == (4,) and (seen[1] == 0).float().mean() > 0.5


# ---- residual diffusion target -------------------------------------------------------------------
def test_residual_target_round_trip_and_official_default():
    assert all(preset(name).diffusion_target == "frame" for name in ("kth64", "bair64", "cityscapes128"))
    assert preset("tiny").diffusion_target == "residual" and preset("tiny").cond_noise > 0
    with pytest.raises(ValueError, match="diffusion_target"):
        preset("tiny", diffusion_target="delta")
    model = _gap_aware(diffusion_target="residual")
    frame, cond = torch.rand(3, 1, 8, 8) * 2 - 1, torch.rand(3, 1, 8, 8) * 2 - 1
    target = model.to_target(frame, cond)
    assert target.abs().max() <= 1
    torch.testing.assert_close(model.from_target(target, cond), frame)
    torch.testing.assert_close(model.to_target(cond, cond), torch.zeros_like(cond))
    frame_model = _gap_aware(diffusion_target="frame")
    assert frame_model.to_target(frame, cond) is frame


class _NoChangeDenoiser:
    """eps that makes every DDIM step's clean estimate exactly 0 (x_t = sqrt(1 - abar_t) eps)."""

    def __init__(self, schedule):
        self.abar = schedule.alphas_cumprod

    def condition(self, motion):
        return None

    def __call__(self, x, t, cond, conditioning):
        return x / (1 - self.abar[t]).sqrt()


def test_residual_model_turns_a_zero_sample_into_its_conditioning_frame():
    """A residual model's generated sample is the change from the conditioning frame: a zero change
    repeats the last observed frame along the whole 4x chain; a frame model would return blank frames."""
    model = _gap_aware(diffusion_target="residual")
    prev = torch.rand(2, 1, 8, 8) * 2 - 1
    times = [3.25, 3.5, 3.75, 4.0, 4.25]
    sampler = make_sampler("ddim", 4)
    args = (_NoChangeDenoiser(model.schedule), sampler, torch.zeros(5, 2, 4, 2, 2), prev,
            NoiseStreams.for_videos(0, 2, 1), times, model.conditioning_sources(3, times))
    out = denoise_frames(*args, from_target=model.from_target)
    torch.testing.assert_close(out, prev[:, None].expand(-1, 5, -1, -1, -1))
    torch.testing.assert_close(denoise_frames(*args), torch.zeros_like(out), atol=1e-6, rtol=0)


def test_cond_noise_trains_against_noisy_conditioning_frames_with_clean_targets():
    """With cond_noise the UNet's conditioning frame is noised (within [-1, 1]) and a residual model's
    target is the clean frame minus that noisy frame; gap-0 targets are the clean frame."""
    model = _gap_aware(diffusion_target="residual", cond_noise=0.5, gap_zero_prob=0.999, train_future_k=1).train()
    seen = {}
    original_denoise, original_to_target = model.denoise, model.to_target

    def denoise(x_t, steps, cond, motion=None):
        seen["cond"] = cond.clone()
        return original_denoise(x_t, steps, cond, motion=motion)

    def to_target(frame, cond):
        seen["frame"] = frame.clone()
        return original_to_target(frame, cond)

    model.denoise, model.to_target = denoise, to_target
    clip = torch.rand(4, 7, 1, 32, 32) * 2 - 1
    model.training_loss(clip[:, :4], clip[:, 4:], generator=torch.Generator().manual_seed(0))
    clean = clip[:, 3]  # k = 1: the first target is conditioned on the last observed frame
    assert seen["cond"].abs().max() <= 1 and not torch.equal(seen["cond"], clean)
    assert (seen["cond"] - clean).abs().mean() < 0.5
    torch.testing.assert_close(seen["frame"], clean)  # gap-0 anchors: the clean conditioning frame
    with pytest.raises(ValueError, match="cond_noise"):
        preset("tiny", cond_noise=2.0)
