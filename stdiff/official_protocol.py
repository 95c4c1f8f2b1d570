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

from .metrics._validate import unit_images
from .metrics.ssim import ssim_unchecked
from .prediction import future_times
from .planning import plan_chunks
from .sampling.loop import frame_key
from .predictor import DEFAULT_STEPS, Predictor

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
    x = cand * 2 - 1
    y = (tgt * 2 - 1).unsqueeze(1).expand_as(x)
    psnr = -10.0 * torch.log10((x - y).square().mean(dim=(-3, -2, -1)) + _PSNR_EPS)
    return psnr + ssim_unchecked(x, y, official=True)


def select_best_first_frame(candidates: Tensor, target: Tensor) -> Tensor:
    """Index of the candidate with the best :func:`first_frame_scores` per video, (N,) int64;
    ties go to the lowest index. USES GROUND TRUTH."""
    return first_frame_scores(candidates, target).argmax(dim=1)


def predict_official(predictor: Predictor, observed: Tensor, times: Sequence[float], first_truth: Tensor, *,
                     num_samples: int = OFFICIAL_CANDIDATES, num_candidates: int = OFFICIAL_CANDIDATES,
                     sampler: str = "ddpm", steps: int | None = None, seed: int = 0) -> Tensor:
    """Trajectories under the official protocol (see the module docstring).

    observed: (N, To, C, H, W) in [0, 1]; times: strictly increasing future times > To - 1, the first
    one the time of ``first_truth`` (N, C, H, W) in [0, 1], the ground truth it is selected with.
    num_samples: trajectories S continued from the chosen frame; num_candidates: first-frame
    candidates K. The predictor must run in float32 (as the official code). Returns
    (N, S, T, C, H, W) in [0, 1] on the predictor's device; frame 0 is the same for all S.
    """
    for name, value in (("num_samples", num_samples), ("num_candidates", num_candidates)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if sampler not in DEFAULT_STEPS:
        raise ValueError(f"sampler must be one of {sorted(DEFAULT_STEPS)}, got {sampler!r}")
    if predictor.dtype != torch.float32:
        raise ValueError(f"the official protocol runs the model in float32, but the predictor runs in "
                         f"{predictor.dtype} (use dtype float32)")
    obs = unit_images("observed", observed, "(N, To, C, H, W)", ndim=5)
    truth = unit_images("first_truth", first_truth, "(N, C, H, W)", ndim=4)
    if truth.shape != obs.shape[:1] + obs.shape[2:]:
        raise ValueError(f"first_truth must have shape (N, C, H, W) = {tuple(obs.shape[:1] + obs.shape[2:])}, "
                         f"got {tuple(truth.shape)}")
    cfg = predictor.config
    steps = DEFAULT_STEPS[sampler] if steps is None else steps
    limit = predictor.model.schedule.num_train_timesteps
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= limit:
        raise ValueError(f"steps must be an int in [1, {limit}], got {steps!r}")
    n, s, device = obs.shape[0], num_samples, predictor.device
    t_last = float(obs.shape[1] - 1)
    times = future_times(times, None, 1, t_last, cfg.num_future)
    chunks = plan_chunks(times, t_last, cfg.num_future, cfg.num_observed)
    generator = torch.Generator(device=device).manual_seed(seed)
    context = obs.to(device) * 2 - 1
    first = chunks[0].times
    with torch.no_grad():
        cand, cand_motion = predictor.model.sample(context, first[:1], num_candidates, sampler, steps, generator,
                                                   return_motion=True)   # (N, K, 1, ...)
        best = select_best_first_frame((cand[:, :, 0] + 1) / 2, truth.to(device))
        rows = torch.arange(n, device=device)
        frame0, motion0 = cand[rows, best, 0], cand_motion[rows, best, 0]
        chunk0 = frame0[:, None, None].expand(n, s, 1, *frame0.shape[1:])
        if len(first) > 1:
            rest = predictor.model.sample(torch.cat([context, frame0[:, None]], 1), first[1:], s, sampler, steps,
                                          generator, t0=first[0], motion_state=motion0)
            chunk0 = torch.cat([chunk0, rest], 2)
    # frames in [0, 1] by time key: the observed ones (shared by all S) and the first chunk's
    frames = {frame_key(t_last - j): (context[:, -1 - j, None].expand(n, s, *context.shape[2:]) + 1) / 2
              for j in range(context.shape[1])}
    frames.update({frame_key(t): (chunk0[:, :, i] + 1) / 2 for i, t in enumerate(first)})
    if len(chunks) > 1:  # beyond the horizon: continue each trajectory as Predictor.predict does
        c1 = chunks[1].t0
        grid = [frames[frame_key(c1 - j)] for j in reversed(range(cfg.num_observed)) if frame_key(c1 - j) in frames]
        ctx = torch.stack(grid, 2).flatten(0, 1)                            # (N*S, L, C, H, W)
        shift = c1 - (ctx.shape[1] - 1)                                     # ctx's last frame is at time c1
        later = [t for t in times if t > c1 + 1e-9]
        more = predictor.predict(ctx, times=[t - shift for t in later], sampler=sampler, steps=steps,
                                 generator=generator, progress=False).frames[:, 0]
        frames.update({frame_key(t): more[:, i].unflatten(0, (n, s)) for i, t in enumerate(later)})
    return torch.stack([frames[frame_key(t)] for t in times], 2).clamp(0, 1)
