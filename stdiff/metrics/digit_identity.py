"""Does a predicted digit keep its identity? A small classifier trained on the data's own digit bank.

For moving-digit clips with ONE digit: the digit is located in each frame (the digit-sized window
centred on the ink's centroid) and classified; the score is the fraction of frames whose digit is the clip's.
Locating the digit first makes the measure independent of where the model put it (a stochastic
bounce may legitimately send it elsewhere). The classifier is a multinomial logistic regression
on the bank's images, shifted by up to one pixel and blurred, so that it tolerates what a
diffusion model does to strokes; train it on the ``train`` bank and score ``test`` clips.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DigitClassifier", "locate_digit"]


def locate_digit(frames: Tensor, size: int) -> Tensor:
    """The ``size`` x ``size`` window centred on each frame's ink centroid: (..., C, H, W) -> (..., size, size).

    Channels are averaged first; the frame is zero-padded, so windows near a wall stay ``size`` wide.
    """
    ink = frames.float().mean(-3)
    lead, (h, w) = ink.shape[:-2], ink.shape[-2:]
    flat = ink.reshape(-1, h, w)
    total = flat.sum((1, 2)).clamp_min(1e-6)
    cy = (flat.sum(2) * torch.arange(h, dtype=torch.float32)).sum(1) / total
    cx = (flat.sum(1) * torch.arange(w, dtype=torch.float32)).sum(1) / total
    padded = F.pad(flat, (size, size, size, size))
    tops = (cy - (size - 1) / 2).round().long().clamp(-size, h) + size
    lefts = (cx - (size - 1) / 2).round().long().clamp(-size, w) + size
    crops = torch.stack([padded[i, y:y + size, x:x + size] for i, (y, x) in enumerate(zip(tops.tolist(), lefts.tolist()))])
    return crops.reshape(*lead, size, size)


def _augment(bank: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each (M, d, d) image as it is and blurred, at random contrast, re-centred as :func:`locate_digit` does."""
    images = torch.tensor(np.asarray(bank, np.float32))[:, None]
    blurred = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    both = torch.cat([images, blurred]) * torch.from_numpy(rng.uniform(0.7, 1.0, (2 * len(images), 1, 1, 1)).astype(np.float32))
    return locate_digit(both, images.shape[-1]).numpy()


class DigitClassifier:
    """Logistic regression on the pixels of a digit bank (M, d, d) in [0, 1] with labels (M,)."""

    def __init__(self, bank: np.ndarray, labels: np.ndarray, seed: int = 0) -> None:
        from sklearn.linear_model import LogisticRegression

        bank = np.asarray(bank, np.float32)
        labels = np.asarray(labels)
        if bank.ndim != 3 or bank.shape[1] != bank.shape[2] or len(bank) != len(labels):
            raise ValueError(f"bank must be (M, d, d) with M labels, got {bank.shape} and {labels.shape}")
        self.size = bank.shape[1]
        images = _augment(bank, np.random.default_rng(seed))
        targets = np.tile(labels, len(images) // len(bank))
        self.model = LogisticRegression(max_iter=500, C=0.5).fit(self._features(images), targets)

    def _features(self, crops: np.ndarray) -> np.ndarray:
        x = crops.reshape(len(crops), -1)
        return x / np.maximum(x.max(1, keepdims=True), 1e-3)  # contrast-normalised

    def predict(self, crops: Tensor | np.ndarray) -> np.ndarray:
        """Digit labels of (M, d, d) crops."""
        crops = crops.detach().cpu().numpy() if isinstance(crops, Tensor) else np.asarray(crops)
        if crops.ndim != 3 or crops.shape[1:] != (self.size, self.size):
            raise ValueError(f"crops must be (M, {self.size}, {self.size}), got {crops.shape}")
        return self.model.predict(self._features(crops.astype(np.float32)))

    def accuracy(self, frames: Tensor, labels: Tensor | np.ndarray) -> float:
        """Fraction of frames (M, C, H, W) (one digit each) whose located digit has label ``labels`` (M,)."""
        return float((self.predict(locate_digit(frames, self.size)) == np.asarray(labels)).mean())
