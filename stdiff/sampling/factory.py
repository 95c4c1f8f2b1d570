"""Samplers by name."""
from __future__ import annotations

from typing import Any

from .base import Sampler
from .ddim import DDIMSampler
from .ddpm import DDPMSampler
from .dpm_solver import DPMSolverPPSampler
from .schedule import NoiseSchedule

SAMPLERS: dict[str, tuple[type[Sampler], dict[str, Any]]] = {
    "ddpm": (DDPMSampler, {}),
    "ddim": (DDIMSampler, {}),
    "dpmpp": (DPMSolverPPSampler, {"solver_order": 2}),
    "dpmpp3m": (DPMSolverPPSampler, {"solver_order": 3}),
}


def make_sampler(name: str, steps: int, schedule: NoiseSchedule | None = None, **kw: Any) -> Sampler:
    """A sampler with its grid set: "ddpm", "ddim", "dpmpp" (DPM-Solver++ 2M) or "dpmpp3m".

    steps: number of inference steps in [1, schedule.num_train_timesteps]; ``kw`` go to the
    sampler's constructor (e.g. eta=0.5 for DDIM, clip_sample=True for DPM-Solver++).
    """
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}")
    cls, defaults = SAMPLERS[name]
    sampler = cls(schedule, **{**defaults, **kw})
    sampler.set_timesteps(steps)
    return sampler
