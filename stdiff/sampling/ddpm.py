"""Ancestral DDPM sampling on a strided grid (Ho et al. 2020), epsilon prediction."""
from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from ..noise_schedule import NoiseSchedule
from .base import Sampler
from .timesteps import check_spacing, spaced_timesteps


@dataclass(frozen=True)
class _DDPMCoef:
    sqrt_a_t: float      # x0 = (x_t - sqrt_1m_a_t * eps) / sqrt_a_t
    sqrt_1m_a_t: float
    mean_x0: float       # mean = mean_x0 * x0 + mean_x * x_t
    mean_x: float
    std: float           # sqrt(fixed_small variance)
    noisy: bool          # noise is added when t > 0


class DDPMSampler(Sampler):
    """DDPM with posterior-mean steps between grid points and "fixed_small" variance.

    On a grid t_0 > ... > t_{n-1} with prev(t_i) = t_{i+1} (-1, i.e. abar = 1, after the last):
      x0    = clip((x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t))
      beta  = 1 - abar_t / abar_prev
      mean  = sqrt(abar_prev) beta / (1 - abar_t) x0 + sqrt(1 - beta) (1 - abar_prev) / (1 - abar_t) x_t
      x_prev = mean + sqrt(max((1 - abar_prev) / (1 - abar_t) beta, 1e-20)) z   (z only when t > 0)
    With the default "leading" grid (k * (T // n)) this is the official STDiff sampler (diffusers
    0.15's strided DDPMScheduler, prev = t - T // n); diffusers 0.42 computes the same numbers.
    """

    def __init__(self, schedule: NoiseSchedule | None = None, *, clip_sample: bool = True,
                 clip_sample_range: float = 1.0, timestep_spacing: str = "leading") -> None:
        super().__init__(schedule)
        check_spacing(timestep_spacing)
        if not clip_sample_range > 0:
            raise ValueError(f"clip_sample_range must be > 0, got {clip_sample_range}")
        self.clip_sample = bool(clip_sample)
        self.clip_sample_range = float(clip_sample_range)
        self.timestep_spacing = timestep_spacing
        self._coef: list[_DDPMCoef] = []

    def _grid(self, num_inference_steps: int) -> list[int]:
        return spaced_timesteps(self.schedule.num_train_timesteps, num_inference_steps, self.timestep_spacing)

    def _prepare(self) -> None:
        self._coef = []
        for i, t in enumerate(self._ts):
            a_t = self.schedule.alpha_bar(t)
            a_prev = self.schedule.alpha_bar(self.prev_timestep(i))
            beta = 1.0 - a_t / a_prev
            variance = max((1.0 - a_prev) / (1.0 - a_t) * beta, 1e-20)
            self._coef.append(_DDPMCoef(
                sqrt_a_t=math.sqrt(a_t), sqrt_1m_a_t=math.sqrt(1.0 - a_t),
                mean_x0=math.sqrt(a_prev) * beta / (1.0 - a_t),
                mean_x=math.sqrt(1.0 - beta) * (1.0 - a_prev) / (1.0 - a_t),
                std=math.sqrt(variance), noisy=t > 0))

    def _step(self, i: int, model_output: Tensor, sample: Tensor, noise: Tensor | None) -> tuple[Tensor, Tensor]:
        c = self._coef[i]
        x0 = (sample - c.sqrt_1m_a_t * model_output) / c.sqrt_a_t
        if self.clip_sample:
            x0 = x0.clamp(-self.clip_sample_range, self.clip_sample_range)
        prev = c.mean_x0 * x0 + c.mean_x * sample
        if noise is not None:
            prev = prev + c.std * noise
        return prev, x0

    def _noisy(self, i: int) -> bool:
        return self._coef[i].noisy
