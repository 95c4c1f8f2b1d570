"""Digit image banks for the moving-digits datasets.

A bank is a float32 array ``(M, d, d)`` with values in [0, 1] (ink = 1, background = 0).
Two sources:

- :func:`sklearn_digits`: the 1,797 handwritten 8x8 digits that scikit-learn ships (no
  download). Each image gets a one-pixel blank margin, is upscaled bilinearly to ``d x d``
  and sharpened with a smoothstep so strokes are solid with soft edges. The first 1,437
  images (80 %) form the ``"train"`` bank and the last 360 the ``"test"`` bank (disjoint).
- :func:`mnist_digits`: MNIST from its raw IDX files (as torchvision stores them), resized
  to ``d x d`` with antialiased bilinear interpolation (the official SM-MNIST uses 32 px).
"""
from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..checks import integer

__all__ = ["sklearn_digits", "sklearn_digit_labels", "mnist_digits", "SKLEARN_TRAIN_COUNT"]

SKLEARN_TRAIN_COUNT = 1437  # first 80 % of the 1,797 bundled digits; the rest is the test bank

_SPLITS = ("train", "test")
_MNIST_FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}


def _check_split(split: str) -> None:
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")


def _check_size(size: int) -> None:
    integer("size", size, 4)


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """(M, h, w) float -> (M, size, size) bilinear, antialiased when shrinking."""
    out = F.interpolate(images[:, None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out[:, 0]


@functools.lru_cache(maxsize=8)
def _sklearn_bank(size: int, split: str) -> np.ndarray:
    from sklearn.datasets import load_digits

    images = load_digits().images.astype(np.float32) / 16.0  # (1797, 8, 8), values 0..16
    images = images[:SKLEARN_TRAIN_COUNT] if split == "train" else images[SKLEARN_TRAIN_COUNT:]
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)))  # blank margin: soft edges after upscaling
    up = _resize(torch.from_numpy(padded), size).numpy()
    x = np.clip((up - 0.2) / 0.45, 0.0, 1.0)  # smoothstep between 0.2 and 0.65: solid strokes
    bank = (x * x * (3.0 - 2.0 * x)).astype(np.float32)
    bank.setflags(write=False)
    return bank


def sklearn_digits(size: int, split: str = "train") -> np.ndarray:
    """Bank of scikit-learn's bundled digits upscaled to ``size``: (M, size, size) float32 in [0, 1].

    ``split="train"`` gives 1,437 images, ``"test"`` the other 360. Cached, read-only.
    """
    _check_size(size)
    _check_split(split)
    return _sklearn_bank(size, split)


def sklearn_digit_labels(split: str = "train") -> np.ndarray:
    """The digit (0-9) of each image of :func:`sklearn_digits`'s ``split`` bank: (M,) int64."""
    from sklearn.datasets import load_digits

    _check_split(split)
    labels = load_digits().target.astype(np.int64)
    return labels[:SKLEARN_TRAIN_COUNT] if split == "train" else labels[SKLEARN_TRAIN_COUNT:]


def _find_idx_file(root: Path, split: str) -> Path:
    name = _MNIST_FILES[split]
    names = [name, name.replace("-idx3", ".idx3")]
    for folder in (root, root / "raw", root / "MNIST" / "raw"):
        for n in names:
            for candidate in (folder / n, folder / f"{n}.gz"):
                if candidate.is_file():
                    return candidate
    raise FileNotFoundError(
        f"no MNIST {split} images under {root}: expected {name} (or {name}.gz) in {root}, "
        f"{root / 'raw'} or {root / 'MNIST' / 'raw'}"
    )


def _read_idx_images(path: Path) -> np.ndarray:
    """Parse an IDX3 image file (big-endian header: magic 2051, count, rows, cols; uint8 pixels)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f"cannot read MNIST file {path}: {e}") from e
    if len(data) < 16:
        raise ValueError(f"{path} is not an IDX3 image file: only {len(data)} bytes")
    magic, count, rows, cols = np.frombuffer(data[:16], dtype=">i4")
    if magic != 2051 or len(data) != 16 + int(count) * int(rows) * int(cols):
        raise ValueError(f"{path} is not an IDX3 image file (magic {magic}, {len(data)} bytes)")
    return np.frombuffer(data[16:], dtype=np.uint8).reshape(int(count), int(rows), int(cols))


@functools.lru_cache(maxsize=4)
def _mnist_bank(path: Path, size: int) -> np.ndarray:
    images = torch.from_numpy(_read_idx_images(path).astype(np.float32) / 255.0)
    bank = _resize(images, size).clamp_(0.0, 1.0).numpy()
    bank.setflags(write=False)
    return bank


def mnist_digits(root: str | os.PathLike, split: str = "train", size: int = 32) -> np.ndarray:
    """MNIST digits from raw IDX files under ``root``: (M, size, size) float32 in [0, 1].

    Looks for ``train-images-idx3-ubyte`` / ``t10k-images-idx3-ubyte`` (optionally ``.gz``) in
    ``root``, ``root/raw`` or ``root/MNIST/raw``. Cached, read-only.
    """
    _check_size(size)
    _check_split(split)
    path = Path(root)
    if not path.is_dir():
        raise FileNotFoundError(f"MNIST root {path} does not exist or is not a directory")
    return _mnist_bank(_find_idx_file(path.resolve(), split), size)
