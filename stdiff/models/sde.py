"""Motion SDE: drift/diffusion nets and fixed-step solvers with outputs at any query times (DESIGN.md §1.3)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .. import ops

__all__ = ["SDEFuncNet", "MotionSDE", "time_grid"]


class SDEFuncNet(nn.Module):
    """3x3 conv, n_layers x [tanh, 3x3 conv], tanh, zero-initialised 3x3 conv; (N, F, H, W) -> same.

    Autonomous (ignores t). Layer indices match the official ``net.*`` keys.
    """

    def __init__(self, channels: int, n_layers: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, channels, 3, padding=1)]
        for _ in range(n_layers):
            layers += [nn.Tanh(), nn.Conv2d(channels, channels, 3, padding=1)]
        last = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        layers += [nn.Tanh(), last]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def time_grid(t0: float, t_end: float, dt: float) -> Tensor:
    """Step times ``t0, t0 + dt, ...`` (computed as t0 + k*dt in float64) ending exactly at t_end.

    The last step is shortened when ``t_end - t0`` is not a multiple of dt (like torchsde's
    fixed-step loop). Returns a float64 CPU tensor of length K + 1 for K steps.
    """
    if not t_end > t0:
        raise ValueError(f"query times must be > t0={t0}, got last time {t_end}")
    n_full = math.floor((t_end - t0) / dt + 1e-9)
    grid = [t0 + k * dt for k in range(n_full + 1)]
    if t_end - grid[-1] > 1e-9 * max(1.0, abs(t_end)):
        grid.append(t_end)
    else:
        grid[-1] = t_end
    return torch.tensor(grid, dtype=torch.float64)


class MotionSDE(nn.Module):
    """Drift f and diffusion g = tanh(net_g) on the motion state, with fixed-step solvers.

    Methods: ``euler_heun`` (Stratonovich, official default), ``euler`` (Euler-Maruyama, Ito: a
    different SDE unless g is constant, one g evaluation per step instead of two) and ``ode`` (g = 0).
    """

    def __init__(self, channels: int, n_layers: int = 2, method: str = "euler_heun", dt: float = 0.1,
                 backend: str = "auto") -> None:
        super().__init__()
        self.drift = SDEFuncNet(channels, n_layers)
        self.diffusion = SDEFuncNet(channels, n_layers)
        self.method = method
        self.dt = dt
        self.backend = backend

    def f(self, y: Tensor) -> Tensor:
        """Drift f(y)."""
        return self.drift(y)

    def g(self, y: Tensor) -> Tensor:
        """Diffusion g(y) = tanh(net_g(y)), one Brownian motion per element."""
        return torch.tanh(self.diffusion(y))

    def num_steps(self, t0: float, times: Sequence[float]) -> int:
        """Number of solver steps for :meth:`solve` (leading size of its ``dW``)."""
        return len(time_grid(float(t0), float(max(times)), self.dt)) - 1

    def brownian_increments(self, y0: Tensor, t0: float, times: Sequence[float],
                            generator: torch.Generator | None = None) -> Tensor:
        """Draw (K, *y0.shape) increments ``sqrt(step) N(0, 1)`` for the grid of :meth:`solve`."""
        grid = time_grid(float(t0), float(max(times)), self.dt)
        steps = (grid[1:] - grid[:-1]).sqrt().to(dtype=y0.dtype)
        noise = torch.randn((len(steps), *y0.shape), generator=generator, dtype=y0.dtype,
                            device=generator.device if generator is not None else y0.device)
        noise = noise.to(y0.device)
        return noise * steps.to(y0.device).view(-1, *([1] * y0.dim()))

    def _step(self, y: Tensor, dt: float, dW: Tensor | None, seed: int | None, k: int, method: str) -> Tensor:
        f = self.drift(y)
        if method == "ode":
            return y + f * dt
        g_raw = self.diffusion(y)
        noise = dict(seed=seed, offset=k) if dW is None else {}
        if method == "euler":
            return ops.sde_step(y, f, g_raw, dW, dt, g_is_raw=True, backend=self.backend, **noise)
        y_pred = ops.sde_predict(y, g_raw, dW, dt=dt, g_is_raw=True, backend=self.backend, **noise)
        g_pred_raw = self.diffusion(y_pred)
        return ops.sde_step(y, f, g_raw, dW, dt, g_pred=g_pred_raw, g_is_raw=True, backend=self.backend, **noise)

    def solve(
        self,
        y0: Tensor,
        t0: float,
        times: Sequence[float],
        dW: Tensor | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        method: str | None = None,
        noise=None,
    ) -> Tensor:
        """Integrate from ``y0`` (N, F, H, W) at time t0 and return the states at ``times`` (T, N, F, H, W).

        ``times``: strictly increasing, all > t0 (any real values: off-grid ones are linearly
        interpolated between the surrounding steps). Noise: ``dW`` (K, N, F, H, W) with K =
        :meth:`num_steps`; else drawn from ``generator``; or, with ``seed``, drawn inside the fused
        step ops (Philox, never stored).
        """
        method = method or self.method
        if method not in ("euler_heun", "euler", "ode"):
            raise ValueError(f"method must be 'euler_heun', 'euler' or 'ode', got {method!r}")
        times = [float(t) for t in times]
        if not times:
            raise ValueError("times must not be empty")
        if any(b <= a for a, b in zip(times, times[1:])) or times[0] <= t0:
            raise ValueError(f"times must be strictly increasing and > t0={t0}, got {times}")
        grid = time_grid(float(t0), times[-1], self.dt).tolist()
        n_steps = len(grid) - 1
        if method != "ode":
            if dW is not None:
                if tuple(dW.shape) != (n_steps, *y0.shape):
                    raise ValueError(f"dW must have shape {(n_steps, *tuple(y0.shape))} for these times, got {tuple(dW.shape)}")
            elif noise is not None:  # NoiseStreams: step k's increment is sqrt(step) * noise.randn((0, k), ...)
                steps = [math.sqrt(b - a) for a, b in zip(grid, grid[1:])]
                dW = torch.stack([noise.randn((0, k), tuple(y0.shape[1:]), y0.dtype).to(y0.device) * h
                                  for k, h in enumerate(steps)])
            elif seed is None:
                dW = self.brownian_increments(y0, t0, times, generator)
        outputs: list[Tensor] = []
        y, query = y0, 0
        for k in range(n_steps):
            t_a, t_b = grid[k], grid[k + 1]
            y_next = self._step(y, t_b - t_a, None if dW is None else dW[k], seed, k, method)
            while query < len(times) and times[query] <= t_b + 1e-9:
                w = (times[query] - t_a) / (t_b - t_a)
                outputs.append(y_next if w >= 1 - 1e-9 else torch.lerp(y, y_next, w))
                query += 1
            y = y_next
        return torch.stack(outputs)
