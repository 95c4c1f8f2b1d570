"""The model's side of the sampling loop (:class:`stdiff.pipeline.FrameDenoiser`): eps for one step.

A denoiser turns a frame's motion into its conditioning once (:meth:`condition`), then computes
eps at each step from (x_t, t, the conditioning frame, that conditioning). The conditioning is
returned to the caller, never kept: one denoiser serves any number of concurrent calls.

- :class:`StepwiseDenoiser`: the official algorithm, SPADE's gamma/beta recomputed at every step;
- :class:`CachedDenoiser`: gamma/beta computed once per frame (the same numbers), the UNet in its
  own dtype and memory format, optionally ``torch.compile``-d;
- :class:`GraphedDenoiser`: CUDA only, a :class:`CachedDenoiser` whose step is captured in a CUDA
  graph once per batch shape and replayed.
"""
from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .unet import SpadeCache

__all__ = ["CachedDenoiser", "GraphedDenoiser", "StepwiseDenoiser"]


class StepwiseDenoiser:
    """``unet(cat(x, cond), t, motion=motion)`` at every step, float32, the UNet's layout.
    Holds no per-call state (a frame's conditioning is the motion itself): safe to share between threads."""

    def __init__(self, unet: nn.Module) -> None:
        self.unet = unet

    def condition(self, motion: Tensor) -> Tensor:
        return motion

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor, conditioning: Tensor) -> Tensor:
        return self.unet(torch.cat([x, cond], 1), t, motion=conditioning).float()


class CachedDenoiser:
    """SPADE cache per frame; x: (B, C, H, W) float32, cond: (B, C, H, W), eps float32.

    dtype: the UNet's parameter dtype (inputs are cast to it); channels_last: the UNet's weights'
    memory format (inputs follow it); compile: ``torch.compile`` the UNet evaluation. A frame's
    conditioning is its SPADE maps (:meth:`condition`), held by the caller: the denoiser holds no
    per-call state and is safe to share between threads.
    """

    def __init__(self, unet: nn.Module, dtype: torch.dtype, compile: bool = False, channels_last: bool = False
                 ) -> None:
        self.unet = unet
        self.dtype = dtype
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self._forward: Callable[..., Tensor] = self._eval
        if compile:
            self._forward = torch.compile(self._eval, dynamic=False)

    def _eval(self, sample: Tensor, t: Tensor, *maps: Tensor) -> Tensor:
        pairs = [(maps[i], maps[i + 1]) for i in range(0, len(maps), 2)]
        return self.unet(sample, t, spade=SpadeCache(pairs))

    def condition(self, motion: Tensor) -> list[Tensor]:
        """SPADE's gamma/beta maps of every resnet for motion (B, F, h, w), flattened (gamma, beta, ...)."""
        spade = self.unet.compute_spade(motion.to(self.dtype).contiguous(memory_format=self.memory_format))
        return [m for pair in spade for m in pair]

    def _sample(self, x: Tensor, cond: Tensor) -> Tensor:
        return torch.cat([x.to(self.dtype), cond.to(self.dtype)], 1).contiguous(memory_format=self.memory_format)

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor, conditioning: list[Tensor]) -> Tensor:
        return self._forward(self._sample(x, cond), t, *conditioning).float()


@dataclass
class _Graph:
    """One captured step for one batch shape: its static inputs, output and the maps it holds."""

    graph: torch.cuda.CUDAGraph
    sample: Tensor
    t: Tensor
    maps: list[Tensor]
    out: Tensor
    source: list[Tensor] | None = None  # the conditioning whose maps were copied in last


class GraphedDenoiser(CachedDenoiser):
    """CUDA only: the step's UNet evaluation (compiled or not) captured in a CUDA graph once per
    batch shape, then replayed; falls back to eager evaluation (with a warning) if capture fails.

    Static buffers hold the sample, the timestep and the SPADE maps: a step copies x and t (and the
    frame's maps when they are not the ones copied last) and replays the graph. The buffers are
    shared state: one lock serialises the steps of all threads (copy in, replay, copy out), so
    threads sharing the denoiser get exactly what each would get alone.
    """

    def __init__(self, unet: nn.Module, dtype: torch.dtype, compile: bool = False, channels_last: bool = False
                 ) -> None:
        super().__init__(unet, dtype, compile, channels_last)
        self._graphs: dict[tuple[int, ...], _Graph] = {}
        self._lock = threading.Lock()
        self._failed = False

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor, conditioning: list[Tensor]) -> Tensor:
        if self._failed:
            return super().__call__(x, t, cond, conditioning)
        sample = self._sample(x, cond)
        with self._lock:
            graph = self._graphs.get(tuple(sample.shape))
            if graph is None:
                try:
                    graph = self._graphs[tuple(sample.shape)] = self._capture(sample, conditioning)
                except RuntimeError as exc:  # e.g. an op backend that synchronises with the host
                    warnings.warn(f"stdiff: CUDA graph capture of the denoising step failed ({exc}); "
                                  "running the UNet eagerly", RuntimeWarning, stacklevel=2)
                    self._failed = True
                    return super().__call__(x, t, cond, conditioning)
            if graph.source is not conditioning:
                for buf, m in zip(graph.maps, conditioning):
                    buf.copy_(m)
                graph.source = conditioning
            graph.sample.copy_(sample)
            graph.t.copy_(t)
            graph.graph.replay()
            return graph.out.to(torch.float32, copy=True)  # the buffer is overwritten by the next replay

    def _capture(self, sample: Tensor, conditioning: list[Tensor]) -> _Graph:
        maps = [m.clone() for m in conditioning]
        static = (sample.clone(), torch.zeros((), dtype=torch.long, device=sample.device))
        args = (*static, *maps)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up (lazy init, backend loading, autotuning) outside the capture
                self._forward(*args)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: other threads may run CUDA work (their SDE, their sampler steps) meanwhile
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            out = self._forward(*args)
        return _Graph(graph, *static, maps, out, conditioning)
