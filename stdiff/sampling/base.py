"""Common interface of the samplers (reverse-process solvers)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import NamedTuple

import torch
from torch import Tensor

from ..noise_schedule import NoiseSchedule
from .timesteps import check_steps


class StepOutput(NamedTuple):
    """What a reverse step returns (diffusers' names): ``prev_sample`` x_prev, the next iterate, and
    ``pred_original_sample`` the clean sample x0 the step predicted from eps (clipped when the
    sampler clips), both with the input sample's shape, dtype and device."""

    prev_sample: Tensor
    pred_original_sample: Tensor


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Arithmetic dtype of a step: float32 for 16-bit inputs, else the input dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class Sampler(ABC):
    """Base class: a descending grid of train timesteps and a ``step`` from x_t to x_prev.

    Subclasses implement ``_grid``, ``_prepare`` (per-step coefficients, python floats in float64),
    ``_step`` and, when some steps add noise, ``_noisy``. ``timesteps`` is a 1-D long CPU tensor.
    Two ways to name a step: :meth:`step` takes a timestep (any entry of ``timesteps``, a python int
    or a 0-d/1-element tensor; diffusers' interface), :meth:`step_at` its position in ``timesteps``
    (what a loop over the grid has; no lookup).
    """

    def __init__(self, schedule: NoiseSchedule | None = None) -> None:
        if schedule is not None and not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a NoiseSchedule or None, got {type(schedule).__name__}")
        self.schedule = schedule if schedule is not None else NoiseSchedule()
        self.num_inference_steps: int | None = None
        self.timesteps = torch.empty(0, dtype=torch.long)
        self._ts: list[int] = []
        self._index: dict[int, int] = {}

    @abstractmethod
    def _grid(self, num_inference_steps: int) -> list[int]:
        """The descending timestep grid for this many steps."""

    @abstractmethod
    def _prepare(self) -> None:
        """Precompute the per-step coefficients for ``self._ts``."""

    @abstractmethod
    def _step(self, i: int, model_output: Tensor, sample: Tensor, noise: Tensor | None) -> tuple[Tensor, Tensor]:
        """(x_prev, x0) of the step at grid position i, in the working dtype (noise: given iff ``_noisy(i)``)."""

    def _noisy(self, i: int) -> bool:
        """Whether the step at grid position i adds noise (deterministic samplers: never)."""
        return False

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Choose the inference grid (1 <= num_inference_steps <= T) and reset the state."""
        self._ts = self._grid(check_steps(num_inference_steps, self.schedule.num_train_timesteps))
        self._index = {t: i for i, t in enumerate(self._ts)}
        self.num_inference_steps = len(self._ts)
        self.timesteps = torch.tensor(self._ts, dtype=torch.long)
        self._prepare()
        self.reset()

    def reset(self) -> None:
        """Forget multistep history (call before each new sampling loop)."""

    def prev_timestep(self, i: int) -> int:
        """The timestep after grid position i (-1 after the last: the clean data)."""
        return self._ts[i + 1] if i + 1 < len(self._ts) else -1

    def step_index(self, timestep: int | Tensor) -> int:
        """Position of ``timestep`` in ``timesteps``; ValueError if it is not on the grid."""
        if not self._ts:
            raise RuntimeError("call set_timesteps(num_inference_steps) before step()")
        if isinstance(timestep, Tensor):
            if timestep.numel() != 1 or timestep.is_floating_point() or timestep.dtype == torch.bool:
                raise ValueError(f"timestep must be an int or a one-element integer tensor, got {timestep!r}")
            timestep = int(timestep.item())
        elif isinstance(timestep, bool) or not isinstance(timestep, int):
            raise ValueError(f"timestep must be an int or a one-element integer tensor, got {timestep!r}")
        if timestep not in self._index:
            raise ValueError(f"timestep {timestep} is not in this sampler's timesteps "
                             f"({self._ts[0]} ... {self._ts[-1]}, {len(self._ts)} steps)")
        return self._index[timestep]

    def needs_noise(self, timestep: int | Tensor) -> bool:
        """Whether :meth:`step` at ``timestep`` adds noise (then it needs ``noise``)."""
        return self._noisy(self.step_index(timestep))

    def needs_noise_at(self, index: int) -> bool:
        """Whether the step at grid position ``index`` adds noise."""
        return self._noisy(self._check_index(index))

    def step(self, model_output: Tensor, timestep: int | Tensor, sample: Tensor, noise: Tensor | None = None
             ) -> StepOutput:
        """One reverse step x_t -> x_prev at ``timestep`` (see :meth:`step_at`)."""
        return self.step_at(self.step_index(timestep), model_output, sample, noise)

    def step_at(self, index: int, model_output: Tensor, sample: Tensor, noise: Tensor | None = None) -> StepOutput:
        """One reverse step x_t -> x_prev at grid position ``index`` (timestep ``timesteps[index]``).

        model_output: predicted noise eps, same shape as sample (N, ...); sample: x_t, floating;
        noise: standard normals of sample's shape, required exactly when :meth:`needs_noise_at`
        (the caller owns the random numbers). Returns :class:`StepOutput` (x_prev and the predicted
        x0) with sample's shape, dtype and device (16-bit inputs are computed in float32).
        """
        i = self._check_index(index)
        if not isinstance(sample, Tensor) or not sample.is_floating_point():
            raise TypeError("sample must be a floating tensor")
        if not isinstance(model_output, Tensor) or model_output.shape != sample.shape:
            raise ValueError(f"model_output must be a tensor of sample's shape {tuple(sample.shape)}, "
                             f"got {getattr(model_output, 'shape', type(model_output))}")
        noisy = self._noisy(i)
        if noisy and (not isinstance(noise, Tensor) or noise.shape != sample.shape):
            raise ValueError(f"noise must be a tensor of sample's shape {tuple(sample.shape)} at timestep "
                             f"{self._ts[i]} (a stochastic step), got {getattr(noise, 'shape', noise)!r}")
        if not noisy and noise is not None:
            raise ValueError(f"noise must be None at timestep {self._ts[i]} (a deterministic step)")
        wd = work_dtype(sample.dtype)
        prev, x0 = self._step(i, model_output.to(wd), sample.to(wd),
                              None if noise is None else noise.to(sample.device, wd))
        return StepOutput(prev.to(sample.dtype), x0.to(sample.dtype))

    def _check_index(self, index: int) -> int:
        if not self._ts:
            raise RuntimeError("call set_timesteps(num_inference_steps) before step()")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(self._ts):
            raise ValueError(f"index must be an int in [0, {len(self._ts)}), got {index!r}")
        return index
