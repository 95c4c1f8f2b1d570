"""Noise schedule and samplers (DDPM, DDIM, DPM-Solver++) for training and sampling.

Small, self-contained, diffusers-like: ``set_timesteps(n)``, ``timesteps``, ``needs_noise(t)``,
``step(eps, t, x_t, noise)``, ``reset()``. Coefficients are computed in float64 and cast to the
data's dtype. The samplers own no random numbers: :func:`denoise_frames` (the one sampling loop)
draws them from :class:`stdiff.noise.NoiseStreams` and passes them to ``step``.
"""
from __future__ import annotations

from .base import Sampler
from .ddim import DDIMSampler
from .ddpm import DDPMSampler
from .dpm_solver import DPMSolverPPSampler
from .factory import SAMPLERS, make_sampler
from .loop import FrameDenoiser, denoise_frames
from .schedule import BETA_SCHEDULES, NoiseSchedule
from .timesteps import SPACINGS, dpm_timesteps, spaced_timesteps

__all__ = [
    "BETA_SCHEDULES", "DDIMSampler", "DDPMSampler", "DPMSolverPPSampler", "FrameDenoiser", "NoiseSchedule",
    "SAMPLERS", "SPACINGS", "Sampler", "denoise_frames", "dpm_timesteps", "make_sampler", "spaced_timesteps",
]
