"""Quality against speed of sampler settings: PSNR, SSIM, diversity and frames/s per setting.

Diversity, two measures over the S samples of each video (0 when all samples are equal):
- ``pixel_std``: the per-pixel standard deviation across samples (population, ddof 0), averaged
  over pixels, channels, frames and videos;
- ``pairwise_l1``: the mean absolute difference between two samples of a video, averaged over all
  unordered sample pairs, pixels, channels, frames and videos (None when S = 1).
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from itertools import combinations
from typing import Any

import torch
from torch import Tensor

from ..checks import integer
from ._validate import unit_images
from .psnr import psnr
from .ssim import ssim

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _dtype(value: object) -> torch.dtype:
    if isinstance(value, torch.dtype) and value in _DTYPES.values():
        return value
    if isinstance(value, str) and value in _DTYPES:
        return _DTYPES[value]
    raise ValueError(f"dtype must be one of {sorted(_DTYPES)} (or the torch dtype), got {value!r}")


def _quality(pred: Tensor, truth: Tensor, official_ssim: bool) -> dict[str, float | None]:
    """pred (N, S, T, C, H, W), truth (N, T, C, H, W), both in [0, 1] -> the row's quality columns."""
    target = truth.unsqueeze(1).expand_as(pred)
    s = pred.shape[1]
    pairs = list(combinations(range(s), 2))
    l1 = (sum((pred[:, i] - pred[:, j]).abs().mean() for i, j in pairs) / len(pairs)) if pairs else None
    return {"psnr": psnr(pred, target).mean().item(), "ssim": ssim(pred, target, official=official_ssim).mean().item(),
            "pixel_std": pred.std(dim=1, correction=0).mean().item(),
            "pairwise_l1": None if l1 is None else float(l1)}


def quality_vs_speed(predictor, clips: Tensor, num_observed: int, settings: Sequence[tuple[str, int, Any]], *,
                     num_samples: int = 4, seed: int = 0, official_ssim: bool = False,
                     warmup: bool = True) -> list[dict[str, Any]]:
    """Score and time each sampler setting on the same clips; a copy-last baseline row comes last.

    predictor: a ``stdiff.Predictor``. clips: (N, T, C, H, W) in [0, 1]; the first ``num_observed``
    frames are observed, the other T - num_observed (at times num_observed .. T-1) are predicted
    and scored. settings: (sampler, steps, dtype) each, dtype "float32"/"bfloat16"/"float16" or
    the torch dtype. num_samples S and seed go to every ``predict`` call; official_ssim selects
    ``ssim(official=True)``; warmup runs one small prediction per setting before timing it.
    Returns rows ``{"method", "sampler", "steps", "dtype", "psnr", "ssim", "pixel_std",
    "pairwise_l1", "seconds", "frames_per_second"}`` (PSNR and SSIM averaged over videos, samples
    and predicted frames; seconds and frames/s of the ``predict`` call, N*S*(T - num_observed)
    frames, CUDA synchronised; None for the baseline). The predictor's dtype is restored.
    """
    v = unit_images("clips", clips, "(N, T, C, H, W)", ndim=5)
    integer("num_observed", num_observed, 2, v.shape[1] - 1)
    rows_in = [tuple(s) for s in settings] if isinstance(settings, Sequence) else None
    if not rows_in or any(len(s) != 3 for s in rows_in):
        raise ValueError(f"settings must be a non-empty list of (sampler, steps, dtype), got {settings!r}")
    observed, truth = v[:, :num_observed], v[:, num_observed:].to(predictor.device)
    times = [float(t) for t in range(num_observed, v.shape[1])]
    original = predictor.dtype_request  # e.g. "auto"
    rows = []
    try:
        for sampler, steps, dtype in rows_in:
            dtype = _dtype(dtype)
            predictor.to(dtype=dtype)
            call = dict(sampler=sampler, steps=steps, seed=seed, progress=False)
            if warmup:
                predictor.predict(observed[:1], times=times[:1], num_samples=1, **call)
            sync = torch.cuda.synchronize if predictor.device.type == "cuda" else (lambda: None)
            sync()
            start = time.perf_counter()
            pred = predictor.predict(observed, times=times, num_samples=num_samples, **call).frames
            sync()
            seconds = time.perf_counter() - start
            rows.append({"method": "model", "sampler": sampler, "steps": steps, "dtype": str(dtype).split(".")[-1],
                         **_quality(pred.float(), truth, official_ssim), "seconds": seconds,
                         "frames_per_second": pred.shape[0] * pred.shape[1] * pred.shape[2] / seconds})
    finally:
        predictor.to(dtype=original)
    copy_last = observed[:, -1:, None].expand(-1, 1, len(times), *observed.shape[2:]).to(truth.device)
    rows.append({"method": "copy_last", "sampler": None, "steps": None, "dtype": None,
                 **_quality(copy_last, truth, official_ssim), "seconds": None, "frames_per_second": None})
    return rows
