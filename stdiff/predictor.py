"""The predictor: ``Predictor.from_pretrained(path).predict(frames, times=...)`` (DESIGN.md §4).

Two paths compute the same frames from the same random numbers:

- the fast path (default): SPADE's gamma/beta computed once per predicted frame, all videos and
  samples in one batch (N*S), fused ops (``stdiff.ops`` backend "auto"), ``torch.inference_mode``,
  the UNet optionally in bfloat16/float16, ``torch.compile`` optional, and on CUDA the UNet
  evaluation of a denoising step captured once in a CUDA graph and replayed;
- ``exact_reference=True``: the official algorithm as :meth:`STDiff.sample` runs it (gamma/beta
  recomputed at every step, float32, eager, op backend "reference"), for comparisons.

Horizons longer than the trained one (``config.num_future``) are predicted in chunks: the last
``config.num_observed`` generated frames on the integer frame grid become the next context.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .checkpoint import load_pretrained
from .config import STDiffConfig, preset, preset_names
from .models import STDiff
from .models.stdiff import randn
from .models.unet import SpadeCache
from .prediction import Prediction, as_frames, future_times
from .sampling import SAMPLERS, make_sampler

__all__ = ["Predictor", "DEFAULT_STEPS", "plan_chunks", "forced_backend"]

#: Default number of denoising steps per sampler (DDPM-100 is the official test setting).
DEFAULT_STEPS = {"ddpm": 100, "ddim": 50, "dpmpp": 20, "dpmpp3m": 20}
_LOW_PRECISION = (torch.float16, torch.bfloat16)


@contextlib.contextmanager
def forced_backend(name: str) -> Iterator[None]:
    """Run ``stdiff.ops`` calls made with backend "auto" on backend ``name`` (via ``STDIFF_BACKEND``).

    Process-wide while active: do not predict from several threads with different backends.
    """
    old = os.environ.get("STDIFF_BACKEND")
    os.environ["STDIFF_BACKEND"] = name
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("STDIFF_BACKEND", None)
        else:
            os.environ["STDIFF_BACKEND"] = old


def _key(t: float) -> float:
    """Dictionary key of a time (times closer than 1e-6 frames are the same frame)."""
    return round(t, 6)


@dataclass(frozen=True)
class Chunk:
    """One autoregressive chunk: its context ends at ``t0``; it generates the frames at ``times``."""

    t0: float
    times: list[float]


def plan_chunks(times: Sequence[float], t_last: float, horizon: int, context_len: int) -> list[Chunk]:
    """Split increasing query ``times`` (> t_last) into chunks of at most ``horizon`` frame units.

    Chunk k covers (c_k, c_k + horizon] with c_0 = t_last and c_{k+1} = c_k + horizon. When more
    chunks follow, a chunk also generates the grid frames c_{k+1} - j (j < context_len) that the
    next chunk's context needs (the integer frame grid relative to t_last; at 1x frame rate
    these are already among the query times).
    """
    remaining = [float(t) for t in times]
    chunks: list[Chunk] = []
    c = float(t_last)
    while remaining:
        end = c + horizon
        inside = [t for t in remaining if t <= end + 1e-9]
        remaining = remaining[len(inside):]
        wanted = {_key(t): t for t in inside}
        if remaining:
            for j in range(context_len):
                if end - j > c + 1e-9:
                    wanted.setdefault(_key(end - j), end - j)
        chunks.append(Chunk(c, sorted(wanted.values())))
        c = end
    return chunks


class _Denoiser:
    """The UNet evaluation of one denoising step with a per-frame SPADE cache (fast path).

    ``set_motion(motion)`` computes gamma/beta for the frame; ``(x, t, cond) -> eps`` with
    x: (B, C, H, W) float32, cond: (B, C, H, W) the previous frame, eps float32.
    """

    def __init__(self, unet: torch.nn.Module, dtype: torch.dtype, compile: bool, channels_last: bool) -> None:
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

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        sample = torch.cat([x.to(self.dtype), cond], 1).contiguous(memory_format=self.memory_format)
        return self._forward(sample, t, *self._maps()).float()


class _GraphedDenoiser(_Denoiser):
    """CUDA only: the step's UNet evaluation (compiled or not) captured in a CUDA graph once per
    batch shape, then replayed; falls back to eager evaluation (with a warning) if capture fails.

    Static buffers hold the sample, the timestep and the SPADE maps: each frame copies its maps
    into them, each step copies x and t and replays the graph. The returned eps may be the
    graph's output buffer (valid until the next call; the samplers consume it at once).
    """

    def __init__(self, unet: torch.nn.Module, dtype: torch.dtype, compile: bool, channels_last: bool) -> None:
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
        sample = torch.cat([x.to(self.dtype), cond], 1).contiguous(memory_format=self.memory_format)
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


class Predictor:
    """Stochastic video prediction with a trained :class:`STDiff` (fast exact path by default).

    Args:
        model: an STDiff, used in eval mode; on the fast path its UNet weights are converted to
            channels_last in place (measured faster on CPU; cuDNN prefers it too).
        exact_reference: run the official algorithm (no SPADE cache, float32, eager, op backend
            "reference") instead of the fast path; same random numbers, same frames up to fp32 rounding.
        compile: ``torch.compile`` the UNet evaluation (fast path only).

    Observed frames are at times 0 .. To-1; predictions at any later times (frame units).
    """

    def __init__(self, model: STDiff, exact_reference: bool = False, compile: bool = False) -> None:
        if not isinstance(model, STDiff):
            raise TypeError(f"model must be an stdiff.models.STDiff, got {type(model).__name__}")
        if exact_reference and compile:
            raise ValueError("compile=True is for the fast path; the reference path (exact_reference=True) is eager")
        self.model = model.eval()
        self.exact_reference = bool(exact_reference)
        # the reference path keeps the official contiguous layout
        self.channels_last = not self.exact_reference
        model.unet.to(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        self.compile = bool(compile)
        self.dtype = model.unet.conv_in.weight.dtype
        self._denoiser: _Denoiser | None = None

    # ---- construction --------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, exact_reference: bool = False, compile: bool = False,
                        device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                        seed: int = 0) -> "Predictor":
        """Load a checkpoint folder (``config.json`` + ``model.safetensors``), or build a preset name
        (e.g. "tiny") with random weights drawn from ``seed`` (for tests and benchmarks)."""
        if isinstance(path, str) and path in preset_names() and not Path(path).exists():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = STDiff(preset(path))
        elif not Path(path).exists():
            raise FileNotFoundError(f"path {str(path)!r} is neither a checkpoint folder nor a preset name "
                                    f"({', '.join(preset_names())})")
        else:
            model = load_pretrained(path)  # ValueError saying what is missing when it is no checkpoint
        return cls(model, exact_reference=exact_reference, compile=compile).to(device, dtype)

    @property
    def config(self) -> STDiffConfig:
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.unet.conv_in.weight.device

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "Predictor":
        """Move to ``device``; ``dtype`` (float32, bfloat16, float16) sets the UNet's precision.

        The motion encoder, Conv-GRU and SDE stay in float32 (a small share of the work); the
        diffusion iterate x_t and the sampler arithmetic too. Returns self.
        """
        if dtype is not None:
            if dtype not in (torch.float32, *_LOW_PRECISION):
                raise ValueError(f"dtype must be torch.float32, torch.bfloat16 or torch.float16, got {dtype}")
            if self.exact_reference and dtype != torch.float32:
                raise ValueError("the reference path (exact_reference=True) runs in float32 only")
        if device is not None:
            self.model.to(device)
        if dtype is not None:
            self.model.unet.to(dtype)
            self.dtype = dtype
        self._denoiser = None
        return self

    # ---- prediction ----------------------------------------------------------------------------
    def predict(
        self,
        frames: object,
        times: Sequence[float] | None = None,
        num_frames: int | None = None,
        fps: float = 1,
        num_samples: int = 1,
        sampler: str = "ddpm",
        steps: int | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        return_motion: bool = False,
        progress: bool = True,
    ) -> Prediction:
        """Predict ``num_samples`` futures of each video.

        frames: (N, To, C, H, W) or (To, C, H, W), To >= 2, float in [0, 1] or uint8, torch or numpy.
        times: strictly increasing future times > To-1 (fractions allowed), or ``num_frames``
        frames at ``fps`` per original frame interval (default ``config.num_future`` at fps 1).
        sampler: "ddpm", "ddim", "dpmpp" (DPM-Solver++ 2M) or "dpmpp3m"; steps default
        :data:`DEFAULT_STEPS`. seed or generator (not both) make the result reproducible.
        Returns a :class:`Prediction` with frames (N, S, T, C, H, W) in [0, 1] on this device.
        """
        cfg = self.config
        observed = as_frames(frames, cfg.channels, cfg.image_size, "frames", rank=5, min_length=2)
        t_last = float(observed.shape[1] - 1)
        query = future_times(times, num_frames, fps, t_last, cfg.num_future)
        context = observed.to(self.device) * 2 - 1
        return self._predict(context, None, t_last, query, observed, num_samples, sampler, steps, seed, generator,
                             return_motion, progress)

    def stream(self):
        """A :class:`~stdiff.streaming.PredictionStream`: push observed frames one at a time
        (the Conv-GRU state is updated per frame) and ask for predictions at any point."""
        from .streaming import PredictionStream

        return PredictionStream(self)

    def context_mode(self) -> contextlib.AbstractContextManager:
        """Grad mode and op backend under which this predictor runs the model."""
        if self.exact_reference:
            stack = contextlib.ExitStack()
            stack.enter_context(torch.no_grad())
            stack.enter_context(forced_backend("reference"))
            return stack
        return torch.inference_mode()

    def _predict(self, context: Tensor, motion_state: Tensor | None, t_last: float, query: list[float],
                 observed: Tensor, num_samples: object, sampler: object, steps: object, seed: object,
                 generator: object, return_motion: bool, progress: bool) -> Prediction:
        """Shared by :meth:`predict` and streams. context: (N, L, C, H, W) in [-1, 1] on the device,
        the last L observed frames (at t_last-L+1 .. t_last); motion_state: the Conv-GRU state of
        the whole observed past, or None to encode ``context``."""
        s = _check_positive_int("num_samples", num_samples)
        steps = self._check_sampler(sampler, steps)
        generator = self._generator(seed, generator)
        with self.context_mode():
            frames, motion = self._autoregress(context, motion_state, t_last, query, s, sampler, steps, generator,
                                               bool(progress))
        return Prediction(frames=((frames + 1) / 2).clamp(0, 1).float(), times=query, observed=observed,
                          motion=motion if return_motion else None)

    def _check_sampler(self, sampler: object, steps: object) -> int:
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
        steps = DEFAULT_STEPS[sampler] if steps is None else steps
        limit = self.model.schedule.num_train_timesteps
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= limit:
            raise ValueError(f"steps must be an int in [1, {limit}], got {steps!r}")
        return steps

    def _generator(self, seed: object, generator: object) -> torch.Generator | None:
        if seed is not None and generator is not None:
            raise ValueError("give either seed or generator, not both")
        if generator is not None:
            if not isinstance(generator, torch.Generator):
                raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
            return generator
        if seed is None:
            return None
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise ValueError(f"seed must be an int in [0, 2**63), got {seed!r}")
        return torch.Generator(device=self.device).manual_seed(seed)

    def _autoregress(self, context: Tensor, motion_state: Tensor | None, t_last: float, query: list[float],
                     s: int, sampler: str, steps: int, generator: torch.Generator | None, progress: bool
                     ) -> tuple[Tensor, Tensor]:
        """All query frames, chunk by chunk: frames (N, S, T, C, H, W) and motion (N, S, T, F, h, w)."""
        cfg = self.config
        n, length = context.shape[:2]
        chunks = plan_chunks(query, t_last, cfg.num_future, cfg.num_observed)
        history = {_key(t_last - length + 1 + j): context[:, j] for j in range(length)}
        position = {_key(t): i for i, t in enumerate(query)}
        frames: list[Tensor | None] = [None] * len(query)
        motion: list[Tensor | None] = [None] * len(query)
        from tqdm.auto import tqdm

        with tqdm(total=sum(len(c.times) for c in chunks), desc="predict", unit="frame", disable=not progress,
                  leave=False) as bar:
            for k, chunk in enumerate(chunks):
                if k == 0:
                    ctx, state, samples = context, motion_state, s
                else:
                    grid = [history[_key(chunk.t0 - j)] for j in reversed(range(cfg.num_observed))
                            if _key(chunk.t0 - j) in history]
                    ctx = torch.stack([f if f.shape[0] == n * s else f.repeat_interleave(s, 0) for f in grid], 1)
                    state, samples = None, 1
                out, mot = self._chunk(ctx, state, chunk, samples, sampler, steps, generator, bar)
                out = out.flatten(0, 1)                                   # (N*S, Tc, C, H, W)
                for j, t in enumerate(chunk.times):
                    history[_key(t)] = out[:, j]
                    if _key(t) in position:
                        frames[position[_key(t)]] = out[:, j]
                        motion[position[_key(t)]] = mot[j]
        return (torch.stack(frames, 1).unflatten(0, (n, s)),
                torch.stack(motion, 1).unflatten(0, (n, s)))

    def _chunk(self, context: Tensor, motion_state: Tensor | None, chunk: Chunk, s: int, sampler: str,
               steps: int, generator: torch.Generator | None, bar) -> tuple[Tensor, Tensor]:
        """One chunk: frames (B, s, Tc, C, H, W) in [-1, 1] and motion (Tc, B*s, F, h, w)."""
        if self.exact_reference:
            frames, motion = self.model.sample(context, chunk.times, s, sampler, steps, generator, cache_spade=False,
                                               t0=chunk.t0, motion_state=motion_state, return_motion=True,
                                               progress=lambda it: _ticking(it, bar))
            return frames, motion.flatten(0, 1).transpose(0, 1)
        return self._fast_chunk(context, motion_state, chunk, s, sampler, steps, generator, bar)

    def _fast_chunk(self, context: Tensor, motion_state: Tensor | None, chunk: Chunk, s: int, sampler: str,
                    steps: int, generator: torch.Generator | None, bar) -> tuple[Tensor, Tensor]:
        """The fast path of :meth:`STDiff.sample` (same random numbers in the same order)."""
        model = self.model
        m = model.encode_context(context) if motion_state is None else motion_state
        m = m.repeat_interleave(s, dim=0)
        motion = model.future_motion(m, chunk.t0, chunk.times, generator=generator)  # (Tc, B*s, F, h, w)
        prev = context[:, -1].repeat_interleave(s, dim=0)
        scheduler = make_sampler(sampler, steps, model.schedule)
        denoiser = self._get_denoiser()
        timesteps = scheduler.timesteps.to(self.device)
        frames = []
        for i in range(len(chunk.times)):
            denoiser.set_motion(motion[i])
            x = randn(prev.shape, generator, prev)
            scheduler.reset()
            cond = prev.clamp(-1, 1).to(self.dtype)
            for j, t in enumerate(scheduler.timesteps):
                eps = denoiser(x, timesteps[j], cond)
                x = scheduler.step(eps, t, x, generator=generator)
            frames.append(x)
            prev = x
            bar.update(1)
        out = torch.stack(frames, 1).clamp(-1, 1).unflatten(0, (context.shape[0], s))
        return out, motion

    def _get_denoiser(self) -> _Denoiser:
        if self._denoiser is None:
            kind = _GraphedDenoiser if self.device.type == "cuda" else _Denoiser
            self._denoiser = kind(self.model.unet, self.dtype, self.compile, self.channels_last)
        return self._denoiser


def _ticking(items: Iterable[int], bar) -> Iterator[int]:
    """Yield ``items``, advancing the progress bar after each one is processed."""
    for item in items:
        yield item
        bar.update(1)


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value

