"""Motion SDE: drift/diffusion nets and fixed-step solvers with outputs at any query times.

Two time grids (``grid=``): "exact" (default) steps on t0 + k dt and reaches each off-grid query
by a side step from the grid point before it, with a Brownian-bridge increment consistent with
that step (:mod:`stdiff.models.brownian`), so a query's state does not depend on the other times
asked; "torchsde" reproduces ``torchsde.sdeint``'s fixed-step loop as the official code calls it
(float32 times, linear interpolation at the queries).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from .. import ops
from ..config import SDE_GRIDS, SDE_METHODS
from .brownian import BrownianPath, ExternalPath, GeneratorNormals, KeyedPath, NoiseSource, PhiloxNormals

__all__ = ["SDEFuncNet", "MotionSDE", "time_grid", "torchsde_grid", "METHODS", "GRIDS"]

METHODS, GRIDS = SDE_METHODS, SDE_GRIDS
_TOL = 1e-9


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



def _grid_index(t0: float, t: float, dt: float) -> tuple[int, bool]:
    """(k, on_grid): t == t0 + k dt (to 1e-9 relative), or t inside step k (t0 + k dt, t0 + (k+1) dt)."""
    n = round((t - t0) / dt)
    if abs(t0 + n * dt - t) <= _TOL * max(1.0, abs(t)):
        return n, True
    return math.floor((t - t0) / dt), False


def torchsde_grid(t0: float, times: Sequence[float], dt: float) -> tuple[Tensor, list[int]]:
    """``torchsde.sdeint``'s fixed-step times for float32 ``ts = [t0, *times]`` (the official call).

    Returns the (K + 1,) float32 step times (accumulated ``t + dt`` in float32, the last step
    clipped to ``times[-1]``) and, per query, the index of the step time at or after it.
    """
    ts = torch.tensor([t0, *times], dtype=torch.float32)
    points, after = [ts[0]], []
    for out_t in ts[1:]:
        while points[-1] < out_t:
            points.append(torch.minimum(points[-1] + dt, ts[-1]))
        after.append(len(points) - 1)
    return torch.stack(points), after


class MotionSDE(nn.Module):
    """Drift f and diffusion g = tanh(net_g) on the motion state, with fixed-step solvers.

    Methods: ``euler_heun`` (Stratonovich, official default), ``euler`` (Euler-Maruyama, Ito: a
    different SDE unless g is constant, one g evaluation per step instead of two) and ``ode`` (g = 0).
    ``grid``: "exact" or "torchsde" (see the module docstring and :meth:`solve`).
    """

    def __init__(self, channels: int, n_layers: int = 2, method: str = "euler_heun", dt: float = 0.1,
                 backend: str = "auto", grid: str = "exact") -> None:
        super().__init__()
        self.drift = SDEFuncNet(channels, n_layers)
        self.diffusion = SDEFuncNet(channels, n_layers)
        self.method = method
        self.dt = dt
        self.backend = backend
        self.grid = grid

    def f(self, y: Tensor) -> Tensor:
        """Drift f(y)."""
        return self.drift(y)

    def g(self, y: Tensor) -> Tensor:
        """Diffusion g(y) = tanh(net_g(y)), one Brownian motion per element."""
        return torch.tanh(self.diffusion(y))

    def _step(self, y: Tensor, dt: float, dW: Tensor | None, seed: int | None, k: int, method: str) -> Tensor:
        """One step of size dt with increment dW (None: in-op Philox stream (seed, offset=k))."""
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
        generator: torch.Generator | None = None,
        noise: NoiseSource | None = None,
        seed: int | None = None,
        bm: Callable[..., Tensor] | None = None,
        method: str | None = None,
        grid: str | None = None,
    ) -> Tensor:
        """Integrate from ``y0`` (N, F, H, W) at time t0 and return the states at ``times`` (T, N, F, H, W).

        ``times``: strictly increasing, all > t0, any real values. ``grid`` (default ``self.grid``):
        "exact" steps on t0 + k dt; a query between grid points is a side step from the grid point
        before it, driven by a Brownian-bridge increment consistent with that step, so the main
        path and every other query are unchanged by it. "torchsde": torchsde's fixed-step loop on
        float32 times with linear interpolation at the queries (official parity).

        Noise, at most one of: ``generator`` (default: the global RNG) draws all step increments
        first, in step order, then the bridge normals: the same call reproduces, and the main path
        (so every on-grid query) is unchanged by off-grid queries inside the steps it covers.
        ``noise``: an addressable source, ``noise.randn(key, shape, dtype)`` -> (N, *shape) with
        key (0, k) for step k's increment and (1, k, node) for its bridge: then each query's state
        depends only on its own time and row, not on the other times or rows asked. ``seed``: step
        k draws Philox stream (seed, offset=k) inside the fused ops (never stored); off-grid
        queries regenerate it with ``ops.philox_normal`` (bridge offsets: ``brownian.philox_offset``).
        ``bm``: an external Brownian path ``bm(ta, tb) -> W(tb) - W(ta)`` (a callable or a torchsde
        Brownian object; any shape with N*F*H*W elements), queried once per step and per off-grid
        query, as torchsde queries it in "torchsde" mode.
        """
        method = self.method if method is None else method
        grid = self.grid if grid is None else grid
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if grid not in GRIDS:
            raise ValueError(f"grid must be one of {GRIDS}, got {grid!r}")
        times = [float(t) for t in times]
        if not times:
            raise ValueError("times must not be empty")
        if any(b <= a for a, b in zip(times, times[1:])) or times[0] <= t0:
            raise ValueError(f"times must be strictly increasing and > t0={t0}, got {times}")
        given = [name for name, value in (("generator", generator), ("noise", noise), ("seed", seed), ("bm", bm))
                 if value is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of generator, noise, seed, bm; got {', '.join(given)}")
        solver = self._solve_exact if grid == "exact" else self._solve_torchsde
        return solver(y0, float(t0), times, method, lambda n_steps: self._path(
            y0, n_steps, method, generator, noise, seed, bm))

    @staticmethod
    def _path(y0: Tensor, n_steps: int, method: str, generator: torch.Generator | None,
              noise: NoiseSource | None, seed: int | None, bm: Callable[..., Tensor] | None) -> BrownianPath | None:
        """The Brownian path of one solve over ``n_steps`` main steps (None for the ODE)."""
        if method == "ode":
            return None
        if bm is not None:
            return ExternalPath(bm, y0.shape, y0.dtype, y0.device)
        if seed is not None:
            return KeyedPath(PhiloxNormals(seed, y0.shape[0], y0.device), y0.shape, y0.dtype, y0.device,
                             in_op_seed=seed)
        if noise is None:
            noise = GeneratorNormals(generator, n_steps, y0.shape, y0.dtype, y0.device)
        elif not callable(getattr(noise, "randn", None)):
            raise TypeError(f"noise must have a randn(key, shape, dtype) method, got {type(noise).__name__}")
        return KeyedPath(noise, y0.shape, y0.dtype, y0.device)

    def _advance(self, y: Tensor, k: int, ta: float | Tensor, tb: float | Tensor, path: BrownianPath | None,
                 method: str) -> Tensor:
        """Main step k over [ta, tb] (floats, or torchsde's float32 0-dim tensors)."""
        dW = None if path is None else path.increment(k, ta, tb)
        return self._step(y, float(tb - ta), dW, None if path is None else path.seed, k, method)

    def _solve_exact(self, y0: Tensor, t0: float, times: list[float], method: str,
                     make_path: Callable[[int], BrownianPath | None]) -> Tensor:
        located = [_grid_index(t0, t, self.dt) for t in times]
        n_steps = max(k if on_grid else k + 1 for k, on_grid in located)
        step_times = time_grid(t0, t0 + n_steps * self.dt, self.dt).tolist()
        path = make_path(n_steps)
        outputs: list[Tensor] = []
        y, k = y0, 0
        for t, (kq, on_grid) in zip(times, located):
            while k < kq:
                y = self._advance(y, k, step_times[k], step_times[k + 1], path, method)
                k += 1
            if on_grid:
                outputs.append(y)
                continue
            ta, tb = step_times[kq], step_times[kq + 1]
            dW = None if path is None else path.partial(kq, ta, tb, t)
            outputs.append(self._step(y, t - ta, dW, None, kq, method))
        return torch.stack(outputs)

    def _solve_torchsde(self, y0: Tensor, t0: float, times: list[float], method: str,
                        make_path: Callable[[int], BrownianPath | None]) -> Tensor:
        points, after = torchsde_grid(t0, times, self.dt)
        path = make_path(len(points) - 1)
        prev = y = y0
        k, outputs = 0, []
        for out_t, j in zip(torch.tensor(times, dtype=torch.float32), after):
            while k < j:
                prev, y = y, self._advance(y, k, points[k], points[k + 1], path, method)
                k += 1
            t_a, t_b = points[j - 1], points[j]  # torchsde's linear_interp, in its float32 arithmetic
            outputs.append((t_b - out_t) / (t_b - t_a) * prev + (out_t - t_a) / (t_b - t_a) * y)
        return torch.stack(outputs)
