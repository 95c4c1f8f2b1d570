"""stdiff: Spatio-temporal Diffusion (STDiff) for continuous stochastic video prediction.

Ye & Bilodeau, AAAI 2024 (arXiv 2312.06486): a motion encoder and Conv-GRU summarise the
observed frames, a neural SDE carries the motion state to any future time, and a SPADE-
conditioned diffusion UNet generates each future frame.
"""
from __future__ import annotations

__version__ = "0.1.0"

from . import ops  # noqa: E402

__all__ = ["ops", "__version__"]
