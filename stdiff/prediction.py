"""Inputs and outputs of a prediction: frame conversion/validation and the :class:`Prediction` result.

Public frames are in [0, 1] (floats) or uint8 [0, 255]; inside the model they are in [-1, 1].
"""
from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .checks import integer
from .fileio import atomic_path
from .validation import check_tensor_storage

__all__ = ["MIN_TIME_GAP", "Prediction", "as_frames", "frame_key", "future_times", "render_grid"]

#: Query times are below this (2**53: every integer frame time is exact in float64).
MAX_TIME = float(2**53)
#: Times closer than this (frame units) would be one frame: query times must be at least this far apart.
MIN_TIME_GAP = 1e-6


def frame_key(time: float) -> int:
    """The identity of the frame at ``time``: an int, equal for times closer than :data:`MIN_TIME_GAP`.
    The one definition used to look frames up by time and to name a frame's noise."""
    return round(time * 1_000_000)

#: Standard deviation shown at full brightness in uncertainty maps (the largest possible
#: per-pixel std of values in [0, 1]).
STD_VMAX = 0.5
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _describe(x: object) -> str:
    if isinstance(x, (Tensor, np.ndarray)):
        return f"{type(x).__name__} of shape {tuple(x.shape)} and dtype {x.dtype}"
    return type(x).__name__


def as_frames(frames: object, channels: int, image_size: int, name: str = "frames", rank: int = 5,
              min_length: int = 1, device: str | torch.device | None = None) -> Tensor:
    """Validate and convert frames to a float32 tensor in [0, 1] on ``device`` (default: the input's).

    The input moves once, in its own dtype (uint8 stays uint8 on the way), and is converted and
    checked there.
    ``rank=5``: (N, T, C, H, W) or (T, C, H, W) (-> N = 1); ``rank=4``: (N, C, H, W) or (C, H, W)
    (-> N = 1). Accepts torch tensors or numpy arrays, floating in [0, 1] or uint8 in [0, 255].
    Raises TypeError/ValueError naming ``name`` for a wrong type, rank, size, channel count, NaN,
    out-of-range values or fewer than ``min_length`` frames along T.
    """
    if isinstance(frames, np.ndarray):
        if frames.dtype == np.uint8 or np.issubdtype(frames.dtype, np.floating):
            frames = torch.from_numpy(np.ascontiguousarray(frames))
        else:
            raise TypeError(f"{name} must be floating point in [0, 1] or uint8, got numpy dtype {frames.dtype}")
    if not isinstance(frames, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {_describe(frames)}")
    check_tensor_storage(name, frames)
    layout = "(N, T, C, H, W) or (T, C, H, W)" if rank == 5 else "(N, C, H, W) or (C, H, W)"
    if frames.dim() == rank - 1:
        frames = frames.unsqueeze(0)
    if frames.dim() != rank:
        raise ValueError(f"{name} must have shape {layout}, got {_describe(frames)}")
    if frames.shape[-3] != channels:
        raise ValueError(f"{name} must have {channels} channel(s) (C, dim -3) for this model, got shape "
                         f"{tuple(frames.shape)}")
    if tuple(frames.shape[-2:]) != (image_size, image_size):
        raise ValueError(f"{name} must be {image_size}x{image_size} pixels (H, W) for this model, got shape "
                         f"{tuple(frames.shape)}")
    if frames.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one video (N >= 1), got shape {tuple(frames.shape)}")
    if rank == 5 and frames.shape[1] < min_length:
        raise ValueError(f"{name} must hold at least {min_length} frames (T, dim -4), got shape "
                         f"{tuple(frames.shape)}")
    if frames.dtype != torch.uint8 and frames.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must be floating point in [0, 1] or uint8, got dtype {frames.dtype}")
    frames = frames.detach().to(frames.device if device is None else device)
    if frames.dtype == torch.uint8:
        return frames.to(torch.float32) / 255.0
    out = frames.to(torch.float32)
    low, high = (float(v) for v in torch.aminmax(out))  # NaN propagates to both
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{name} must lie in [0, 1] (floats) or be uint8, got values in [{low:.4g}, {high:.4g}]")
    return out


def _is_time(t: object) -> bool:
    """A number that converts to a finite float below MAX_TIME in magnitude."""
    try:
        return abs(float(t)) < MAX_TIME
    except OverflowError:
        return False


def future_times(times: object, num_frames: object, fps: object, t_last: float, default_frames: int,
                 max_frames: int | None = None) -> list[float]:
    """The query times: ``times`` as given, or ``t_last + k / fps`` for k = 1..num_frames.

    times: strictly increasing finite reals, all > t_last (frame units: observed frames are at
    0, 1, ..., t_last), at least :data:`MIN_TIME_GAP` apart and after t_last; fractions allowed.
    Give ``times`` or ``num_frames`` (default ``default_frames``), not both. fps: frames per
    original frame interval (4 = 4x frame rate), finite, > 0 and at most 1 / MIN_TIME_GAP.
    Times are below :data:`MAX_TIME`; ``num_frames`` at most ``max_frames`` (when given): both are
    checked arithmetically before the list of times is built.
    """
    if times is not None:
        if num_frames is not None:
            raise ValueError("give either times or num_frames (with fps), not both")
        if isinstance(times, Tensor):
            check_tensor_storage("times", times)
        if isinstance(times, (Tensor, np.ndarray)):
            if times.ndim != 1:
                raise ValueError(f"times must be 1-D, got shape {tuple(times.shape)}")
            times = times.tolist()
        if isinstance(times, (str, bytes)) or not isinstance(times, Sequence):
            raise TypeError(f"times must be a sequence of numbers, got {type(times).__name__}")
        if len(times) == 0:
            raise ValueError("times must not be empty")
        if any(isinstance(t, bool) or not isinstance(t, (int, float, np.integer, np.floating)) for t in times):
            raise TypeError(f"times must hold only real numbers, got {list(times)!r}")
        bad = next((t for t in times if not _is_time(t)), None)
        if bad is not None:
            raise ValueError(f"times must be finite numbers below {MAX_TIME:g} (2**53), got {bad!r:.40}")
        out = [float(t) for t in times]
        if any(b <= a for a, b in zip(out, out[1:])):
            raise ValueError(f"times must be strictly increasing, got {out}")
        if out[0] <= t_last:
            raise ValueError(f"times must all be after the last observed frame's time {t_last:g} "
                             f"(observed frames are at 0..{t_last:g}), got first time {out[0]:g}")
        gaps = [b - a for a, b in zip([t_last] + out, out)]
        if min(gaps) < MIN_TIME_GAP:
            k = gaps.index(min(gaps))
            after = f"the last observed time {t_last:g}" if k == 0 else f"time {out[k - 1]!r}"
            raise ValueError(f"times must be at least {MIN_TIME_GAP:g} frame units apart and after the last "
                             f"observed time (closer times are one frame), got {out[k]!r} after {after}")
        return out
    n = integer("num_frames", default_frames if num_frames is None else num_frames, 1)
    if max_frames is not None and n > max_frames:
        source = "num_frames" if num_frames is not None else "the model's num_future (default num_frames)"
        raise ValueError(f"{source} = {n:,} is above the limit max_frames={max_frames:,} (every time is a "
                         "denoised frame)")
    if isinstance(fps, bool) or not isinstance(fps, (int, float, np.integer, np.floating)) \
            or not math.isfinite(fps) or not 0 < fps <= 1 / MIN_TIME_GAP:
        raise ValueError(f"fps must be a finite number in (0, {1 / MIN_TIME_GAP:g}] (frames per original frame "
                         f"interval; closer frames would be one frame), got {fps!r}")
    if int(n) > float(fps) * (MAX_TIME - t_last):  # the last time, t_last + n / fps, must stay below MAX_TIME
        raise ValueError(f"fps={fps!r} with num_frames={int(n):,} puts the last time beyond {MAX_TIME:g} (2**53) "
                         "frame units: use a larger fps or fewer frames")
    return [t_last + k / float(fps) for k in range(1, int(n) + 1)]


# ---- rendering ----------------------------------------------------------------------------------
def _to_rgb(images: Tensor) -> np.ndarray:
    """(..., C, H, W) in [0, 1] -> (..., H, W, 3) uint8."""
    x = images.detach().float().cpu().clamp(0, 1)
    if x.shape[-3] == 1:
        x = x.expand(*x.shape[:-3], 3, *x.shape[-2:])
    return (x.movedim(-3, -1) * 255).round().to(torch.uint8).numpy()


def _heatmap(std: Tensor) -> np.ndarray:
    """Per-pixel std (..., C, H, W) -> colour-mapped (..., H, W, 3) uint8 (magma, 0 .. STD_VMAX)."""
    from matplotlib import colormaps

    value = (std.detach().float().cpu().mean(dim=-3) / STD_VMAX).clamp(0, 1).numpy()
    return (colormaps["magma"](value)[..., :3] * 255).round().astype(np.uint8)


def render_grid(cells: list[list[np.ndarray | None]], pad: int = 2, scale: int = 1,
                background: tuple[int, int, int] = (32, 32, 32), empty: tuple[int, int, int] = (72, 72, 72)
                ) -> np.ndarray:
    """Tile (H, W, 3) uint8 images into one (rows, cols) grid image; None cells are filled with
    ``empty``, the padding between cells with ``background``."""
    h, w = next(c for row in cells for c in row if c is not None).shape[:2]
    rows, cols = len(cells), max(len(r) for r in cells)
    out = np.empty((pad + rows * (h + pad), pad + cols * (w + pad), 3), np.uint8)
    out[:] = background
    for i, row in enumerate(cells):
        for j, cell in enumerate(row):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[y:y + h, x:x + w] = empty if cell is None else cell
    if scale > 1:
        out = out.repeat(scale, axis=0).repeat(scale, axis=1)
    return out


@dataclass
class Prediction:
    """Predicted frames of N videos, S samples each, at T future times.

    frames: (N, S, T, C, H, W) float32 in [0, 1]; times: the T query times (frame units, the
    observed frames being at 0 .. To-1); observed: (N, To, C, H, W) in [0, 1], the context;
    motion: (N, S, T, F, h, w) motion states at ``times`` (when asked for), else None.
    """

    frames: Tensor
    times: list[float]
    observed: Tensor | None = None
    motion: Tensor | None = None

    @property
    def num_samples(self) -> int:
        return self.frames.shape[1]

    def mean(self) -> Tensor:
        """Per-pixel mean over samples: (N, T, C, H, W)."""
        return self.frames.mean(dim=1)

    def std(self) -> Tensor:
        """Per-pixel standard deviation over samples (the uncertainty map): (N, T, C, H, W); 0 for S = 1."""
        return self.frames.std(dim=1, correction=0)

    def _ground_truth_columns(self, ground_truth: Tensor | None, ground_truth_times: Sequence[float] | None
                              ) -> list[Tensor | None] | None:
        """Ground truth aligned to ``times``: one (N, C, H, W) or None per time."""
        if ground_truth is None:
            return None
        n, _, t, c, h, w = self.frames.shape
        gt_times = list(self.times) if ground_truth_times is None else [float(s) for s in ground_truth_times]
        if not isinstance(ground_truth, Tensor) or tuple(ground_truth.shape) != (n, len(gt_times), c, h, w):
            raise ValueError(f"ground_truth must be a tensor of shape {(n, len(gt_times), c, h, w)} "
                             f"(N, len(ground_truth_times), C, H, W), got {_describe(ground_truth)}")
        lookup = {frame_key(s): ground_truth[:, k] for k, s in enumerate(gt_times)}
        return [lookup.get(frame_key(s)) for s in self.times]

    def score(self, ground_truth: Tensor, ground_truth_times: Sequence[float] | None = None) -> dict[str, float]:
        """PSNR and SSIM against the ground truth at the times that have one.

        ground_truth: (N, Tg, C, H, W) in [0, 1] at ``ground_truth_times`` (default: ``times``).
        Returns ``psnr_mean``/``ssim_mean`` (averaged over videos, samples and scored frames),
        ``psnr_best``/``ssim_best`` (per video the sample with the best average over the scored
        frames: an oracle best-of-S) and ``frames_scored``.
        """
        from .metrics import psnr, ssim

        columns = self._ground_truth_columns(ground_truth, ground_truth_times)
        keep = [k for k, c in enumerate(columns) if c is not None]
        if not keep:
            raise ValueError("ground_truth_times share no time with the predicted times")
        pred = self.frames[:, :, keep].float().cpu()
        truth = torch.stack([columns[k] for k in keep], 1).float().cpu()[:, None].expand_as(pred)
        out: dict[str, float] = {"frames_scored": float(len(keep))}
        for name, metric in (("psnr", psnr), ("ssim", ssim)):
            per_sample = metric(pred, truth).mean(dim=2)                     # (N, S)
            out[f"{name}_mean"] = float(per_sample.mean())
            out[f"{name}_best"] = float(per_sample.max(dim=1).values.mean())
        return out

    def save_png_grid(self, path: str | os.PathLike, ground_truth: Tensor | None = None,
                      ground_truth_times: Sequence[float] | None = None, scale: int = 2) -> None:
        """One PNG: per video, a row of observed frames + ground truth (when given), one row per
        sample, and a row of uncertainty maps (std over samples, magma colours, 0 .. 0.5);
        columns are the observed frames then the predicted times.

        ground_truth: (N, Tg, C, H, W) in [0, 1] at ``ground_truth_times`` (default: ``times``);
        times without ground truth stay empty (e.g. the in-between frames of a 4x prediction).
        """
        gt = self._ground_truth_columns(ground_truth, ground_truth_times)
        frames = _to_rgb(self.frames)
        std = _heatmap(self.std())
        observed = _to_rgb(self.observed) if self.observed is not None else None
        n_obs = 0 if observed is None else observed.shape[1]
        rows: list[list[np.ndarray | None]] = []
        for i in range(frames.shape[0]):
            if observed is not None or gt is not None:
                rows.append([observed[i, k] for k in range(n_obs)]
                            + [None if gt is None or gt[k] is None else _to_rgb(gt[k][i]) for k in range(len(self.times))])
            for s in range(frames.shape[1]):
                rows.append([None] * n_obs + [frames[i, s, k] for k in range(len(self.times))])
            rows.append([None] * n_obs + [std[i, k] for k in range(len(self.times))])
        _save_png(path, render_grid(rows, scale=scale))

    def save_frames(self, folder: str | os.PathLike) -> list[Path]:
        """One PNG per predicted frame, ``video<n>_sample<s>_t<time>.png`` in ``folder``; returns the paths."""
        images = _to_rgb(self.frames)
        paths = []
        for (n, s), k in itertools.product(np.ndindex(*images.shape[:2]), range(len(self.times))):
            path = Path(folder) / f"video{n}_sample{s}_t{self.times[k]:g}.png"
            _save_png(path, images[n, s, k])
            paths.append(path)
        return paths

    def save_gif(self, path: str | os.PathLike, ground_truth: Tensor | None = None,
                 ground_truth_times: Sequence[float] | None = None, fps: float = 4.0, scale: int = 2) -> None:
        """Animated GIF: one row per video with columns [ground truth (when given)], the S samples and
        the uncertainty map; the observed frames play first (in every column but the map).

        ground_truth as in :meth:`save_png_grid`; fps: GIF frames per second.
        """
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        gt = self._ground_truth_columns(ground_truth, ground_truth_times)
        frames = _to_rgb(self.frames)
        std = _heatmap(self.std())
        n, s = frames.shape[:2]
        pictures = []
        if self.observed is not None:
            observed = _to_rgb(self.observed)
            for k in range(observed.shape[1]):
                rows = [[observed[i, k]] * (s + (gt is not None)) + [None] for i in range(n)]
                pictures.append(render_grid(rows, scale=scale, background=(90, 90, 90)))
        for k in range(len(self.times)):
            rows = []
            for i in range(n):
                truth = [] if gt is None else [None if gt[k] is None else _to_rgb(gt[k][i])]
                rows.append(truth + [frames[i, j, k] for j in range(s)] + [std[i, k]])
            pictures.append(render_grid(rows, scale=scale, background=(200, 80, 30)))
        _save_gif(path, pictures, fps)


def _save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def _save_gif(path: str | os.PathLike, pictures: list[np.ndarray], fps: float) -> None:
    from PIL import Image

    images = [Image.fromarray(p) for p in pictures]
    with atomic_path(path, suffix=".gif") as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                       duration=max(20, round(1000 / fps)), loop=0)
