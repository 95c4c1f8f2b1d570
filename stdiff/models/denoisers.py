"""The model's side of the sampling loop (:class:`stdiff.sampling.FrameDenoiser`): eps for one step.

- :class:`StepwiseDenoiser`: the official algorithm, SPADE's gamma/beta recomputed at every step;
- :class:`CachedDenoiser`: gamma/beta computed once per frame (the same numbers), the UNet in its
  own dtype and memory format, optionally ``torch.compile``-d;
- :class:`GraphedDenoiser`: CUDA only, a :class:`CachedDenoiser` whose step is captured in a CUDA
  graph once per batch shape and replayed.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .unet import SpadeCache

__all__ = ["CachedDenoiser", "GraphedDenoiser", "StepwiseDenoiser"]


class StepwiseDenoiser:
    """``unet(cat(x, cond), t, motion=motion)`` at every step, float32, the UNet's layout."""

    def __init__(self, unet: nn.Module) -> None:
        self.unet = unet
        self.motion: Tensor | None = None

    def set_motion(self, motion: Tensor) -> None:
        self.motion = motion

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        return self.unet(torch.cat([x, cond], 1), t, motion=self.motion).float()


class CachedDenoiser:
    """SPADE cache per frame; x: (B, C, H, W) float32, cond: (B, C, H, W), eps float32.

    dtype: the UNet's parameter dtype (inputs are cast to it); channels_last: the UNet's weights'
    memory format (inputs follow it); compile: ``torch.compile`` the UNet evaluation.
    """

    def __init__(self, unet: nn.Module, dtype: torch.dtype, compile: bool = False, channels_last: bool = False
                 ) -> None:
        self.unet = unet
        self.dtype = dtype
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.spade: SpadeCache | None = None
        self._forward: Callable[..., Tensor] = self._eval
        if compile:
            self._forward = torch.compile(self._eval, dynamic=False)

    def _eval(self, sample: Tensor, t: Tensor, *maps: Tensor) -> Tensor:
        pairs = [(maps[i], maps[i + 1]) for i in range(0, len(maps), 2)]
        return self.unet(sample, t, spade=SpadeCache(pairs))

    def set_motion(self, motion: Tensor) -> None:
        self.spade = self.unet.compute_spade(motion.to(self.dtype).contiguous(memory_format=self.memory_format))

    def _maps(self) -> list[Tensor]:
        return [m for pair in self.spade for m in pair]

    def _sample(self, x: Tensor, cond: Tensor) -> Tensor:
        return torch.cat([x.to(self.dtype), cond.to(self.dtype)], 1).contiguous(memory_format=self.memory_format)

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        return self._forward(self._sample(x, cond), t, *self._maps()).float()


class GraphedDenoiser(CachedDenoiser):
    """CUDA only: the step's UNet evaluation (compiled or not) captured in a CUDA graph once per
    batch shape, then replayed; falls back to eager evaluation (with a warning) if capture fails.

    Static buffers hold the sample, the timestep and the SPADE maps: each frame copies its maps
    into them, each step copies x and t and replays the graph. The returned eps may be the
    graph's output buffer (valid until the next call; the samplers consume it at once).
    """

    def __init__(self, unet: nn.Module, dtype: torch.dtype, compile: bool = False, channels_last: bool = False
                 ) -> None:
        super().__init__(unet, dtype, compile, channels_last)
        self._graph: torch.cuda.CUDAGraph | None = None
        self._maps_buf: list[Tensor] = []
        self._sample_buf = torch.empty(0)
        self._t_buf = torch.empty(0)
        self._out = torch.empty(0)
        self._failed = False

    def set_motion(self, motion: Tensor) -> None:
        super().set_motion(motion)
        maps = self._maps()
        if [m.shape for m in maps] != [b.shape for b in self._maps_buf]:
            self._maps_buf = [m.clone() for m in maps]
            self._graph = None
        else:
            for buf, m in zip(self._maps_buf, maps):
                buf.copy_(m)

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        if self._failed:
            return super().__call__(x, t, cond)
        sample = self._sample(x, cond)
        if self._graph is None or self._sample_buf.shape != sample.shape:
            try:
                self._capture(sample)
            except RuntimeError as exc:  # e.g. an op backend that synchronises with the host
                warnings.warn(f"stdiff: CUDA graph capture of the denoising step failed ({exc}); "
                              "running the UNet eagerly", RuntimeWarning, stacklevel=2)
                self._failed = True
                return super().__call__(x, t, cond)
        self._sample_buf.copy_(sample)
        self._t_buf.copy_(t)
        self._graph.replay()
        return self._out.float()

    def _capture(self, sample: Tensor) -> None:
        self._sample_buf = sample.clone()
        self._t_buf = torch.zeros((), dtype=torch.long, device=sample.device)
        args = (self._sample_buf, self._t_buf, *self._maps_buf)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up (lazy init, backend loading, autotuning) outside the capture
                self._forward(*args)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._out = self._forward(*args)
        self._graph = graph
