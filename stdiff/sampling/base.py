"""Common interface of the samplers (reverse-process solvers)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor

from .schedule import NoiseSchedule
from .timesteps import check_steps

DenoiseFn = Callable[[Tensor, Tensor], Tensor]


def randn_on(shape: Sequence[int], generator: torch.Generator | None, device: torch.device,
             dtype: torch.dtype) -> Tensor:
    """Standard normal noise drawn on the generator's device (so a CPU generator gives the same
    numbers whatever the target device), then moved to ``device``."""
    draw_device = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=draw_device, dtype=dtype).to(device)


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Arithmetic dtype of a step: float32 for 16-bit inputs, else the input dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class Sampler(ABC):
    """Base class: a descending grid of train timesteps and a ``step`` from x_t to x_prev.

    Subclasses implement ``_grid``, ``_prepare`` (per-step coefficients, python floats in float64)
    and ``_step``. ``timesteps`` is a 1-D long CPU tensor; ``step`` accepts any of its entries as a
    python int or a 0-d/1-element tensor.
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
    def _step(self, i: int, model_output: Tensor, sample: Tensor, generator: torch.Generator | None) -> Tensor:
        """The step at grid position i, in the working dtype."""

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Choose the inference grid (1 <= num_inference_steps <= T) and reset the state."""
        check_steps(num_inference_steps, self.schedule.num_train_timesteps)
        self._ts = self._grid(num_inference_steps)
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

    def step(self, model_output: Tensor, timestep: int | Tensor, sample: Tensor,
             generator: torch.Generator | None = None) -> Tensor:
        """One reverse step x_t -> x_prev.

        model_output: predicted noise eps, same shape as sample (N, ...); sample: x_t, floating.
        Returns x_prev with sample's shape, dtype and device (16-bit inputs are computed in float32).
        Noise (stochastic samplers) is drawn from ``generator`` (the global RNG when None).
        """
        i = self.step_index(timestep)
        if not isinstance(sample, Tensor) or not sample.is_floating_point():
            raise TypeError("sample must be a floating tensor")
        if not isinstance(model_output, Tensor) or model_output.shape != sample.shape:
            raise ValueError(f"model_output must be a tensor of sample's shape {tuple(sample.shape)}, "
                             f"got {getattr(model_output, 'shape', type(model_output))}")
        wd = work_dtype(sample.dtype)
        out = self._step(i, model_output.to(wd), sample.to(wd), generator)
        return out.to(sample.dtype)

    def sample(self, denoise_fn: DenoiseFn, shape: Sequence[int], generator: torch.Generator | None = None,
               progress: bool = False, *, device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> Tensor:
        """Run the whole reverse process from x_T ~ N(0, I) and return x0 of ``shape``.

        denoise_fn(x_t, t) -> eps, with t a 0-d long tensor on ``device``. device defaults to the
        generator's device (CPU without a generator). Initial and step noise come from ``generator``.
        """
        if not self._ts:
            raise RuntimeError("call set_timesteps(num_inference_steps) before sample()")
        if device is None:
            device = generator.device if generator is not None else torch.device("cpu")
        device = torch.device(device)
        x = randn_on(shape, generator, device, work_dtype(dtype)).to(dtype)  # same noise for 16/32-bit
        self.reset()
        ts = self.timesteps.to(device)
        steps: Iterable[int] = range(len(self._ts))
        if progress:
            from tqdm.auto import tqdm
            steps = tqdm(steps, desc=type(self).__name__)
        for i in steps:
            x = self.step(denoise_fn(x, ts[i]), self._ts[i], x, generator=generator)
        return x
