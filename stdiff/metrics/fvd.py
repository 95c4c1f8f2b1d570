"""Frechet video distance (FVD) with I3D features from a user-provided TorchScript file.

The detector is the TorchScript I3D of the StyleGAN-V FVD code (``i3d_torchscript.pt``), called
as ``detector(x, rescale=..., resize=..., return_features=True)`` on ``x`` (N, 3, T, H, W);
stdiff never downloads it. Two input protocols:
- ``"stdiff"`` (the official STDiff evaluation): each frame resized bilinearly so its shorter
  side is 224, centre-cropped to 224x224, mapped to [-1, 1]; ``rescale=False, resize=False``.
- ``"styleganv"``: frames scaled to [0, 255]; the detector rescales and resizes itself
  (``rescale=True, resize=True``).
Grey videos are repeated to 3 channels. Any other callable mapping (N, T, C, H, W) videos in
[0, 1] to (N, D) features can replace ``I3DFeatures`` wherever a feature extractor is taken.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..checks import integer
from ._validate import unit_images
from .accumulate import FeatureStats
from .frechet import frechet_distance

PROTOCOLS = ("stdiff", "styleganv")
_I3D_ARGUMENTS = ("rescale", "resize", "return_features")  # keyword arguments of the detector's forward
RESOLUTION = 224

VideoFeatures = Callable[[Tensor], Tensor]
"""(N, T, C, H, W) videos in [0, 1] -> (N, D) features."""

MISSING_I3D = (
    "FVD needs the I3D TorchScript file of the StyleGAN-V FVD code (i3d_torchscript.pt, "
    "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt); stdiff never downloads it. "
    "Fetch it yourself and pass its local path."
)


def check_videos(name: str, videos: object) -> Tensor:
    """Check (N, T, C, H, W) floats in [0, 1] with C in {1, 3}; returns them as float32/float64."""
    v = unit_images(name, videos, "(N, T, C, H, W)", ndim=5)
    if v.shape[2] not in (1, 3):
        raise ValueError(f"{name} must have shape (N, T, C, H, W) with C = 1 or 3, got {tuple(v.shape)}")
    return v


def _resize_crop(frames: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, C, 224, 224): shorter side to 224 (bilinear), centre crop."""
    h, w = frames.shape[-2:]
    scale = RESOLUTION / min(h, w)
    size = (RESOLUTION, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), RESOLUTION)
    frames = F.interpolate(frames, size=size, mode="bilinear", align_corners=False)
    top = (frames.shape[-2] - RESOLUTION) // 2
    left = (frames.shape[-1] - RESOLUTION) // 2
    return frames[..., top:top + RESOLUTION, left:left + RESOLUTION]


class I3DFeatures:
    """Video feature extractor around an I3D detector with the StyleGAN-V call signature.

    __call__(videos): (N, T, C, H, W) in [0, 1] -> (N, D) float32 features, on ``device``
    (None: the videos' device), ``batch_size`` videos per detector call, without gradients.
    """

    def __init__(self, detector: Callable[..., Tensor], protocol: str = "stdiff", batch_size: int = 16,
                 device: torch.device | str | None = None) -> None:
        if not callable(detector):
            raise TypeError(f"detector must be callable, got {type(detector).__name__}")
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        integer("batch_size", batch_size, 1)
        self.detector = detector
        self.protocol = protocol
        self.batch_size = batch_size
        self.device = None if device is None else torch.device(device)

    def preprocess(self, videos: Tensor) -> Tensor:
        """(N, T, C, H, W) in [0, 1] -> (N, 3, T, H', W') as the detector expects under the protocol."""
        n, t, c, h, w = videos.shape
        videos = videos.expand(n, t, 3, h, w)
        if self.protocol == "styleganv":
            return (videos * 255.0).permute(0, 2, 1, 3, 4)
        frames = _resize_crop(videos.reshape(n * t, 3, h, w)) * 2.0 - 1.0
        return frames.reshape(n, t, 3, RESOLUTION, RESOLUTION).permute(0, 2, 1, 3, 4)

    @torch.no_grad()
    def __call__(self, videos: Tensor) -> Tensor:
        v = check_videos("videos", videos)
        if self.device is not None:
            v = v.to(self.device)
        flag = self.protocol == "styleganv"
        feats = []
        for chunk in v.float().split(self.batch_size):
            out = self.detector(self.preprocess(chunk).contiguous(), rescale=flag, resize=flag,
                                return_features=True)
            if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != chunk.shape[0]:
                shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(f"the I3D detector must return ({chunk.shape[0]}, D) features, got {shape}")
            feats.append(out.float())
        return torch.cat(feats)


def load_i3d(path: str | Path, *, protocol: str = "stdiff", batch_size: int = 16,
             device: torch.device | str | None = None) -> I3DFeatures:
    """Load the TorchScript I3D from a local file (never downloaded) as an ``I3DFeatures``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"I3D file not found: {path}. {MISSING_I3D}")
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated in torch, but it is the I3D file's format
            warnings.simplefilter("ignore", FutureWarning)
            detector = torch.jit.load(str(path), map_location=device).eval()
    except Exception as exc:  # not TorchScript: name the file and the cause
        raise ValueError(f"{path} is not a TorchScript I3D model: {exc}. {MISSING_I3D}") from exc
    schema = getattr(getattr(detector, "forward", None), "schema", None)
    names = [a.name for a in schema.arguments if a.name != "self"] if schema is not None else None
    if names is not None and not set(_I3D_ARGUMENTS) <= set(names):
        raise ValueError(f"{path} is a TorchScript model but not the StyleGAN-V I3D: its forward takes "
                         f"({', '.join(names)}), expected (x, {', '.join(_I3D_ARGUMENTS)}). {MISSING_I3D}")
    return I3DFeatures(detector, protocol=protocol, batch_size=batch_size, device=device)


def fvd(real: Tensor, fake: Tensor, features: VideoFeatures, batch_size: int = 16) -> float:
    """FVD between two sets of videos held in memory.

    real: (N1, T, C, H, W), fake: (N2, T, C, H, W) in [0, 1], N1, N2 >= 2; features: a callable such
    as ``I3DFeatures``. For test sets that do not fit in memory, feed ``FeatureStats`` batch by batch
    and call ``frechet_distance`` on their means and covariances (as ``stdiff.evaluation`` does).
    """
    batch_size = integer("batch_size", batch_size, 1)
    stats = []
    for name, videos in (("real", real), ("fake", fake)):
        v = check_videos(name, videos)
        s = FeatureStats()
        for chunk in v.split(batch_size):
            s.update(features(chunk))
        stats.append(s)
    return frechet_distance(stats[1].mean(), stats[1].cov(), stats[0].mean(), stats[0].cov())
