"""stdiff: Spatio-temporal Diffusion (STDiff) for continuous stochastic video prediction.

Ye & Bilodeau, AAAI 2024 (arXiv 2312.06486): a motion encoder and Conv-GRU summarise the
observed frames, a neural SDE carries the motion state to any future time, and a SPADE-
conditioned diffusion UNet generates each future frame.

Main entry points: :class:`stdiff.Predictor` (prediction), :class:`stdiff.models.STDiff` (the
model), :func:`stdiff.config.preset` (configurations) and :mod:`stdiff.ops` (the fused ops).
"""
from __future__ import annotations

__version__ = "0.1.0"

from . import ops  # noqa: E402

__all__ = ["ops", "Predictor", "Prediction", "__version__"]


def __getattr__(name: str):
    """Import the Predictor lazily: ``import stdiff`` stays light."""
    if name in ("Predictor", "Prediction"):
        from . import predictor, prediction

        return predictor.Predictor if name == "Predictor" else prediction.Prediction
    raise AttributeError(f"module 'stdiff' has no attribute {name!r}")
