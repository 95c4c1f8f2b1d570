"""Video data for STDiff: every dataset item is a (T, C, H, W) float32 clip in [0, 1].

- :class:`SyntheticMovingDigits`: built-in stochastic moving digits (the default data).
- :class:`FrameFolderDataset`, :class:`VideoFileDataset`: real videos as frame folders or
  video files (PyAV), with :class:`ClipTransform` for resize/crop/flip/colour.
- :func:`build_dataset` and :data:`RECIPES`: official settings and splits of KTH, BAIR,
  SM-MNIST, Cityscapes and KITTI (see :mod:`stdiff.data.recipes`).
"""
from __future__ import annotations

from .clips import ClipIndex, clip_span, clip_starts
from .digits import mnist_digits, sklearn_digits
from .folder import FrameFolderDataset, find_frame_folders, list_frames, read_clip
from .recipes import RECIPES, Recipe, build_dataset, get_recipe
from .synthetic import MovingDigits, SyntheticMovingDigits, bounce_trajectory
from .transforms import ClipTransform
from .video import VideoFileDataset, find_video_files, index_video, read_frames

__all__ = [
    "ClipIndex",
    "ClipTransform",
    "FrameFolderDataset",
    "MovingDigits",
    "RECIPES",
    "Recipe",
    "SyntheticMovingDigits",
    "VideoFileDataset",
    "bounce_trajectory",
    "build_dataset",
    "clip_span",
    "clip_starts",
    "find_frame_folders",
    "find_video_files",
    "get_recipe",
    "index_video",
    "list_frames",
    "mnist_digits",
    "read_clip",
    "read_frames",
    "sklearn_digits",
]
