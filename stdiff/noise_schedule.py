"""The forward (noising) process of a discrete-time diffusion model."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .checks import integer

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


def _betas(name: str, num_train_timesteps: int, beta_start: float, beta_end: float) -> Tensor:
    """Betas (T,) in float64 for the named schedule (names and formulas as in diffusers)."""
    if name == "linear":
        return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64, device="cpu")
    if name == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64, device="cpu") ** 2

    def alpha_bar(s: float) -> float:  # cosine schedule of Nichol & Dhariwal, capped at beta 0.999
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    t = num_train_timesteps
    return torch.tensor([min(1 - alpha_bar((i + 1) / t) / alpha_bar(i / t), 0.999) for i in range(t)],
                        dtype=torch.float64, device="cpu")


class NoiseSchedule:
    """A variance-preserving noise schedule: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps.

    Defaults are DDPM's (1000 steps, linear betas 1e-4..0.02). ``betas`` and ``alphas_cumprod``
    (abar) are float64 tensors of shape (T,) on the CPU; coefficients are cast to the data's
    dtype only at the end. (diffusers, hence the official STDiff code, builds betas and their
    cumulative product in float32: abar differs from ours by at most 3.6e-7 relative.)
    """

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 beta_schedule: str = "linear") -> None:
        integer("num_train_timesteps", num_train_timesteps, 2)
        if beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {beta_schedule!r}")
        if beta_schedule != "squaredcos_cap_v2" and not 0.0 < beta_start <= beta_end < 1.0:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got beta_start={beta_start}, "
                             f"beta_end={beta_end}")
        self.num_train_timesteps = num_train_timesteps
        self.beta_schedule = beta_schedule
        self.betas = _betas(beta_schedule, num_train_timesteps, beta_start, beta_end)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)
        self._abar = self.alphas_cumprod.tolist()
        self._coef_cache: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}

    def alpha_bar(self, t: int) -> float:
        """abar_t as a python float (float64); 1.0 for t < 0 (the clean data)."""
        return 1.0 if t < 0 else self._abar[t]

    def _coefficients(self, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        key = (device, dtype)
        if key not in self._coef_cache:
            a = self.alphas_cumprod
            self._coef_cache[key] = (a.sqrt().to(dtype).to(device), (1.0 - a).sqrt().to(dtype).to(device))
        return self._coef_cache[key]

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """Sample x_t from q(x_t | x0) for training.

        x0, noise: (N, ...) floating, same shape; t: (N,) integer tensor with values in [0, T).
        Returns x_t, same shape/dtype/device as x0. Out-of-range t is reported as ValueError for
        CPU tensors outside ``torch.compile`` (a host read would break the graph); on accelerators it
        fails in the indexing kernel (no host sync here).
        """
        if not isinstance(x0, Tensor) or not x0.is_floating_point() or x0.dim() < 1:
            raise TypeError("x0 must be a floating tensor of shape (N, ...)")
        if not isinstance(noise, Tensor) or noise.shape != x0.shape:
            raise ValueError(f"noise must be a tensor of x0's shape {tuple(x0.shape)}, "
                             f"got {getattr(noise, 'shape', type(noise))}")
        if not isinstance(t, Tensor) or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError("t must be an integer tensor of shape (N,)")
        if t.shape != (x0.shape[0],):
            raise ValueError(f"t must have shape ({x0.shape[0]},), got {tuple(t.shape)}")
        if (t.device.type == "cpu" and t.numel() and not torch.compiler.is_compiling()
                and (int(t.min()) < 0 or int(t.max()) >= self.num_train_timesteps)):
            raise ValueError(f"t must lie in [0, {self.num_train_timesteps}), got range "
                             f"[{int(t.min())}, {int(t.max())}]")
        sqrt_ab, sqrt_1m_ab = self._coefficients(x0.device, x0.dtype)
        t = t.to(x0.device)
        shape = (-1,) + (1,) * (x0.dim() - 1)
        return sqrt_ab[t].view(shape) * x0 + sqrt_1m_ab[t].view(shape) * noise.to(x0.dtype)
