"""Peak signal-to-noise ratio for images in [0, 1] (data range 1)."""
from __future__ import annotations

import torch
from torch import Tensor

from ._validate import image_pair

#: Added to the mean squared error (as in the official STDiff code), so identical images
#: score a finite 80 dB instead of +inf and per-frame averages stay finite.
MSE_EPS = 1e-8


def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """PSNR in dB per image: ``-10 log10(mean((pred - target)^2) + 1e-8)``.

    pred, target: (..., C, H, W) floats in [0, 1], same shape and device.
    Returns (...,), float32 (float64 for float64 inputs), on the inputs' device.
    """
    x, y = image_pair("pred", pred, "target", target)
    mse = (x - y).square().mean(dim=(-3, -2, -1))
    return -10.0 * torch.log10(mse + MSE_EPS)
