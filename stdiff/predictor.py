"""The predictor: ``Predictor.from_pretrained(path).predict(frames, times=...)``.

Data flow: frames -> :meth:`STDiff.generate` per chunk (context -> Conv-GRU motion state -> SDE ->
the sampling loop :func:`~stdiff.sampling.denoise_frames`, which steps the scheduler with eps from a
denoiser). Two denoisers compute the same frames from the same random numbers:

- the fast path (default): SPADE's gamma/beta computed once per predicted frame, all videos and
  samples in one batch (N*S), fused ops (backend "auto"), ``torch.inference_mode``, the UNet
  optionally in bfloat16/float16, ``torch.compile`` optional, and on CUDA the UNet evaluation of a
  denoising step captured once in a CUDA graph and replayed;
- ``exact_reference=True``: the official algorithm (gamma/beta recomputed at every step, float32,
  eager, the model's op backend set to "reference"), for comparisons.

Random numbers come from :class:`~stdiff.noise.NoiseStreams`, one stream per (video, sample).
"""
from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from .checkpoint import load_pretrained
from .config import STDiffConfig, preset, preset_names
from .dtypes import resolve_dtype
from .models import STDiff
from .models.denoisers import CachedDenoiser, GraphedDenoiser, StepwiseDenoiser
from .noise import NoiseStreams
from .planning import Chunk, WorkLimits, check_work
from .prediction import Prediction, as_frames, future_times
from .sampling import SAMPLERS, FrameDenoiser, make_sampler
from .sampling.loop import frame_key
from .validation import check_int, check_motion_state

__all__ = ["DEFAULT_STEPS", "Predictor", "WorkLimits"]

#: Default number of denoising steps per sampler (DDPM-100 is the official test setting).
DEFAULT_STEPS = {"ddpm": 100, "ddim": 50, "dpmpp": 20, "dpmpp3m": 20}


class Predictor:
    """Stochastic video prediction with a trained :class:`STDiff` (fast exact path by default).

    Args:
        model: an STDiff. The predictor works on its own copy (eval mode, its op backend, on the fast
            path its UNet in channels_last: measured faster on CPU, and cuDNN prefers it), so the
            caller's module is never changed and later changes to it are not seen.
        exact_reference: run the official algorithm (no SPADE cache, float32, eager, op backend
            "reference") instead of the fast path; same random numbers, same frames up to fp32 rounding.
        compile: ``torch.compile`` the UNet evaluation (fast path only).
        dtype: the UNet's precision: "auto" (default; see :mod:`stdiff.dtypes`: bfloat16 where the
            device computes it natively, else float32, float32 on the reference path, chosen again
            at each :meth:`to` a new device), float32, bfloat16 or float16 (torch dtype or name).

    ``limits`` (a :class:`WorkLimits`, attribute): requests above it are refused before any work.
    Observed frames are at times 0 .. To-1; predictions at any later times (frame units).
    """

    def __init__(self, model: STDiff, exact_reference: bool = False, compile: bool = False,
                 dtype: str | torch.dtype = "auto") -> None:
        if not isinstance(model, STDiff):
            raise TypeError(f"model must be an stdiff.models.STDiff, got {type(model).__name__}")
        if exact_reference and compile:
            raise ValueError("compile=True is for the fast path; the reference path (exact_reference=True) is eager")
        self.model = copy.deepcopy(model).eval()
        self.exact_reference = bool(exact_reference)
        if self.exact_reference:
            self.model.set_backend("reference")
        # the reference path keeps the official contiguous layout
        self.channels_last = not self.exact_reference
        self.model.unet.to(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        self.compile = bool(compile)
        self.dtype = self.model.unet.conv_in.weight.dtype
        self.dtype_request: str | torch.dtype = dtype
        self._float32_unet: dict[str, Tensor] | None = None  # the UNet's weights while it runs in low precision
        self.limits = WorkLimits()
        self._denoiser: FrameDenoiser | None = None
        self.to(dtype=dtype)

    # ---- construction --------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, exact_reference: bool = False, compile: bool = False,
                        device: str | torch.device | None = None, dtype: str | torch.dtype = "auto",
                        seed: int = 0, trust_unverified: bool = False) -> Predictor:
        """Load a checkpoint folder (``config.json`` + ``model.safetensors``), or build a preset name
        (e.g. "tiny") with random weights drawn from ``seed`` (for tests and benchmarks).
        trust_unverified: load a folder whose config.json records no checksums (see :mod:`stdiff.checkpoint`)."""
        if isinstance(path, str) and path in preset_names() and not Path(path).exists():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = STDiff(preset(path))
        elif not Path(path).exists():
            raise FileNotFoundError(f"path {str(path)!r} is neither a checkpoint folder nor a preset name "
                                    f"({', '.join(preset_names())})")
        else:
            model = load_pretrained(path, trust_unverified=trust_unverified)  # ValueError saying what is missing when it is no checkpoint
        return cls(model, exact_reference=exact_reference, compile=compile, dtype=dtype).to(device)

    @property
    def config(self) -> STDiffConfig:
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.unet.conv_in.weight.device

    def to(self, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None) -> Predictor:
        """Move to ``device``; ``dtype`` ("auto", float32, bfloat16, float16) sets the UNet's precision
        (None: keep the current choice, "auto" chosen again for the new device).

        The motion encoder, Conv-GRU and SDE stay in float32 (a small share of the work); the
        diffusion iterate x_t and the sampler arithmetic too. Returns self.
        """
        request = self.dtype_request if dtype is None else dtype
        target = torch.device(device) if device is not None else self.device
        resolved = torch.float32 if self.exact_reference and request == "auto" else resolve_dtype(request, target)
        if self.exact_reference and resolved != torch.float32:
            raise ValueError("the reference path (exact_reference=True) runs in float32 only")
        if device is not None:
            self.model.to(device)
        if resolved != self.dtype:
            self._cast_unet(resolved)
        self.dtype, self.dtype_request = resolved, request
        self._denoiser = None
        return self

    def _cast_unet(self, dtype: torch.dtype) -> None:
        """Cast the UNet to ``dtype``, always from its float32 weights (kept on the CPU while it runs in
        low precision), so that switching precision back and forth never rounds the weights."""
        unet = self.model.unet
        if self.dtype == torch.float32:
            self._float32_unet = {k: v.detach().to("cpu", copy=True) for k, v in unet.state_dict().items()}
        elif self._float32_unet is not None:
            unet.to(torch.float32).load_state_dict(self._float32_unet)
            if dtype == torch.float32:
                self._float32_unet = None
        unet.to(dtype)

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
        *,
        motion_state: Tensor | None = None,
        t_last: float | None = None,
    ) -> Prediction:
        """Predict ``num_samples`` futures of each video.

        frames: (N, To, C, H, W) or (To, C, H, W), To >= 2, float in [0, 1] or uint8, torch or numpy.
        times: strictly increasing future times > To-1 (fractions allowed, at least 1e-6 apart), or
        ``num_frames`` frames at ``fps`` per original frame interval (default ``config.num_future`` at fps 1).
        sampler: "ddpm", "ddim", "dpmpp" (DPM-Solver++ 2M) or "dpmpp3m"; steps default :data:`DEFAULT_STEPS`.
        seed: each (video v, sample s) gets its own noise stream from (seed, v, s), so the first 4 of 8
        samples are the samples of a 4-sample call and a video's samples do not depend on the other
        videos; generator (not both): the streams are seeded from one draw of it (reproducible, not
        prefix-stable); neither: from torch's global RNG. progress: show a progress bar.
        motion_state: continue from a Conv-GRU state (N, F, h, w) of the whole observed past (e.g.
        :meth:`stream`); ``frames`` are then its last frames (at least 1), the last at time ``t_last``
        (default To-1), and ``times`` are after ``t_last``.
        Returns a :class:`Prediction` with frames (N, S, T, C, H, W) in [0, 1] on this device.
        """
        cfg = self.config
        observed = as_frames(frames, cfg.channels, cfg.image_size, "frames", rank=5,
                             min_length=2 if motion_state is None else 1)
        n, length = observed.shape[:2]
        if t_last is None:
            t_last = float(length - 1)
        elif isinstance(t_last, bool) or not isinstance(t_last, (int, float)) or not length - 1 <= t_last < 2**53:
            raise ValueError(f"t_last must be a number >= len(frames) - 1 = {length - 1}, got {t_last!r}")
        query = future_times(times, num_frames, fps, float(t_last), cfg.num_future, self.limits.max_frames)
        s = _check_positive_int("num_samples", num_samples)
        steps = self._check_sampler(sampler, steps)
        state = self._check_state(motion_state, n)
        chunks = check_work(query, float(t_last), cfg.num_future, cfg.num_observed, n * s,
                            cfg.channels * cfg.image_size**2, cfg.motion_channels * cfg.motion_size**2, self.limits)
        noise = self._noise(seed, generator, n, s)
        context = observed.to(self.device) * 2 - 1
        from tqdm.auto import tqdm

        with self._mode(), tqdm(total=sum(len(c.times) for c in chunks), desc="predict", unit="frame",
                                disable=not progress, leave=False) as bar:
            out, motion = self._autoregress(context, state, float(t_last), query, chunks, s, sampler, steps, noise,
                                            lambda: bar.update(1))
        return Prediction(frames=((out + 1) / 2).clamp(0, 1).float(), times=query, observed=observed,
                          motion=motion if return_motion else None)

    def stream(self):
        """A :class:`~stdiff.streaming.PredictionStream`: push observed frames one at a time
        (the Conv-GRU state is updated per frame) and ask for predictions at any point."""
        from .streaming import PredictionStream

        return PredictionStream(self)

    def _mode(self) -> contextlib.AbstractContextManager:
        """Grad mode in which this predictor runs the model."""
        return torch.no_grad() if self.exact_reference else torch.inference_mode()

    def _check_sampler(self, sampler: object, steps: object) -> int:
        if not isinstance(sampler, str) or sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {sorted(SAMPLERS)} (a str), got {sampler!r}")
        steps = DEFAULT_STEPS[sampler] if steps is None else steps
        limit = self.model.schedule.num_train_timesteps
        return check_int("steps", steps, 1, limit)

    def _check_state(self, state: object, n: int) -> Tensor | None:
        if state is None:
            return None
        cfg = self.config
        return check_motion_state(state, (n, cfg.motion_channels, cfg.motion_size, cfg.motion_size), self.device)

    def _noise(self, seed: object, generator: object, n: int, s: int) -> NoiseStreams:
        if seed is not None and generator is not None:
            raise ValueError("give either seed or generator, not both")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if seed is None:
            return NoiseStreams.from_generator(generator, n * s, self.device)
        seed = check_int("seed", seed, 0, 2**63 - 1)
        return NoiseStreams.for_videos(seed, n, s, self.device)

    def _autoregress(self, context: Tensor, motion_state: Tensor | None, t_last: float, query: list[float],
                     chunks: list[Chunk], num_samples: int, sampler: str, steps: int, noise: NoiseStreams,
                     on_frame: Callable[[], None]) -> tuple[Tensor, Tensor]:
        """All query frames, chunk by chunk: frames (N, S, T, C, H, W) and motion (N, S, T, F, h, w).

        Chunk 0 continues the N videos' context S times; later chunks continue each of the N*S
        trajectories once, from its own last ``num_observed`` grid frames.
        """
        cfg = self.config
        n, length = context.shape[:2]
        generated = {frame_key(t_last - length + 1 + j): context[:, j].repeat_interleave(num_samples, 0)
                     for j in range(length)}                              # time -> (N*S, C, H, W)
        position = {frame_key(t): i for i, t in enumerate(query)}
        frames: list[Tensor | None] = [None] * len(query)
        motion: list[Tensor | None] = [None] * len(query)
        for k, chunk in enumerate(chunks):
            if k == 0:
                chunk_context, state, repeats = context, motion_state, num_samples
            else:
                grid = [frame_key(chunk.t0 - j) for j in reversed(range(cfg.num_observed))]
                chunk_context = torch.stack([generated[key] for key in grid if key in generated], 1)
                state, repeats = None, 1
            scheduler = make_sampler(sampler, steps, self.model.schedule)
            chunk_frames, chunk_motion = self.model.generate(
                chunk_context, chunk.times, repeats, scheduler, self._get_denoiser(), noise, t0=chunk.t0,
                motion_state=state, on_frame=on_frame)
            chunk_frames = chunk_frames.flatten(0, 1)                      # (N*S, Tc, C, H, W)
            for j, t in enumerate(chunk.times):
                generated[frame_key(t)] = chunk_frames[:, j]
                if frame_key(t) in position:
                    frames[position[frame_key(t)]] = chunk_frames[:, j]
                    motion[position[frame_key(t)]] = chunk_motion[j]
        return (torch.stack(frames, 1).unflatten(0, (n, num_samples)),
                torch.stack(motion, 1).unflatten(0, (n, num_samples)))

    def _get_denoiser(self) -> FrameDenoiser:
        if self._denoiser is None:
            if self.exact_reference:
                self._denoiser = StepwiseDenoiser(self.model.unet)
            else:
                kind = GraphedDenoiser if self.device.type == "cuda" else CachedDenoiser
                self._denoiser = kind(self.model.unet, self.dtype, self.compile, self.channels_last)
        return self._denoiser


def _check_positive_int(name: str, value: object) -> int:
    return check_int(name, value, 1)
