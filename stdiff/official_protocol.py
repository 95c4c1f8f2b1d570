"""The official STDiff test protocol: the first future frame is chosen with the ground truth.

As the official test script (``filter_best_first_pred`` + ``pred_remainig_frames``), for each video:
1. draw K first-frame candidates (K = 10 there), each with its own SDE draw of the motion state
   at the first future time and its own denoising noise;
2. keep the candidate with the highest PSNR + SSIM against the ground-truth first frame, scored
   as the official code does: on [-1, 1] images with its zero-padded SSIM and PSNR with data
   range 1 (a constant offset from the [0, 1] PSNR);
3. continue S trajectories (S = 10 there) from that frame and its motion state: the SDE starts
   again from the chosen state at the first future time, each trajectory with its own noise.
The chosen frame is the first frame of every trajectory and is scored like the others; the
official report is then the best of the S trajectories per video and metric. Beyond the model's
horizon the trajectories continue autoregressively like ``Predictor.predict``.

Differences from the official code, on purpose: candidates are scored against their own video
(the official code mixes videos when a batch holds more than one); candidates are clamped to
[-1, 1] before scoring (the official code scores the raw sampler output); each candidate draws
its own initial noise (the official code shares it within a group of 4).
THE RESULT USES THE GROUND TRUTH: label every number built on it (``Evaluator`` does).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .checks import integer
from .metrics._validate import unit_images
from .metrics.ssim import ssim_unchecked
from .noise import NoiseStreams
from .pipeline import autoregress_from_chosen_first, to_model_range
from .prediction import as_frames, future_times
from .predictor import Predictor
from .sampling import make_sampler

#: First-frame candidates and trajectories per video in the official test configs.
OFFICIAL_CANDIDATES = 10
_PSNR_EPS = 1e-8  # as the official PSNR


def first_frame_scores(candidates: Tensor, target: Tensor) -> Tensor:
    """Official selection score PSNR + SSIM of each candidate, for each video separately.

    candidates: (N, K, C, H, W), target: (N, C, H, W), both in [0, 1]; scored as the official code
    does on the [-1, 1] images. Returns (N, K) float32 (float64 for float64 inputs).
    """
    cand = unit_images("candidates", candidates, "(N, K, C, H, W)", ndim=5)
    tgt = unit_images("target", target, "(N, C, H, W)", ndim=4)
    if cand.shape[:1] + cand.shape[2:] != tgt.shape:
        raise ValueError(f"candidates must be (N, K, C, H, W) and target (N, C, H, W) with matching N, C, H, W; "
                         f"got {tuple(cand.shape)} and {tuple(tgt.shape)}")
    x = to_model_range(cand)
    y = to_model_range(tgt).unsqueeze(1).expand_as(x)
    psnr = -10.0 * torch.log10((x - y).square().mean(dim=(-3, -2, -1)) + _PSNR_EPS)
    return psnr + ssim_unchecked(x, y, official=True)


def select_best_first_frame(candidates: Tensor, target: Tensor) -> Tensor:
    """Index of the candidate with the best :func:`first_frame_scores` per video, (N,) int64;
    ties go to the lowest index. USES GROUND TRUTH."""
    return first_frame_scores(candidates, target).argmax(dim=1)


def predict_official(predictor: Predictor, observed: Tensor, times: Sequence[float], first_truth: Tensor, *,
                     num_samples: int = OFFICIAL_CANDIDATES, num_candidates: int = OFFICIAL_CANDIDATES,
                     sampler: str = "ddpm", steps: int | None = None, seed: int = 0) -> Tensor:
    """Trajectories under the official protocol (see the module docstring), through the prediction
    pipeline with the predictor's model, checks and work limits.

    observed: (N, To, C, H, W) in [0, 1]; times: strictly increasing future times > To - 1, the first
    one the time of ``first_truth`` (N, C, H, W) in [0, 1], the ground truth it is selected with.
    num_samples: trajectories S continued from the chosen frame; num_candidates: first-frame
    candidates K. The predictor must run in float32 (as the official code). Returns
    (N, S, T, C, H, W) in [0, 1] on the predictor's device; frame 0 is the same for all S.
    """
    s = integer("num_samples", num_samples, 1)
    k = integer("num_candidates", num_candidates, 1)
    if predictor.dtype != torch.float32:
        raise ValueError(f"the official protocol runs the model in float32, but the predictor runs in "
                         f"{predictor.dtype} (use dtype float32)")
    cfg = predictor.config
    with predictor._running(), torch.no_grad():
        device = predictor.device
        obs = as_frames(observed, cfg.channels, cfg.image_size, "observed", rank=5, min_length=2, device=device)
        truth = as_frames(first_truth, cfg.channels, cfg.image_size, "first_truth", rank=4, device=device)
        n = obs.shape[0]
        if truth.shape[0] != n:
            raise ValueError(f"first_truth must have shape (N, C, H, W) = {(n, *truth.shape[1:])}, "
                             f"got {tuple(truth.shape)}")
        scheduler = make_sampler(sampler, steps, predictor.model.schedule)
        t_last = float(obs.shape[1] - 1)
        times = future_times(times, None, 1, t_last, cfg.num_future)
        chunks = predictor._plan(times, t_last, n * max(k, s))
        generator = torch.Generator(device=device).manual_seed(seed)
        frames = autoregress_from_chosen_first(
            predictor.model, obs, chunks, times, scheduler, predictor._denoiser,
            NoiseStreams.from_generator(generator, n * k, device),
            NoiseStreams.from_generator(generator, n * s, device), k, s,
            lambda candidates: select_best_first_frame(candidates, truth))
    return frames.unflatten(0, (n, s))
