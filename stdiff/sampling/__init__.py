"""Samplers (DDPM, DDIM, DPM-Solver++): the schedulers of the reverse diffusion process.

Small, self-contained, diffusers-like: ``set_timesteps(n)``, ``timesteps``, ``needs_noise(t)``,
``step(eps, t, x_t, noise) -> StepOutput(prev_sample, pred_original_sample)``, ``reset()``.
Coefficients are computed in float64 and cast to the data's dtype. The samplers own no random
numbers and no loop: the prediction pipeline (:mod:`stdiff.pipeline`) iterates, draws the noise
from :class:`stdiff.noise.NoiseStreams` and passes it to :meth:`Sampler.step_at`.
"""
from __future__ import annotations

from ..noise_schedule import BETA_SCHEDULES, NoiseSchedule
from .base import Sampler, StepOutput
from .ddim import DDIMSampler
from .ddpm import DDPMSampler
from .dpm_solver import DPMSolverPPSampler
from .factory import DEFAULT_STEPS, SAMPLERS, make_sampler
from .timesteps import SPACINGS, dpm_timesteps, spaced_timesteps

__all__ = [
    "BETA_SCHEDULES", "DDIMSampler", "DDPMSampler", "DEFAULT_STEPS", "DPMSolverPPSampler", "NoiseSchedule",
    "SAMPLERS", "SPACINGS", "Sampler", "StepOutput", "dpm_timesteps", "make_sampler", "spaced_timesteps",
]
