"""Clip transform: decoded uint8 frames -> (T, C, H, W) float32 in [0, 1].

One transform per clip, so every frame of a clip gets the same crop and the same flips.
Geometry: the shorter side is scaled to ``resize`` and a square ``image_size`` crop is
taken (centre or random). It is computed as crop-then-resize in source pixels, which is
the official KTH preprocessing (centre crop 120x120 of 160x120, then resize to 64) and the
official offline preprocessing of KITTI and Cityscapes ("centre crop and resize to 128").
Resizing is bicubic with antialiasing (as the official code), clamped back to [0, 1].
Random crops and flips draw from torch's global RNG (seed it, or rely on DataLoader's
per-worker seeding).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..checks import integer

__all__ = ["ClipTransform", "LUMA_WEIGHTS"]

LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601, as PIL's convert("L")
_CROPS = ("center", "random")


@dataclass(frozen=True)
class ClipTransform:
    """Frames (T, H, W, 3) or (T, H, W) uint8 -> (T, C, image_size, image_size) float32 in [0, 1].

    Args:
        image_size: output side (square frames).
        channels: 1 (luma) or 3 (RGB; grey input is repeated).
        resize: True scales the shorter side to ``image_size``; an int scales it to that
            many pixels (>= image_size, crop a part of the frame); False keeps the source
            resolution (frames must be at least ``image_size`` on each side).
        crop: "center" or "random" (one offset for the whole clip).
        hflip: flip the clip left-right with probability 0.5.
        vflip: flip the clip upside-down with probability 0.5 (official KTH/BAIR/KITTI training).
    """

    image_size: int
    channels: int = 3
    resize: bool | int = True
    crop: str = "center"
    hflip: bool = False
    vflip: bool = False

    def __post_init__(self) -> None:
        integer("image_size", self.image_size, 1)
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels!r}")
        if not isinstance(self.resize, (bool, int)) or (
            not isinstance(self.resize, bool) and self.resize < self.image_size
        ):
            raise ValueError(
                f"resize must be True, False or an int >= image_size ({self.image_size}), got {self.resize!r}"
            )
        if self.crop not in _CROPS:
            raise ValueError(f"crop must be one of {_CROPS}, got {self.crop!r}")

    def _region(self, height: int, width: int) -> int:
        """Side of the square source region that becomes the output frame."""
        short = min(height, width)
        if self.resize is False:
            if short < self.image_size:
                raise ValueError(
                    f"frames of {height}x{width} are smaller than image_size {self.image_size}; use resize=True"
                )
            return self.image_size
        target = self.image_size if self.resize is True else int(self.resize)
        return min(short, max(1, round(self.image_size * short / target)))

    def _offset(self, extent: int, region: int) -> int:
        if self.crop == "center":
            return (extent - region) // 2
        return int(torch.randint(extent - region + 1, ()).item())

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        """(T, H, W, 3) or (T, H, W) uint8 -> (T, C, image_size, image_size) float32 in [0, 1]."""
        if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim not in (3, 4):
            raise TypeError(
                f"frames must be a uint8 numpy array (T, H, W) or (T, H, W, 3), got "
                f"{getattr(frames, 'dtype', type(frames))} {getattr(frames, 'shape', '')}"
            )
        if frames.ndim == 4 and frames.shape[-1] != 3:
            raise ValueError(f"frames must have 3 colour channels last, got shape {frames.shape}")
        _, height, width = frames.shape[:3]
        region = self._region(height, width)
        top, left = self._offset(height, region), self._offset(width, region)
        crop = torch.from_numpy(np.ascontiguousarray(frames[:, top : top + region, left : left + region]))
        clip = crop.float().div_(255.0)
        clip = clip[:, None] if clip.ndim == 3 else clip.permute(0, 3, 1, 2)  # (T, C0, r, r)
        if self.channels == 1 and clip.shape[1] == 3:
            weights = torch.tensor(LUMA_WEIGHTS, dtype=clip.dtype).view(1, 3, 1, 1)
            clip = (clip * weights).sum(dim=1, keepdim=True)
        elif self.channels == 3 and clip.shape[1] == 1:
            clip = clip.expand(-1, 3, -1, -1)
        if region != self.image_size:
            size = (self.image_size, self.image_size)
            clip = F.interpolate(clip, size=size, mode="bicubic", align_corners=False, antialias=True)
        clip = clip.clamp(0.0, 1.0)
        if self.hflip and torch.rand(()) < 0.5:
            clip = clip.flip(-1)
        if self.vflip and torch.rand(()) < 0.5:
            clip = clip.flip(-2)
        return clip.contiguous()
