"""Scoring predictions between frames: the stride protocol with two baselines and a motion measure.

A model trained on integer frame times is asked for frames at ``stride`` times its training rate and
scored against real frames at those times (as in Vid-ODE: train on every ``stride``-th frame, predict
at the native rate). On-grid frames (integer times) and in-between frames are scored separately,
each beside two baselines computed on the same clips:

- ``copy_last``: the last observed frame, repeated;
- ``blend``: the model's own 1x prediction (same seed) blended linearly in time between its frames,
  what a user would do without continuous time ("predict at 1x and cross-fade").

``motion`` is how far the content moves along the predicted chain relative to the truth: the path
length of the intensity centroid from the last observed frame through every predicted frame,
divided by the truth's (1.0 = exact; 0 for copy-last; below 1 when digits move too little; above 1
when they jitter). PSNR alone rewards blur; the motion ratio does not.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from .checks import integer
from .metrics import psnr, ssim

__all__ = ["METHODS", "StrideScores", "blend_in_time", "centroid_path_length", "predict_with_baselines",
           "score_clips", "stride_times"]

#: the scored predictions: the model at the fine rate, and the two baselines
METHODS = ("model", "copy_last", "blend")


def stride_times(t_last: float, horizon: int, stride: int) -> list[float]:
    """The fine query times ``t_last + j / stride`` for j = 1 .. horizon * stride."""
    stride, horizon = integer("stride", stride, 1), integer("horizon", horizon, 1)
    return [float(t_last) + j / stride for j in range(1, horizon * stride + 1)]


def blend_in_time(start: Tensor, grid: Tensor, stride: int) -> Tensor:
    """Linear blend in time of on-grid frames at the fine rate.

    start: (..., C, H, W) the frame at t_last; grid: (..., K, C, H, W) frames at t_last + 1 .. t_last + K.
    Returns (..., K * stride, C, H, W): fine frame j (time t_last + (j + 1) / stride) mixes its two
    neighbouring grid frames with weights given by its position between them.
    """
    frames = torch.cat([start.unsqueeze(-4), grid], -4)
    out = []
    for j in range(1, grid.shape[-4] * stride + 1):
        a, w = divmod(j, stride)
        out.append(frames[..., a, :, :, :] if w == 0 else
                   frames[..., a, :, :, :] * (1 - w / stride) + frames[..., a + 1, :, :, :] * (w / stride))
    return torch.stack(out, -4)


def centroid_path_length(frames: Tensor) -> Tensor:
    """Path length (pixels) of the intensity centroid through (..., T, C, H, W) frames in [0, 1] -> (...,)."""
    mass = frames.float().sum(-3)                                            # (..., T, H, W)
    total = mass.sum((-1, -2)).clamp_min(1e-6)
    ys = torch.arange(mass.shape[-2], dtype=torch.float32, device=mass.device)
    xs = torch.arange(mass.shape[-1], dtype=torch.float32, device=mass.device)
    cy = (mass.sum(-1) * ys).sum(-1) / total
    cx = (mass.sum(-2) * xs).sum(-1) / total
    centre = torch.stack([cy, cx], -1)                                       # (..., T, 2)
    return (centre[..., 1:, :] - centre[..., :-1, :]).norm(dim=-1).sum(-1)


def predict_with_baselines(predictor, observed: Tensor, stride: int, horizon: int, num_samples: int,
                           sampler: str, steps: int | None, seed: int) -> dict[str, Tensor]:
    """The model at ``stride`` x frame rate and both baselines, each (N, S, horizon * stride, C, H, W) in [0, 1].

    observed: (N, To, C, H, W) in [0, 1] at integer times 0 .. To-1. The blend uses the model's own
    1x prediction with the same seed.
    """
    t_last = float(observed.shape[1] - 1)
    fine = predictor.predict(observed, times=stride_times(t_last, horizon, stride), num_samples=num_samples,
                             sampler=sampler, steps=steps, seed=seed, progress=False).frames
    coarse = predictor.predict(observed, times=stride_times(t_last, horizon, 1), num_samples=num_samples,
                               sampler=sampler, steps=steps, seed=seed, progress=False).frames
    last = observed[:, -1].to(fine.device, fine.dtype)
    start = last[:, None].expand(-1, num_samples, *last.shape[1:])
    return {
        "model": fine,
        "copy_last": start[:, :, None].expand_as(fine),
        "blend": blend_in_time(start, coarse, stride),
    }


@dataclass
class StrideScores:
    """Per fine-time PSNR/SSIM sums (mean over samples) and motion ratios of every method, over clips.

    times: the fine times; stride: fine frames per frame interval (frame j is on the grid when
    (j + 1) % stride == 0).
    """

    times: list[float]
    stride: int
    clips: int = 0
    sums: dict[str, np.ndarray] = field(default_factory=dict)
    motion: dict[str, list[float]] = field(default_factory=dict)

    def update(self, predictions: dict[str, Tensor], truth: Tensor, last: Tensor) -> None:
        """Add a batch: predictions[method] (N, S, T, C, H, W), truth (N, T, C, H, W), last (N, C, H, W), in [0, 1]."""
        true_path = centroid_path_length(torch.cat([last[:, None], truth], 1).float())  # (N,)
        for method, pred in predictions.items():
            target = truth[:, None].expand_as(pred).float()
            for name, fn in (("psnr", psnr), ("ssim", ssim)):
                per_frame = fn(pred.float().clamp(0, 1), target).mean(1).sum(0)       # (T,)
                key = f"{method}/{name}"
                self.sums[key] = self.sums.get(key, 0) + per_frame.double().cpu().numpy()
            start = last[:, None, None].expand(-1, pred.shape[1], -1, -1, -1, -1).float()
            path = centroid_path_length(torch.cat([start, pred.float()], 2)).mean(1)   # (N,)
            keep = true_path > 0.5  # clips whose content moves at all
            self.motion.setdefault(method, []).extend((path[keep] / true_path[keep]).tolist())
        self.clips += truth.shape[0]

    def on_grid(self) -> np.ndarray:
        """Boolean mask (T,) of the fine frames at integer times."""
        return (np.arange(1, len(self.times) + 1) % self.stride) == 0

    def summary(self) -> dict[str, dict[str, float]]:
        """{method: {psnr_on_grid, psnr_between, ssim_on_grid, ssim_between, motion}} averaged over clips."""
        if self.clips == 0:
            raise ValueError("no clips were scored")
        grid = self.on_grid()
        out: dict[str, dict[str, float]] = {}
        for method in self.motion:
            row = {}
            for name in ("psnr", "ssim"):
                per_frame = self.sums[f"{method}/{name}"] / self.clips
                row[f"{name}_on_grid"] = float(per_frame[grid].mean())
                if (~grid).any():
                    row[f"{name}_between"] = float(per_frame[~grid].mean())
            row["motion"] = float(np.mean(self.motion[method])) if self.motion[method] else float("nan")
            out[method] = row
        return out

    def per_frame(self) -> list[dict[str, float]]:
        """One row per fine time: time, on_grid and every method's PSNR/SSIM."""
        grid = self.on_grid()
        rows = []
        for j, t in enumerate(self.times):
            row: dict[str, float] = {"time": t, "on_grid": bool(grid[j])}
            for key, value in sorted(self.sums.items()):
                row[key] = float(value[j] / self.clips)
            rows.append(row)
        return rows


def score_clips(predictor, clips: Sequence[Tensor] | Tensor, num_observed: int, stride: int, horizon: int,
                num_samples: int, sampler: str, steps: int | None, seed: int, batch_size: int = 8,
                progress: bool = False) -> StrideScores:
    """Run the stride protocol over native-rate clips.

    clips: (N, (num_observed - 1) * stride + 1 + horizon * stride, C, H, W) in [0, 1], frame f at time
    f / stride: observed frames are every ``stride``-th frame up to time num_observed - 1, the truth is
    every frame after it.
    """
    clips = torch.stack(list(clips)) if not isinstance(clips, Tensor) else clips
    first = (num_observed - 1) * stride
    need = first + 1 + horizon * stride
    if clips.ndim != 5 or clips.shape[1] < need:
        raise ValueError(f"clips must be (N, >= {need}, C, H, W) at {stride}x the model's frame rate, "
                         f"got {tuple(clips.shape)}")
    scores = StrideScores(stride_times(num_observed - 1, horizon, stride), stride)
    from tqdm.auto import tqdm

    for start in tqdm(range(0, len(clips), batch_size), desc="stride protocol", unit="batch", disable=not progress):
        batch = clips[start:start + batch_size]
        observed = batch[:, 0:first + 1:stride]
        truth = batch[:, first + 1:need]
        preds = predict_with_baselines(predictor, observed, stride, horizon, num_samples, sampler, steps,
                                       seed + start)
        scores.update({k: v.cpu() for k, v in preds.items()}, truth, observed[:, -1])
    return scores
