"""Structural similarity (SSIM) with an 11x11 Gaussian window (sigma 1.5), per image.

Two variants, K1 = 0.01, K2 = 0.03, data range 1 in both:
- default: ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1, channel_axis=...)``: local statistics only where
  the whole window fits inside the image ("valid" region), the map averaged over that region and
  then over channels;
- ``official=True``: the official STDiff code's ``SSIM`` module (the common pytorch-ssim code):
  the images are zero-padded by 5 pixels, so the map has the image's size, and the whole map
  is averaged over channels and pixels. Border windows then see black outside the frame, which
  raises the score of images with dark borders (e.g. moving digits).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._validate import image_pair

WINDOW = 11
SIGMA = 1.5
K1 = 0.01
K2 = 0.03


def gaussian_window(size: int = WINDOW, sigma: float = SIGMA, *, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> Tensor:
    """Normalised 1-D Gaussian taps, shape (size,)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return (w / w.sum()).to(dtype=dtype, device=device)


def ssim_unchecked(x: Tensor, y: Tensor, official: bool) -> Tensor:
    """SSIM per image of (..., C, H, W) float tensors without input checks (any value range; the
    constants assume a data range of 1). ``official``: zero padding and full-map mean (see module)."""
    *lead, c, h, w = x.shape
    x = x.reshape(-1, 1, h, w)
    y = y.reshape(-1, 1, h, w)
    maps = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (B*C, 5, H, W)
    g = gaussian_window(dtype=x.dtype, device=x.device)
    pad = WINDOW // 2 if official else 0
    maps = F.conv2d(maps, g.view(1, 1, 1, WINDOW).expand(5, 1, 1, WINDOW), padding=(0, pad), groups=5)
    maps = F.conv2d(maps, g.view(1, 1, WINDOW, 1).expand(5, 1, WINDOW, 1), padding=(pad, 0), groups=5)
    mu_x, mu_y, e_xx, e_yy, e_xy = maps.unbind(dim=1)
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov_xy = e_xy - mu_x * mu_y
    c1, c2 = K1**2, K2**2
    s_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    return s_map.mean(dim=(-2, -1)).reshape(*lead, c).mean(dim=-1)


def ssim(pred: Tensor, target: Tensor, official: bool = False) -> Tensor:
    """Mean SSIM per image, channel-averaged.

    pred, target: (..., C, H, W) floats in [0, 1], same shape; H and W >= 11 unless ``official``.
    official: the official STDiff variant (zero-padded, same-size map) instead of scikit-image's.
    Returns (...,), float32 (float64 for float64 inputs), on the inputs' device.
    """
    if not isinstance(official, bool):
        raise TypeError(f"official must be a bool, got {type(official).__name__}")
    x, y = image_pair("pred", pred, "target", target)
    h, w = x.shape[-2:]
    if not official and (h < WINDOW or w < WINDOW):
        raise ValueError(f"pred and target must be at least {WINDOW}x{WINDOW} pixels for SSIM, got {h}x{w} "
                         f"(official=True zero-pads and accepts any size)")
    return ssim_unchecked(x, y, official)
