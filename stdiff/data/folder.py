"""Videos stored as folders of frame images (``root/video_x/000.png, 001.png, ...``).

Frames are decoded one at a time and cropped (and, when much larger than needed, shrunk) as
they are decoded (:func:`read_clip`), so a clip of huge frames costs about one decoded frame of
memory, not the whole clip in float.
"""
from __future__ import annotations

import dataclasses
import os
import re
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .clips import ClipDataset
from .transforms import ClipTransform

__all__ = ["IMAGE_EXTENSIONS", "FrameFolderDataset", "natural_key", "list_frames",
           "find_frame_folders", "read_clip"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
REDUCING_GAP = 3  # frames are box-shrunk while decoding only down to >= 3x the output side (bicubic does the rest)
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, zlib.error, struct.error, UnidentifiedImageError,
                  Image.DecompressionBombError)


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
    """Every folder under ``root`` (itself included) that directly holds image files, sorted.

    Symbolic links to folders are followed (a dataset may link its videos in), but each real folder
    is visited once: a link back to a folder already on the walk (a cycle) or already visited is
    skipped, so the walk ends and lists no folder twice.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"video folder root {root} does not exist or is not a directory")
    seen: set[tuple[int, int]] = set()
    folders = []
    for dirpath, dirnames, files in os.walk(root, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:  # reached again through a link: do not descend a second time
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        if any(os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS for f in files):
            folders.append(Path(dirpath))
    if not folders:
        raise FileNotFoundError(f"no image frames ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    return sorted(folders)


def _open(path: Path) -> Image.Image:
    """The image header (no pixels decoded yet); ValueError for unreadable files and decompression
    bombs (PIL's limit: ``PIL.Image.MAX_IMAGE_PIXELS``, refused above twice that)."""
    try:
        return Image.open(path)
    except _DECODE_ERRORS as e:
        raise ValueError(f"cannot read frame image {path}: {e}") from e


def _decode(path: Path, image: Image.Image, box: tuple[int, int, int, int], shrink: int) -> np.ndarray:
    """Decode ``image``, crop ``box`` and shrink it ``shrink`` times: (h, w, 3) uint8 RGB."""
    try:
        with image:
            crop = image.convert("RGB").crop(box)
            return np.asarray(crop.reduce(shrink) if shrink > 1 else crop)
    except _DECODE_ERRORS as e:
        raise ValueError(f"cannot decode frame image {path}: {e}") from e


def read_clip(paths: Sequence[str | os.PathLike], transform: ClipTransform) -> torch.Tensor:
    """Decode frame files into ``transform``'s output (T, C, image_size, image_size) float32 in [0, 1].

    All frames must have one size (checked from the headers before decoding). Each frame is cropped
    to the transform's square region as it is decoded; a region more than ``REDUCING_GAP`` times the
    output side is first shrunk by an integer box filter, so memory stays at about one decoded frame.
    """
    paths = [Path(p) for p in paths]
    images = [_open(p) for p in paths]
    odd = next((i for i, im in enumerate(images) if im.size != images[0].size), None)
    if odd is not None:
        for im in images:
            im.close()
        (w0, h0), (w1, h1) = images[0].size, images[odd].size
        raise ValueError(f"frames of one clip must all have one size: {paths[0]} is {w0}x{h0} but {paths[odd]} "
                         f"is {w1}x{h1}")
    width, height = images[0].size
    region = transform._region(height, width)
    top, left = transform._offset(height, region), transform._offset(width, region)
    shrink = max(1, region // (REDUCING_GAP * transform.image_size))
    box = (left, top, left + region, top + region)
    frames = np.stack([_decode(p, im, box, shrink) for p, im in zip(paths, images)])
    return dataclasses.replace(transform, resize=True, crop="center")(frames)


class FrameFolderDataset(ClipDataset):
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
        super().__init__(transform)
        self.videos = [[Path(p) for p in frames] for frames in videos]
        names = [str(frames[0].parent) if frames else "<empty video>" for frames in self.videos]
        self._index_clips([len(v) for v in self.videos], names, num_frames, frame_step, clip_stride)

    def _read(self, video: int, frame_ids: list[int]) -> torch.Tensor:
        return read_clip([self.videos[video][i] for i in frame_ids], self.transform)
