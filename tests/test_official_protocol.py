"""stdiff.official_protocol: the official first-frame selection and the trajectories continued from it.

The selection score is checked against the official code's scoring written out here (PSNR with
data range 1 and the zero-padded SSIM module, both on [-1, 1] images); the sampling against the
official algorithm expressed with the model API (candidates, then S trajectories from the chosen
frame and its motion state), on the tiny preset with random weights.
"""
from __future__ import annotations

import pytest
import torch

from stdiff import Predictor
from stdiff.official_protocol import first_frame_scores, predict_official, select_best_first_frame
from stdiff.pipeline import sample
from test_metrics import OfficialSSIM

SAMPLING = dict(sampler="ddim", steps=2)


@pytest.fixture(scope="module")
def predictor():
    return Predictor.from_pretrained("tiny", seed=3, dtype=torch.float32)  # the official protocol runs fp32


def _clips(predictor, n, seed=0):
    cfg = predictor.config
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, cfg.num_observed, cfg.channels, cfg.image_size, cfg.image_size, generator=g)


def test_first_frame_scores_match_the_official_scoring():
    g = torch.Generator().manual_seed(0)
    truth = torch.rand(3, 1, 24, 24, generator=g)
    cand = (truth[:, None] + 0.3 * torch.randn(3, 5, 1, 24, 24, generator=g)).clamp(0, 1)
    x, y = (cand * 2 - 1).flatten(0, 1), (truth * 2 - 1).repeat_interleave(5, 0)
    official_psnr = -10 * torch.log10(((x - y) ** 2).mean(dim=(1, 2, 3)) + 1e-8)
    expected = (official_psnr + OfficialSSIM()(y, x)).reshape(3, 5)
    torch.testing.assert_close(first_frame_scores(cand, truth), expected, rtol=0, atol=1e-5)


def test_selection_is_per_video():
    """The official code reshapes video-major scores as sample-major (mixing videos): not here."""
    torch.manual_seed(12)
    truth = torch.rand(3, 1, 32, 32)
    noise = torch.full((3, 4), 0.5)
    noise[torch.arange(3), torch.tensor([2, 0, 3])] = 0.05
    cand = (truth[:, None] + noise[..., None, None, None] * torch.randn(3, 4, 1, 32, 32)).clamp(0, 1)
    assert select_best_first_frame(cand, truth).tolist() == [2, 0, 3]
    with pytest.raises(ValueError, match="matching N, C, H, W"):
        select_best_first_frame(cand, truth[:2])


def test_predict_official_continues_from_the_chosen_frame_and_motion(predictor):
    cfg, model = predictor.config, predictor.model
    n, k, s, to = 2, 3, 2, predictor.config.num_observed
    obs = _clips(predictor, n)
    times = [float(to), to + 1.0, to + 1.5]
    g = torch.Generator().manual_seed(5)
    cand = sample(model, obs, times[:1], k, generator=g, **SAMPLING)
    chosen = torch.tensor([2, 0])  # make a different candidate the ground truth of each video
    rows = torch.arange(n)
    truth = cand.frames[rows, chosen, 0]
    out = predict_official(predictor, obs, times, truth, num_samples=s, num_candidates=k, seed=5, **SAMPLING)
    assert out.shape == (n, s, 3, cfg.channels, cfg.image_size, cfg.image_size)
    torch.testing.assert_close(out[:, :, 0], truth[:, None].expand(n, s, *truth.shape[1:]))
    # the official continuation: the chosen frame conditions, the SDE restarts from its state
    rest = sample(model, torch.cat([obs, truth[:, None]], 1), times[1:], s, generator=g, t0=times[0],
                  motion_state=cand.motion[rows, chosen, 0], **SAMPLING)
    torch.testing.assert_close(out[:, :, 1:], rest.frames)
    assert (out[:, 0, 1] - out[:, 1, 1]).abs().max() > 0.01  # the trajectories differ after the first frame


def test_predict_official_beyond_the_horizon(predictor):
    cfg = predictor.config
    to, h = cfg.num_observed, cfg.num_future
    times = [float(t) for t in range(to, to + h + 2)]
    obs = _clips(predictor, 1, seed=1)
    truth = torch.rand(1, cfg.channels, cfg.image_size, cfg.image_size)
    out = predict_official(predictor, obs, times, truth, num_samples=2, num_candidates=2, seed=0, **SAMPLING)
    assert out.shape[:3] == (1, 2, h + 2) and bool(((out >= 0) & (out <= 1)).all())
    again = predict_official(predictor, obs, times, truth, num_samples=2, num_candidates=2, seed=0, **SAMPLING)
    torch.testing.assert_close(out, again)


def test_predict_official_bad_input(predictor):
    cfg = predictor.config
    obs = _clips(predictor, 1)
    truth = torch.rand(1, cfg.channels, cfg.image_size, cfg.image_size)
    t = [float(cfg.num_observed)]
    with pytest.raises(ValueError, match="num_candidates must be an int >= 1"):
        predict_official(predictor, obs, t, truth, num_candidates=0)
    with pytest.raises(ValueError, match="sampler must be one of"):
        predict_official(predictor, obs, t, truth, sampler="euler")
    with pytest.raises(ValueError, match="steps must be an int"):
        predict_official(predictor, obs, t, truth, sampler="ddim", steps=0)
    with pytest.raises(ValueError, match=r"first_truth must be 32x32 pixels"):
        predict_official(predictor, obs, t, truth[:, :, :8])
    with pytest.raises(ValueError, match=r"first_truth must have shape \(N, C, H, W\) = \(1, 1, 32, 32\)"):
        predict_official(predictor, obs, t, torch.cat([truth, truth]))
    with pytest.raises(ValueError, match="max_batch"):
        predict_official(predictor, obs, t, truth, num_candidates=2000)
    low = Predictor.from_pretrained("tiny", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="runs the model in float32"):
        predict_official(low, obs, t, truth)
