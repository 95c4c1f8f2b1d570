"""DDIM sampling (Song et al. 2021), epsilon prediction, optional stochasticity eta."""
from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from ..noise_schedule import NoiseSchedule
from .base import Sampler
from .timesteps import check_spacing, spaced_timesteps


@dataclass(frozen=True)
class _DDIMCoef:
    sqrt_a_t: float
    sqrt_1m_a_t: float
    sqrt_a_prev: float
    dir_coef: float      # sqrt(1 - abar_prev - std^2)
    std: float           # eta * sigma_t


class DDIMSampler(Sampler):
    """DDIM: x0 = clip((x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t));
    x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - s^2) eps + s z, with
    s = eta sqrt((1 - abar_prev) / (1 - abar_t) (1 - abar_t / abar_prev)) and z drawn only when eta > 0.

    prev(t_i) = t_{i+1}; after the last grid point abar_prev = 1 (``set_alpha_to_one``) or abar_0.
    ``use_clipped_model_output`` re-derives eps from the clipped x0 (as diffusers' option).
    For the "leading" grid and for "trailing" with n dividing T this equals diffusers'
    DDIMScheduler (which always uses prev = t - T // n, inconsistent with its other grids).
    """

    def __init__(self, schedule: NoiseSchedule | None = None, *, eta: float = 0.0, clip_sample: bool = True,
                 clip_sample_range: float = 1.0, set_alpha_to_one: bool = True,
                 timestep_spacing: str = "leading", use_clipped_model_output: bool = False) -> None:
        super().__init__(schedule)
        check_spacing(timestep_spacing)
        if not eta >= 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        if not clip_sample_range > 0:
            raise ValueError(f"clip_sample_range must be > 0, got {clip_sample_range}")
        self.eta = float(eta)
        self.clip_sample = bool(clip_sample)
        self.clip_sample_range = float(clip_sample_range)
        self.set_alpha_to_one = bool(set_alpha_to_one)
        self.timestep_spacing = timestep_spacing
        self.use_clipped_model_output = bool(use_clipped_model_output)
        self._coef: list[_DDIMCoef] = []

    def _grid(self, num_inference_steps: int) -> list[int]:
        return spaced_timesteps(self.schedule.num_train_timesteps, num_inference_steps, self.timestep_spacing)

    def _prepare(self) -> None:
        final = 1.0 if self.set_alpha_to_one else self.schedule.alpha_bar(0)
        self._coef = []
        for i, t in enumerate(self._ts):
            a_t = self.schedule.alpha_bar(t)
            prev = self.prev_timestep(i)
            a_prev = self.schedule.alpha_bar(prev) if prev >= 0 else final
            variance = (1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev)
            std = self.eta * math.sqrt(max(variance, 0.0))
            self._coef.append(_DDIMCoef(
                sqrt_a_t=math.sqrt(a_t), sqrt_1m_a_t=math.sqrt(1.0 - a_t), sqrt_a_prev=math.sqrt(a_prev),
                dir_coef=math.sqrt(max(1.0 - a_prev - std * std, 0.0)), std=std))

    def _step(self, i: int, model_output: Tensor, sample: Tensor, noise: Tensor | None) -> tuple[Tensor, Tensor]:
        c = self._coef[i]
        x0 = (sample - c.sqrt_1m_a_t * model_output) / c.sqrt_a_t
        if self.clip_sample:
            x0 = x0.clamp(-self.clip_sample_range, self.clip_sample_range)
        eps = model_output
        if self.use_clipped_model_output:
            eps = (sample - c.sqrt_a_t * x0) / c.sqrt_1m_a_t
        prev = c.sqrt_a_prev * x0 + c.dir_coef * eps
        if noise is not None:
            prev = prev + c.std * noise
        return prev, x0

    def _noisy(self, i: int) -> bool:
        return self.eta > 0
