"""Noise schedule and samplers (DDPM, DDIM, DPM-Solver++) for training and sampling.

Small, self-contained, diffusers-like: ``set_timesteps(n)``, ``timesteps``, ``step(eps, t, x_t,
generator)``, ``reset()``, ``sample(denoise_fn, shape)``. Coefficients are computed in float64
and cast to the data's dtype.
"""
from __future__ import annotations

from .base import DenoiseFn, Sampler
from .ddim import DDIMSampler
from .ddpm import DDPMSampler
from .dpm_solver import DPMSolverPPSampler
from .factory import SAMPLERS, make_sampler
from .schedule import BETA_SCHEDULES, NoiseSchedule
from .timesteps import SPACINGS, dpm_timesteps, spaced_timesteps

__all__ = [
    "BETA_SCHEDULES", "DDIMSampler", "DDPMSampler", "DPMSolverPPSampler", "DenoiseFn", "NoiseSchedule",
    "SAMPLERS", "SPACINGS", "Sampler", "dpm_timesteps", "make_sampler", "spaced_timesteps",
]
