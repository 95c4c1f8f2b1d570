"""The predictor: ``Predictor.from_pretrained(path).predict(frames, times=...)``.

The Predictor validates a request, bounds its work (:mod:`stdiff.planning`) and runs it through
the prediction pipeline (:func:`stdiff.pipeline.autoregress`: context -> Conv-GRU motion state ->
SDE -> the sampling loop, chunk by chunk). Two denoisers compute the same frames from the same
random numbers:

- the fast path (default): SPADE's gamma/beta computed once per predicted frame, all videos and
  samples in one batch (N*S), fused ops (backend "auto"), ``torch.inference_mode``, the UNet
  optionally in bfloat16/float16, ``torch.compile`` optional, and on CUDA the UNet evaluation of a
  denoising step captured once per batch shape in a CUDA graph and replayed;
- ``exact_reference=True``: the official algorithm (gamma/beta recomputed at every step, float32,
  eager, the model's op backend set to "reference"), for comparisons.

Random numbers come from :class:`~stdiff.noise.NoiseStreams`, one stream per (video, sample).
One Predictor may be shared by threads (see :class:`Predictor`).
"""
from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from .checkpoint import load_pretrained
from .checks import integer
from .config import STDiffConfig, preset, preset_names
from .dtypes import resolve_dtype
from .locks import ReadWriteLock
from .models import STDiff
from .noise import NoiseStreams
from .pipeline import FrameDenoiser, autoregress, make_denoiser
from .planning import Chunk, WorkLimits, check_work
from .prediction import Prediction, as_frames, future_times
from .sampling import DEFAULT_STEPS, make_sampler
from .validation import check_motion_state

__all__ = ["DEFAULT_STEPS", "Predictor", "WorkLimits"]



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

    Threads: one Predictor may be shared. Calls keep their state (SPADE maps, iterates, noise) to
    themselves, so a call's frames for a given ``seed=`` do not depend on what other threads do;
    concurrent :meth:`predict` calls and streams run side by side (on CUDA their UNet steps take
    turns at the shared CUDA graphs), and :meth:`to` waits for running calls to finish (and they
    for it).
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
        self._lock = ReadWriteLock()  # predict/stream calls share it; to() holds it alone
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
        with self._lock.exclusive():
            if device is not None:
                self.model.to(device)
            if resolved != self.dtype:
                self._cast_unet(resolved)
            self.dtype, self.dtype_request = resolved, request
            self._denoiser = self._make_denoiser()
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
        with self._running():
            cfg = self.config
            observed = as_frames(frames, cfg.channels, cfg.image_size, "frames", rank=5,
                                 min_length=2 if motion_state is None else 1, device=self.device)
            n, length = observed.shape[:2]
            if t_last is None:
                t_last = float(length - 1)
            elif isinstance(t_last, bool) or not isinstance(t_last, (int, float)) or not length - 1 <= t_last < 2**53:
                raise ValueError(f"t_last must be a number >= len(frames) - 1 = {length - 1}, got {t_last!r}")
            query = future_times(times, num_frames, fps, float(t_last), cfg.num_future, self.limits.max_frames)
            s = integer("num_samples", num_samples, 1)
            scheduler = make_sampler(sampler, steps, self.model.schedule)
            state = self._check_state(motion_state, n)
            chunks = self._plan(query, float(t_last), n * s)
            noise = self._noise(seed, generator, n, s)
            from tqdm.auto import tqdm

            with self._mode(), tqdm(total=sum(len(c.times) for c in chunks), desc="predict", unit="frame",
                                    disable=not progress, leave=False) as bar:
                out, motion = autoregress(self.model, observed, chunks, query, scheduler, self._denoiser, noise, s,
                                          motion_state=state, on_frame=lambda: bar.update(1))
        # cloned outside inference mode: the caller may change the frames in place
        return Prediction(frames=out.unflatten(0, (n, s)).clone(), times=query, observed=observed,
                          motion=motion.unflatten(0, (n, s)) if return_motion else None)

    def stream(self):
        """A :class:`~stdiff.streaming.PredictionStream`: push observed frames one at a time
        (the Conv-GRU state is updated per frame) and ask for predictions at any point."""
        from .streaming import PredictionStream

        return PredictionStream(self)

    def _running(self) -> contextlib.AbstractContextManager:
        """Hold the model as it is (no :meth:`to` meanwhile; other calls may run): every use of
        ``self.model``, ``self.device`` and ``self._denoiser`` happens inside. Not reentrant."""
        return self._lock.shared()

    def _mode(self) -> contextlib.AbstractContextManager:
        """Grad mode in which this predictor runs the model."""
        return torch.no_grad() if self.exact_reference else torch.inference_mode()

    def _make_denoiser(self) -> FrameDenoiser:
        return make_denoiser(self.model, self.exact_reference, self.compile, self.channels_last)

    def _plan(self, times: list[float], t_last: float, rows: int) -> list[Chunk]:
        """The chunks of a request for ``rows`` trajectories, refused above :attr:`limits`."""
        cfg = self.config
        return check_work(times, t_last, cfg.num_future, cfg.num_observed, rows, cfg.channels * cfg.image_size**2,
                          cfg.motion_channels * cfg.motion_size**2, self.limits)

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
        seed = integer("seed", seed, 0, 2**63 - 1)
        return NoiseStreams.for_videos(seed, n, s, self.device)
