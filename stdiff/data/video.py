"""Video files (mp4, avi, mkv, ...) decoded with PyAV.

At construction every file is demuxed once (no decoding) to list the presentation
timestamps of its frames and its keyframes. Reading a clip seeks to the last keyframe at or
before the clip's first frame and decodes forward only as far as the clip's last frame, so
a clip costs about one GOP of decoding wherever it lies. Frames are matched by timestamp,
never by guessed frame rate, so variable-frame-rate files read correctly.
"""
from __future__ import annotations

import bisect
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch

from .clips import ClipDataset
from .transforms import ClipTransform

__all__ = ["VIDEO_EXTENSIONS", "VideoIndex", "index_video", "read_frames", "find_video_files", "VideoFileDataset"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclass(frozen=True)
class VideoIndex:
    """Frame timestamps of one video: ``pts[i]`` is frame i; ``keyframes`` sorted pts of keyframes."""

    path: Path
    pts: tuple[int, ...]
    keyframes: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.pts)


def index_video(path: str | os.PathLike) -> VideoIndex:
    """Demux ``path`` (no decoding) and list its frames' timestamps. Raises on unreadable files."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"video file {path} does not exist")
    if not path.is_file():
        raise ValueError(f"{path} is not a regular file (a folder, pipe or device?): expected a video file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path} has no video stream")
            stream = container.streams.video[0]
            pts, keys = [], []
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue  # end-of-stream flush packet
                stamp = packet.pts if packet.pts is not None else packet.dts
                if stamp is None:
                    raise ValueError(f"{path}: packets without timestamps are not supported")
                pts.append(stamp)
                if packet.is_keyframe:
                    keys.append(stamp)
    except av.error.FFmpegError as e:
        raise ValueError(f"cannot read video file {path}: {e}") from e
    if not pts:
        raise ValueError(f"{path} contains no video frames")
    return VideoIndex(path, tuple(sorted(pts)), tuple(sorted(keys)) or (min(pts),))


def read_frames(index: VideoIndex, frame_ids: Sequence[int]) -> np.ndarray:
    """Decode frames ``frame_ids`` (increasing) of an indexed video: (T, H, W, 3) uint8 RGB."""
    wanted = [index.pts[i] for i in frame_ids]
    position = {stamp: t for t, stamp in enumerate(wanted)}
    out: list[np.ndarray | None] = [None] * len(wanted)
    seek_to = index.keyframes[max(0, bisect.bisect_right(index.keyframes, wanted[0]) - 1)]
    found = 0
    try:
        with av.open(str(index.path)) as container:
            stream = container.streams.video[0]
            container.seek(seek_to, stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                t = position.get(frame.pts)
                if t is not None and out[t] is None:
                    out[t] = frame.to_ndarray(format="rgb24")
                    found += 1
                if found == len(wanted) or (frame.pts is not None and frame.pts > wanted[-1]):
                    break
    except av.error.FFmpegError as e:
        raise ValueError(f"cannot decode video file {index.path}: {e}") from e
    if found != len(wanted):
        missing = [frame_ids[t] for t, f in enumerate(out) if f is None]
        raise ValueError(f"could not decode frames {missing[:5]} of {index.path} ({len(missing)} missing)")
    return np.stack(out)


def find_video_files(root: str | os.PathLike) -> list[Path]:
    """Video files (by extension) anywhere under ``root``, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"video root {root} does not exist or is not a directory")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
    if not files:
        raise FileNotFoundError(f"no video files ({', '.join(VIDEO_EXTENSIONS)}) found under {root}")
    return files


class VideoFileDataset(ClipDataset):
    """Clips of ``num_frames`` frames from video files.

    Args:
        videos: a folder (searched recursively, see :func:`find_video_files`), one file, or
            a sequence of files.
        num_frames: T = To + Tp.
        transform: turns the decoded (T, H, W, 3) uint8 frames into the output tensor.
        frame_step: take every ``frame_step``-th frame (temporal subsampling).
        clip_stride: frames between clip starts; None = non-overlapping, centred (official).

    Item ``i``: (T, C, image_size, image_size) float32 in [0, 1]. Files are reopened per item,
    so the dataset is safe in DataLoader worker processes.
    """

    def __init__(
        self,
        videos: str | os.PathLike | Sequence[str | os.PathLike],
        num_frames: int,
        transform: ClipTransform,
        frame_step: int = 1,
        clip_stride: int | None = None,
    ) -> None:
        if isinstance(videos, (str, os.PathLike)):
            path = Path(videos)
            videos = find_video_files(path) if path.is_dir() else [path]
        super().__init__(transform)
        self.videos = [index_video(p) for p in videos]
        self._index_clips([len(v) for v in self.videos], [str(v.path) for v in self.videos], num_frames, frame_step,
                          clip_stride)

    def _read(self, video: int, frame_ids: list[int]) -> torch.Tensor:
        return self.transform(read_frames(self.videos[video], frame_ids))
