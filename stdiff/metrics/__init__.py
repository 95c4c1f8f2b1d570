"""Video prediction metrics: PSNR, SSIM, LPIPS, FVD, inter-sample LPIPS (diversity).

All image metrics take (..., C, H, W) floats in [0, 1] on any device and return one value per
image (...,). Weights (AlexNet for LPIPS, I3D for FVD) come from local files only; nothing is
downloaded. Streaming accumulation: ``FeatureStats`` (FVD features); per-frame averaging over a
test set, best-of-S and the report live in ``stdiff.evaluation``; ``quality_vs_speed`` scores
and times sampler settings.
"""
from __future__ import annotations

from .accumulate import FeatureStats
from .alexnet import AlexNetFeatures
from .diversity import inter_sample_lpips
from .frechet import frechet_distance, trace_sqrt_product
from .fvd import I3DFeatures, fvd, load_i3d
from .lpips import LPIPS, load_lpips
from .psnr import psnr
from .report import write_report
from .ssim import ssim
from .tradeoff import quality_vs_speed

__all__ = [
    "AlexNetFeatures",
    "FeatureStats",
    "I3DFeatures",
    "LPIPS",
    "frechet_distance",
    "fvd",
    "inter_sample_lpips",
    "load_i3d",
    "load_lpips",
    "psnr",
    "quality_vs_speed",
    "ssim",
    "trace_sqrt_product",
    "write_report",
]
