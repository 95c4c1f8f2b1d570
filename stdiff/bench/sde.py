"""Whole motion-SDE solve: stdiff's solver vs ``torchsde.sdeint`` with the same nets and Brownian increments.

For each preset's SDE (drift and diffusion nets with random weights, the zero-initialised last
convs randomised too so that f and g are not zero) and batch size N: integrate from the last
observed time over ``frames`` future frames at dt = config.sde.dt with Euler-Heun (Stratonovich,
the official solver), once with :meth:`stdiff.models.sde.MotionSDE.solve` (fused step ops; on
CUDA also captured whole in one CUDA graph) and once with torchsde driven by the same increments.
Both results are compared before anything is timed (the row records the largest difference);
the solvers are then timed round-robin.
"""
from __future__ import annotations

import argparse
import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..config import preset
from ..models.sde import MotionSDE, time_grid
from .common import (
    COMMON_COLUMNS, TIMING_COLUMNS, Case, Plan, auto_backend, environment, measure_interleaved, resolve_device,
    results_dir, write_csv,
)
from .common import main as common_main

__all__ = ["COLUMNS", "PLANS", "GridBrownian", "make_sde", "torchsde_solve", "run", "run_cli", "main"]


COLUMNS: tuple[str, ...] = COMMON_COLUMNS + (
    "plan", "preset", "state_shape", "batch", "frames", "steps", "method", "solver", "op_backend",
    *TIMING_COLUMNS, "speedup_vs_torchsde", "max_abs_diff", "max_abs_state",
)


@dataclass(frozen=True)
class Size:
    """The SDE of a case's preset on ``batch`` states, integrated over ``frames`` future frames."""

    batch: int
    frames: int


#: "gpu": the issue's full setting (the SDE of kth64 and cityscapes128 is the same: 256 x 16 x 16,
#: 2 hidden layers). "cpu": what a shared 2-core machine can do in minutes (kth64 at N=8 over 1
#: frame = 10 steps instead of 10 frames; no N=64). "smoke": CI.
PLANS: dict[str, Plan[Size]] = {
    "gpu": Plan((Case("kth64", (Size(1, 10), Size(8, 10), Size(64, 10)), repeats=10, warmup=2),
                 Case("tiny", (Size(1, 10), Size(8, 10), Size(64, 10)), repeats=10, warmup=2))),
    "cpu": Plan((Case("kth64", (Size(1, 10), Size(8, 1)), repeats=5),
                 Case("tiny", (Size(1, 10), Size(8, 10), Size(64, 10)), repeats=5))),
    "smoke": Plan((Case("tiny", (Size(1, 1),), repeats=1),)),
}

_TOL = 1e-9


def _base_brownian() -> type:
    from torchsde._brownian.brownian_base import BaseBrownian

    return BaseBrownian


class GridBrownian(_base_brownian()):
    """A Brownian path for torchsde made of given increments on a time grid (linear in between).

    grid: K + 1 increasing float times; dw: (K, N, D) increments, dw[k] over [grid[k], grid[k+1]].
    ``bm(ta, tb)`` returns dw[k] itself when [ta, tb] is step k (up to float drift of torchsde's
    accumulated times), so both solvers see bit-identical noise.
    """

    def __init__(self, grid: Sequence[float], dw: Tensor) -> None:
        if dw.dim() != 3 or len(grid) != dw.shape[0] + 1:
            raise ValueError(f"dw must be (K, N, D) with K = len(grid) - 1 = {len(grid) - 1}, got {tuple(dw.shape)}")
        self.grid = [float(t) for t in grid]
        self.dw = dw

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        if return_U or return_A:
            raise ValueError("GridBrownian has no space-time Levy area (use an Euler-type solver)")
        if tb is None:
            ta, tb = self.grid[0], ta
        ta, tb = float(ta), float(tb)
        k = max(bisect.bisect_right(self.grid, ta + _TOL) - 1, 0)
        total = None
        while k < len(self.dw) and self.grid[k] < tb - _TOL:
            a, b = self.grid[k], self.grid[k + 1]
            fraction = (min(b, tb) - max(a, ta)) / (b - a)
            part = self.dw[k] if fraction > 1 - _TOL else (fraction * self.dw[k] if fraction > _TOL else None)
            if part is not None:
                total = part if total is None else total + part
            k += 1
        return torch.zeros_like(self.dw[0]) if total is None else total

    def __repr__(self) -> str:
        return f"GridBrownian(steps={len(self.dw)}, shape={tuple(self.dw.shape[1:])})"

    dtype = property(lambda self: self.dw.dtype)
    device = property(lambda self: self.dw.device)
    shape = property(lambda self: self.dw.shape[1:])
    levy_area_approximation = property(lambda self: "none")


class _TorchsdeFunc(nn.Module):
    """MotionSDE's nets in torchsde's interface: y (N, D) flat, diagonal noise, Stratonovich."""

    noise_type = "diagonal"
    sde_type = "stratonovich"

    def __init__(self, sde: MotionSDE, shape: Sequence[int]) -> None:
        super().__init__()
        self.sde, self.state_shape = sde, tuple(shape)

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        return self.sde.f(y.view(-1, *self.state_shape)).flatten(1)

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        return self.sde.g(y.view(-1, *self.state_shape)).flatten(1)


def make_sde(preset_name: str, device: torch.device, seed: int = 0, last_std: float = 0.02) -> MotionSDE:
    """The preset's MotionSDE (Euler-Heun) with random weights; the last convs ~ N(0, last_std^2)."""
    cfg = preset(preset_name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sde = MotionSDE(cfg.motion_channels, cfg.sde.n_layers, "euler_heun", cfg.sde.dt)
        for net in (sde.drift, sde.diffusion):
            nn.init.normal_(net.net[-1].weight, std=last_std)
            nn.init.normal_(net.net[-1].bias, std=last_std)
    return sde.to(device).eval()


def torchsde_solve(sde: MotionSDE, y0: Tensor, t0: float, times: Sequence[float], dw: Tensor) -> Tensor:
    """torchsde.sdeint (euler_heun, dt = sde.dt, float64 ts) with increments ``dw`` (K, *y0.shape).

    Returns the states at ``times``: (T, *y0.shape).
    """
    import torchsde

    grid = time_grid(float(t0), float(times[-1]), sde.dt).tolist()
    func = _TorchsdeFunc(sde, y0.shape[1:])
    ts = torch.tensor([t0, *times], dtype=torch.float64)
    bm = GridBrownian(grid, dw.flatten(2))
    ys = torchsde.sdeint(func, y0.flatten(1), ts, bm=bm, method="euler_heun", dt=sde.dt)
    return ys[1:].view(len(times), *y0.shape)


def _graphed(fn: Callable[[], Tensor]) -> Callable[[], Tensor]:
    """Capture ``fn`` (fixed inputs) in one CUDA graph; returns a replay that gives its output buffer."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()

    def replay() -> Tensor:
        graph.replay()
        return out

    return replay


def _compare(ours: Tensor, theirs: Tensor, what: str) -> float:
    """Largest |ours - theirs|; RuntimeError when above 1e-3 * max(1, max |theirs|)."""
    diff = float((ours.float() - theirs.float()).abs().max())
    scale = max(1.0, float(theirs.abs().max()))
    if not diff <= 1e-3 * scale:
        raise RuntimeError(f"{what}: stdiff and torchsde disagree by {diff:.3g} (state scale {scale:.3g})")
    return diff


def _size_rows(case: Case[Size], size: Size, plan_name: str, device: torch.device, smoke: bool
               ) -> list[dict[str, object]]:
    batch = size.batch
    cfg = preset(case.preset)
    sde = make_sde(case.preset, device)
    shape = (batch, cfg.motion_channels, cfg.motion_size, cfg.motion_size)
    t0 = float(cfg.num_observed - 1)
    times = [t0 + k for k in range(1, size.frames + 1)]
    gen = torch.Generator(device=device).manual_seed(batch)
    y0 = torch.randn(shape, generator=gen, device=device)
    grid = time_grid(t0, times[-1], sde.dt)
    dw = torch.randn((len(grid) - 1, *shape), generator=gen, device=device)
    dw *= grid.diff().sqrt().to(device=device, dtype=dw.dtype).view(-1, 1, 1, 1, 1)
    bm = GridBrownian(grid.tolist(), dw.flatten(2))
    solvers: dict[str, Callable[[], Tensor]] = {
        "torchsde": lambda: torchsde_solve(sde, y0, t0, times, dw),
        "stdiff": lambda: sde.solve(y0, t0, times, bm=bm),
    }
    with torch.no_grad():
        reference = solvers["torchsde"]()
        diffs = {"torchsde": 0.0, "stdiff": _compare(solvers["stdiff"](), reference, f"{case.preset} N={batch}")}
        if device.type == "cuda":
            solvers["stdiff_cuda_graph"] = _graphed(solvers["stdiff"])
            diffs["stdiff_cuda_graph"] = _compare(solvers["stdiff_cuda_graph"](), reference, "CUDA graph")
        timings = measure_interleaved(solvers, device, case.repeats, case.warmup)
    base = timings["torchsde"].median_ms
    rows = []
    for name, timing in timings.items():
        rows.append({
            **environment("sde", device, smoke), "plan": plan_name, "preset": case.preset,
            "state_shape": "x".join(map(str, shape[1:])), "batch": batch, "frames": size.frames,
            "steps": len(dw), "method": "euler_heun", "solver": name,
            "op_backend": "torch (torchsde)" if name == "torchsde" else auto_backend(device),
            **timing.columns(), "speedup_vs_torchsde": round(base / timing.median_ms, 4), "max_abs_diff": diffs[name],
            "max_abs_state": round(float(reference.abs().max()), 4),
        })
    return rows


def run(device: torch.device, out_dir: Path, smoke: bool) -> list[Path]:
    """Run the plan for ``device`` ("smoke" when ``smoke``) into ``out_dir/sde.csv``.

    The file is rewritten after every batch size, so an interrupted run keeps what it measured.
    """
    plan_name = "smoke" if smoke else ("gpu" if device.type == "cuda" else "cpu")
    plan = PLANS[plan_name]
    path = Path(out_dir) / "sde.csv"
    rows: list[dict[str, object]] = []
    for case in plan.cases:
        for size in case.sizes:
            rows += _size_rows(case, size, plan_name, device, smoke)
            write_csv(path, rows, COLUMNS)
    return [path]


def run_cli(args: argparse.Namespace) -> list[Path]:
    device = resolve_device(args.device)
    return run(device, results_dir(args, device), args.smoke)


def main(argv: Sequence[str] | None = None) -> int:
    """``python benchmarks/sde.py [--smoke] [--out DIR] [--device DEV]``."""
    return common_main("sde", run_cli, argv)
