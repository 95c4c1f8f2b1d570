"""Stochastic moving digits, generated on the fly (the project's built-in default data).

Each clip holds 1-2 digits that move in straight lines at integer velocities and bounce off
the canvas walls; at every wall hit the digit draws a NEW random velocity that points away
from the wall (the stochastic bounce of SM-MNIST, Denton & Fergus 2018). Digits are added
and the sum is clipped to [0, 1]; RGB clips give every digit its own random colour.

Every clip is a pure function of ``(seed, split, index)``: the same index always gives the
same clip, in any process or DataLoader worker.

Clips can be drawn at ``rate`` frames per motion step: between two steps a digit moves in a straight
line from one step's position to the next and is drawn with sub-pixel (bilinear) weights, so a clip
at 4x frame rate has real in-between frames, and its every ``rate``-th frame is the 1x clip.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..checks import integer
from .digits import sklearn_digits

__all__ = ["MovingDigits", "SyntheticMovingDigits", "bounce_trajectory"]

_SPLIT_CODES = {"train": 0, "test": 1}


def _digit_range(num_digits: int | Sequence[int]) -> tuple[int, int]:
    """``n`` or ``(low, high)`` -> inclusive range (low, high) with 1 <= low <= high."""
    pair = (num_digits, num_digits) if isinstance(num_digits, (int, np.integer)) else tuple(num_digits)
    if (
        len(pair) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair)
        or not 1 <= pair[0] <= pair[1]
    ):
        raise ValueError(
            f"num_digits must be an int >= 1 or a range (low, high) with 1 <= low <= high, got {num_digits!r}"
        )
    return int(pair[0]), int(pair[1])


def _random_velocity(rng: np.random.Generator, max_speed: int) -> tuple[int, int]:
    """Uniform integer (vy, vx) in [-max_speed, max_speed]^2 without (0, 0)."""
    side = 2 * max_speed + 1
    k = int(rng.integers(side * side - 1))
    k += k >= side * side // 2  # skip the centre cell, (0, 0)
    return k // side - max_speed, k % side - max_speed


def bounce_trajectory(
    rng: np.random.Generator, num_frames: int, limit: int, max_speed: int, hits: list[int] | None = None
) -> np.ndarray:
    """Top-left positions (num_frames, 2) int64 (y, x) of one digit, each within [0, limit].

    Start uniform, velocity uniform without (0, 0). Before drawing a frame a position past a
    wall is clamped onto it and the velocity is redrawn: the component normal to that wall
    from [1, max_speed] pointing inwards, the other one from [-max_speed, max_speed].
    ``hits``: when given, the indices of the frames drawn just after a wall hit are appended.
    """
    pos = rng.integers(0, limit + 1, size=2)
    vel = list(_random_velocity(rng, max_speed))
    out = np.empty((num_frames, 2), dtype=np.int64)
    for t in range(num_frames):
        for axis in (0, 1):
            if pos[axis] < 0 or pos[axis] > limit:
                if hits is not None:
                    hits.append(t)
                inward = 1 if pos[axis] < 0 else -1
                pos[axis] = 0 if pos[axis] < 0 else limit
                vel[axis] = inward * int(rng.integers(1, max_speed + 1))
                vel[1 - axis] = int(rng.integers(-max_speed, max_speed + 1))
        out[t] = pos
        pos = pos + vel
    return out


def _positions_at(path: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Positions (len(times), 2) float64 at ``times`` on the piecewise-linear path through ``path`` (steps, 2)."""
    step = np.minimum(np.floor(times).astype(np.int64), len(path) - 1)
    nxt = np.minimum(step + 1, len(path) - 1)
    frac = (times - step)[:, None]
    return path[step] * (1 - frac) + path[nxt] * frac


class MovingDigits(Dataset):
    """Bouncing digits from any digit bank; item ``i`` is a (T, C, H, W) float32 clip in [0, 1].

    Args:
        bank: (M, d, d) float array in [0, 1], the digit images (d <= image_size).
        num_videos: dataset length (clips are generated, so this is just the epoch size).
        num_frames: T, frames per clip (To + Tp).
        image_size: canvas side H = W.
        channels: 1 (grey) or 3 (each digit gets a random colour with max channel 1).
        num_digits: digits per clip, an int or an inclusive range ``(low, high)``.
        seed: base seed; clip ``i`` uses the stream ``(seed, split, i)``.
        split_code: mixed into the stream so that train and test clips differ.
        max_speed: largest |velocity| component in pixels per frame.
        rate: frames per motion step (frame f is at time f / rate); the frames at integer times are
            the ``rate=1`` clip's, the others show the digits at their interpolated sub-pixel positions.
    """

    def __init__(
        self,
        bank: np.ndarray,
        num_videos: int,
        num_frames: int,
        image_size: int,
        channels: int = 1,
        num_digits: int | Sequence[int] = 2,
        seed: int = 0,
        split_code: int = 0,
        max_speed: int = 4,
        rate: int = 1,
    ) -> None:
        if not isinstance(bank, np.ndarray) or bank.ndim != 3 or bank.shape[1] != bank.shape[2] or len(bank) == 0:
            got = getattr(bank, "shape", type(bank))
            raise ValueError(f"bank must be a non-empty (M, d, d) numpy array, got {got}")
        self.num_videos = integer("num_videos", num_videos, 1)
        self.num_frames = integer("num_frames", num_frames, 1)
        self.image_size = integer("image_size", image_size, 1)
        if bank.shape[1] > self.image_size:
            raise ValueError(f"digit size {bank.shape[1]} must be <= image_size {self.image_size}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        self.bank = bank
        self.channels = int(channels)
        self.num_digits = _digit_range(num_digits)
        self.seed = integer("seed", seed, 0)
        self.split_code = integer("split_code", split_code, 0)
        self.max_speed = integer("max_speed", max_speed, 1)
        self.rate = integer("rate", rate, 1)

    def __len__(self) -> int:
        return self.num_videos

    def generate(self, index: int) -> np.ndarray:
        """Clip ``index`` as a numpy array (T, C, H, W) float32 in [0, 1] (frame f at time f / rate)."""
        size, d = self.image_size, self.bank.shape[1]
        canvas = np.zeros((self.num_frames, size, size, self.channels), dtype=np.float32)
        frames = np.arange(self.num_frames)[:, None, None]
        offsets = np.arange(d)
        limit = size - d
        for digit, colour, path in self._digits(index):
            position = _positions_at(path, np.arange(self.num_frames) / self.rate)  # (T, 2) float
            base = np.floor(position).astype(np.int64)
            frac = (position - base).astype(np.float32)
            for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
                weight = (frac[:, 0] if dy else 1 - frac[:, 0]) * (frac[:, 1] if dx else 1 - frac[:, 1])
                top = np.minimum(base + (dy, dx), limit)  # a zero weight may point one pixel past the wall
                rows = (top[:, 0, None] + offsets)[:, :, None]  # (T, d, 1)
                cols = (top[:, 1, None] + offsets)[:, None, :]  # (T, 1, d)
                canvas[frames, rows, cols] += weight[:, None, None, None] * digit[None, :, :, None] * colour
        np.clip(canvas, 0.0, 1.0, out=canvas)
        return np.ascontiguousarray(canvas.transpose(0, 3, 1, 2))

    def _digits(self, index: int, hits: list[int] | None = None):
        """The digits of clip ``index``: (image (d, d), colour (C,), path (steps, 2)) each, from its own stream."""
        for _, digit, colour, path in self._tracks(index, hits):
            yield digit, colour, path

    def _tracks(self, index: int, hits: list[int] | None = None):
        """(bank index, image, colour, path) of each digit of clip ``index``."""
        if not 0 <= index < self.num_videos:
            raise IndexError(f"index {index} out of range for {self.num_videos} videos")
        rng = np.random.default_rng([self.seed, self.split_code, int(index)])
        limit = self.image_size - self.bank.shape[1]
        for _ in range(int(rng.integers(self.num_digits[0], self.num_digits[1] + 1))):
            which = int(rng.integers(len(self.bank)))
            digit = self.bank[which].astype(np.float32)
            colour = np.ones(1, np.float32) if self.channels == 1 else rng.uniform(0.2, 1.0, 3).astype(np.float32)
            yield which, digit, colour / colour.max(), bounce_trajectory(rng, self.num_steps, limit, self.max_speed, hits)

    def digit_tracks(self, index: int) -> list[tuple[int, np.ndarray]]:
        """(bank index, top-left positions (num_frames, 2) float64 at the clip's frame times) of each digit."""
        times = np.arange(self.num_frames) / self.rate
        return [(which, _positions_at(path, times)) for which, _, _, path in self._tracks(index)]

    @property
    def num_steps(self) -> int:
        """Motion steps a clip spans: its frames lie at times 0 .. (num_frames - 1) / rate."""
        return -(-(self.num_frames - 1) // self.rate) + 1

    def wall_hits(self, index: int) -> list[int]:
        """Sorted motion steps (integer times) of clip ``index`` drawn just after a digit hit a wall
        (a new random velocity)."""
        hits: list[int] = []
        for _ in self._digits(index, hits):
            pass
        return sorted(set(hits))

    def __getitem__(self, index: int) -> torch.Tensor:
        """(T, C, H, W) float32 tensor in [0, 1]."""
        return torch.from_numpy(self.generate(index))


class SyntheticMovingDigits(MovingDigits):
    """Stochastic moving digits from scikit-learn's bundled 8x8 digits (no download needed).

    Train clips draw from the first 1,437 digit images, test clips from the other 360, and
    the two splits use different random streams. Defaults scale with the canvas: digit box
    ``round(7/16 * image_size)`` (28 px on 64x64, 14 px on 32x32) and speed up to
    ``round(image_size / 16)`` px/frame (4 on 64x64, as in SM-MNIST; 2 on 32x32). ``rate``: frames
    per motion step (see :class:`MovingDigits`).

    Returns (T, C, H, W) float32 tensors in [0, 1], T = ``num_frames``.
    """

    def __init__(
        self,
        num_videos: int = 10_000,
        num_frames: int = 15,
        image_size: int = 64,
        channels: int = 1,
        num_digits: int | Sequence[int] = (1, 2),
        seed: int = 0,
        split: str = "train",
        digit_size: int | None = None,
        max_speed: int | None = None,
        rate: int = 1,
    ) -> None:
        if split not in _SPLIT_CODES:
            raise ValueError(f"split must be one of {tuple(_SPLIT_CODES)}, got {split!r}")
        size = integer("image_size", image_size, 8)
        digit_size = max(4, round(size * 7 / 16)) if digit_size is None else digit_size
        max_speed = max(1, round(size / 16)) if max_speed is None else max_speed
        super().__init__(
            sklearn_digits(digit_size, split), num_videos, num_frames, size, channels,
            num_digits, seed, _SPLIT_CODES[split], max_speed, rate,
        )
        self.split = split
