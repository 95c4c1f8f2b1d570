"""DPM-Solver++ multistep (Lu et al. 2022), data prediction, orders 1-3, midpoint 2nd order."""
from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from ..noise_schedule import NoiseSchedule
from .base import Sampler
from .timesteps import dpm_timesteps

FINAL_SIGMAS = ("sigma_min", "zero")


@dataclass(frozen=True)
class _DPMCoef:
    alpha_s: float                  # x0 = (x - sigma_s eps) / alpha_s at the current timestep s
    sigma_s: float
    x_coef: float                   # x_prev = x_coef * x + sum_j weights[j] * x0_{i-j}
    weights: tuple[float, ...]      # newest first; len = the order used at this step


def _vp(abar: float) -> tuple[float, float, float]:
    """(alpha, sigma, lambda = log(alpha / sigma)) of a VP marginal with abar < 1."""
    return math.sqrt(abar), math.sqrt(1.0 - abar), 0.5 * (math.log(abar) - math.log1p(-abar))


def _weights(order: int, alpha_t: float, h: float, h0: float, h1: float) -> tuple[float, ...]:
    """Weights on (m0, m1, m2) (newest first) of the DPM-Solver++ update of the given order.

    order 1: c0 D0;  order 2 (midpoint): c0 (D0 + D1 / 2), D1 = (m0 - m1) / r0;
    order 3: c0 D0 + c1 D1 + c2 D2 with D1, D2 the divided differences of Lu et al. (2022).
    """
    e = math.expm1(-h)                       # exp(-h) - 1
    c0 = -alpha_t * e
    if order == 1:
        return (c0,)
    r0 = h0 / h
    if order == 2:
        return (c0 + 0.5 * c0 / r0, -0.5 * c0 / r0)
    r1 = h1 / h
    c1 = alpha_t * (e / h + 1.0)
    c2 = -alpha_t * ((e + h) / h**2 - 0.5)
    q = r0 / (r0 + r1)
    diff = (1.0 / r0, -1.0 / r0 - 1.0 / r1, 1.0 / r1)            # D1_0 - D1_1 on (m0, m1, m2)
    d1 = (1.0 / r0 + q * diff[0], -1.0 / r0 + q * diff[1], q * diff[2])
    d2 = tuple(v / (r0 + r1) for v in diff)
    return tuple(c0 * (j == 0) + c1 * d1[j] + c2 * d2[j] for j in range(3))


class DPMSolverPPSampler(Sampler):
    """Multistep DPM-Solver++ (2M by default, 3M with ``solver_order=3``) for an eps model.

    Each step converts eps to x0 = (x_s - sigma_s eps) / alpha_s (optionally clipped to
    +-clip_sample_range) and extrapolates the x0 history in lambda = log(alpha / sigma).
    The first steps use lower orders while the history fills; ``lower_order_final`` lowers the
    last two steps to orders 1 and 2 when there are fewer than 15 steps. The last step goes to
    t = 0 (``final_sigmas_type="sigma_min"``, the official STDiff/diffusers-0.15 behaviour) or to
    the clean data (``"zero"``, diffusers 0.42's default, always first order there).
    A step at the first grid timestep starts a new trajectory (history cleared); other steps must
    follow the grid in order. (The official pipeline reuses diffusers 0.15's scheduler for every
    predicted frame without resetting it, so there frames after the first begin with a third-order
    step built from the previous frame's history; we do not reproduce that.)
    """

    def __init__(self, schedule: NoiseSchedule | None = None, *, solver_order: int = 2,
                 lower_order_final: bool = True, final_sigmas_type: str = "sigma_min",
                 clip_sample: bool = False, clip_sample_range: float = 1.0,
                 timestep_spacing: str = "linspace") -> None:
        super().__init__(schedule)
        if solver_order not in (1, 2, 3) or isinstance(solver_order, bool):
            raise ValueError(f"solver_order must be 1, 2 or 3, got {solver_order!r}")
        if final_sigmas_type not in FINAL_SIGMAS:
            raise ValueError(f"final_sigmas_type must be one of {FINAL_SIGMAS}, got {final_sigmas_type!r}")
        if timestep_spacing not in ("linspace", "trailing"):
            raise ValueError(f"timestep_spacing must be 'linspace' or 'trailing', got {timestep_spacing!r}")
        if not clip_sample_range > 0:
            raise ValueError(f"clip_sample_range must be > 0, got {clip_sample_range}")
        self.solver_order = solver_order
        self.lower_order_final = bool(lower_order_final)
        self.final_sigmas_type = final_sigmas_type
        self.clip_sample = bool(clip_sample)
        self.clip_sample_range = float(clip_sample_range)
        self.timestep_spacing = timestep_spacing
        self._coef: list[_DPMCoef] = []
        self._history: list[Tensor] = []
        self._next = 0

    def _grid(self, num_inference_steps: int) -> list[int]:
        return dpm_timesteps(self.schedule.num_train_timesteps, num_inference_steps, self.timestep_spacing)

    def _order(self, i: int, n: int) -> int:
        order = min(self.solver_order, i + 1)
        if self.lower_order_final and n < 15:
            if i == n - 1:
                order = 1
            elif i == n - 2:
                order = min(order, 2)
        if self.final_sigmas_type == "zero" and i == n - 1:
            order = 1
        return order

    def _prepare(self) -> None:
        sched, ts, n = self.schedule, self._ts, len(self._ts)
        lam = [_vp(sched.alpha_bar(t))[2] for t in ts]
        self._coef = []
        for i, s in enumerate(ts):
            alpha_s, sigma_s, lam_s = _vp(sched.alpha_bar(s))
            if i == n - 1 and self.final_sigmas_type == "zero":
                self._coef.append(_DPMCoef(alpha_s, sigma_s, 0.0, (1.0,)))     # x_prev = x0
                continue
            alpha_t, sigma_t, lam_t = _vp(sched.alpha_bar(max(self.prev_timestep(i), 0)))
            h = lam_t - lam_s
            if h == 0.0:                                                     # target == current
                self._coef.append(_DPMCoef(alpha_s, sigma_s, 1.0, (0.0,)))
                continue
            order = self._order(i, n)
            h0 = lam_s - lam[i - 1] if order >= 2 else 0.0
            h1 = lam[i - 1] - lam[i - 2] if order >= 3 else 0.0
            self._coef.append(_DPMCoef(alpha_s, sigma_s, sigma_t / sigma_s, _weights(order, alpha_t, h, h0, h1)))

    def reset(self) -> None:
        self._history = []
        self._next = 0

    def _step(self, i: int, model_output: Tensor, sample: Tensor, noise: Tensor | None) -> tuple[Tensor, Tensor]:
        if i == 0:
            self.reset()
        elif i != self._next:
            expected = self._ts[self._next] if self._next < len(self._ts) else "none (trajectory finished)"
            raise ValueError(f"DPM-Solver++ steps must follow the grid in order: got timestep {self._ts[i]}, "
                             f"expected {expected}; start again at timestep {self._ts[0]}")
        c = self._coef[i]
        x0 = (sample - c.sigma_s * model_output) / c.alpha_s
        if self.clip_sample:
            x0 = x0.clamp(-self.clip_sample_range, self.clip_sample_range)
        self._history = (self._history + [x0])[-self.solver_order:]
        self._next = i + 1
        out = sample * c.x_coef
        for w, m in zip(c.weights, reversed(self._history)):
            out = out + w * m
        return out, x0
