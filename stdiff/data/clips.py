"""Clip windows over videos of known length (shared by the frame-folder and video-file datasets).

A clip is ``num_frames`` frames taken every ``frame_step`` frames, so it spans
``(num_frames - 1) * frame_step + 1`` source frames. By default windows do not overlap
(``clip_stride`` = span) and the unused remainder is split evenly before and after them,
as the official STDiff loaders do (KTH, BAIR, KITTI, Cityscapes); ``clip_stride=1`` gives
every window. :class:`ClipDataset` is the dataset base of both: clip index, transform, items.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from ..checks import integer
from .transforms import ClipTransform

__all__ = ["clip_span", "clip_starts", "ClipIndex", "ClipDataset"]


def clip_span(num_frames: int, frame_step: int = 1) -> int:
    """Source frames covered by one clip: (num_frames - 1) * frame_step + 1."""
    return (integer("num_frames", num_frames, 1) - 1) * integer("frame_step", frame_step, 1) + 1


def clip_starts(length: int, span: int, clip_stride: int | None = None) -> list[int]:
    """First-frame indices of all windows of ``span`` frames in a video of ``length`` frames."""
    stride = span if clip_stride is None else integer("clip_stride", clip_stride, 1)
    if length < span:
        return []
    count = (length - span) // stride + 1
    offset = (length - span - (count - 1) * stride) // 2  # centre the used part
    return [offset + i * stride for i in range(count)]


class ClipIndex:
    """Maps a flat clip index to (video, frame indices) over videos with the given lengths.

    Raises ValueError when no video is long enough; warns when some are skipped.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        num_frames: int,
        frame_step: int = 1,
        clip_stride: int | None = None,
        names: Sequence[str] | None = None,
    ) -> None:
        self.num_frames = num_frames
        self.frame_step = frame_step
        span = clip_span(num_frames, frame_step)
        if len(lengths) == 0:
            raise ValueError("no videos to sample clips from")
        self.clips: list[tuple[int, int]] = [
            (video, start) for video, length in enumerate(lengths) for start in clip_starts(length, span, clip_stride)
        ]
        short = [i for i, n in enumerate(lengths) if n < span]
        if len(short) == len(lengths):
            example = names[short[0]] if names else "video 0"
            raise ValueError(
                f"all {len(lengths)} videos are too short: a clip of {num_frames} frames with frame_step "
                f"{frame_step} needs {span} frames, the longest has {max(lengths)} (e.g. {example})"
            )
        if short:
            warnings.warn(
                f"{len(short)} of {len(lengths)} videos have fewer than {span} frames and were skipped",
                stacklevel=3,
            )

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> tuple[int, list[int]]:
        """(video number, the clip's frame indices in that video)."""
        if not -len(self.clips) <= index < len(self.clips):
            raise IndexError(f"clip index {index} out of range for {len(self.clips)} clips")
        video, start = self.clips[index]
        return video, [start + t * self.frame_step for t in range(self.num_frames)]


class ClipDataset(Dataset):
    """What the frame-folder and video-file datasets share: the transform, the :class:`ClipIndex`
    over their videos and the item protocol. A subclass checks the transform first
    (``super().__init__(transform)``), then lists its videos, calls :meth:`_index_clips` and reads one
    clip in :meth:`_read`."""

    def __init__(self, transform: ClipTransform) -> None:
        if not isinstance(transform, ClipTransform):
            raise TypeError(f"transform must be a ClipTransform, got {type(transform).__name__}")
        self.transform = transform

    def _index_clips(self, lengths: Sequence[int], names: Sequence[str], num_frames: int, frame_step: int,
                     clip_stride: int | None) -> None:
        self.index = ClipIndex(lengths, num_frames, frame_step, clip_stride, names)
        self.num_frames = num_frames

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> torch.Tensor:
        """(T, C, H, W) float32 in [0, 1]."""
        video, frame_ids = self.index[index]
        return self._read(video, frame_ids)

    def _read(self, video: int, frame_ids: list[int]) -> torch.Tensor:
        """The clip of frames ``frame_ids`` of video number ``video``, transformed."""
        raise NotImplementedError
