"""Videos stored as folders of frame images (``root/video_x/000.png, 001.png, ...``)."""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from .clips import ClipIndex
from .transforms import ClipTransform

__all__ = ["IMAGE_EXTENSIONS", "FrameFolderDataset", "natural_key", "list_frames", "find_frame_folders"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def natural_key(path: Path) -> list:
    """Sort key: digit runs compare as numbers (``2.png`` < ``10.png``)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def list_frames(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder``, in natural order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"frame folder {folder} does not exist or is not a directory")
    frames = (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    return sorted(frames, key=natural_key)


def find_frame_folders(root: str | os.PathLike) -> list[Path]:
    """Every folder under ``root`` (itself included) that directly holds image files, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"video folder root {root} does not exist or is not a directory")
    folders = [
        Path(dirpath)
        for dirpath, _, files in os.walk(root, followlinks=True)
        if any(os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS for f in files)
    ]
    if not folders:
        raise FileNotFoundError(f"no image frames ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    return sorted(folders)


def _read_frame(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError) as e:
        raise ValueError(f"cannot read frame image {path}: {e}") from e


class FrameFolderDataset(Dataset):
    """Clips of ``num_frames`` frames from videos given as lists of frame files.

    Args:
        videos: one sequence of frame paths per video, in temporal order (see
            :func:`find_frame_folders` and :func:`list_frames`), or a root folder whose
            frame folders are found with :func:`find_frame_folders`.
        num_frames: T = To + Tp.
        transform: turns the decoded (T, H, W, 3) uint8 frames into the output tensor.
        frame_step: take every ``frame_step``-th frame (temporal subsampling).
        clip_stride: frames between clip starts; None = non-overlapping, centred (official).

    Item ``i``: (T, C, image_size, image_size) float32 in [0, 1].
    """

    def __init__(
        self,
        videos: str | os.PathLike | Sequence[Sequence[str | os.PathLike]],
        num_frames: int,
        transform: ClipTransform,
        frame_step: int = 1,
        clip_stride: int | None = None,
    ) -> None:
        if isinstance(videos, (str, os.PathLike)):
            videos = [list_frames(folder) for folder in find_frame_folders(videos)]
        if not isinstance(transform, ClipTransform):
            raise TypeError(f"transform must be a ClipTransform, got {type(transform).__name__}")
        self.videos = [[Path(p) for p in frames] for frames in videos]
        self.transform = transform
        names = [str(frames[0].parent) if frames else "<empty video>" for frames in self.videos]
        self.index = ClipIndex([len(v) for v in self.videos], num_frames, frame_step, clip_stride, names)
        self.num_frames = num_frames

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> torch.Tensor:
        """(T, C, H, W) float32 in [0, 1]."""
        video, frame_ids = self.index[index]
        frames = [_read_frame(self.videos[video][i]) for i in frame_ids]
        shapes = {f.shape for f in frames}
        if len(shapes) != 1:
            raise ValueError(f"frames of {self.videos[video][0].parent} have different sizes: {sorted(shapes)}")
        return self.transform(np.stack(frames))
