"""The prediction pipeline: the one place that runs an STDiff to predict frames.

The split follows diffusers. The model computes (:class:`~stdiff.models.STDiff`: the motion state
of a context, the motion at the query times, each frame's conditioning; a *denoiser* from
:mod:`stdiff.models.denoisers` computes eps), a *scheduler* steps
(:class:`~stdiff.sampling.Sampler`), and this module owns the rest: the loops (autoregressive
chunks, frames, denoising steps), every random number (:class:`~stdiff.noise.NoiseStreams`), and
the conversion between public frames in [0, 1] and the model's [-1, 1]. Every caller predicts
through it: :class:`~stdiff.Predictor` (so streaming and ``stdiff evaluate``), the official
protocol, training previews and quickeval.

Functions taking ``context``/``observed`` frames take them in [0, 1] and return frames in [0, 1];
:func:`generate` and :func:`denoise_frames` are the model-range building blocks ([-1, 1]).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor

from .models import STDiff
from .models.denoisers import CachedDenoiser, GraphedDenoiser, StepwiseDenoiser
from .noise import NoiseStreams
from .planning import Chunk
from .prediction import frame_key
from .sampling import Sampler, make_sampler

__all__ = ["DIFFUSION_NOISE", "FrameDenoiser", "SampleOutput", "autoregress", "autoregress_from_chosen_first",
           "denoise_frames", "encode_context", "generate", "make_denoiser", "sample", "to_model_range",
           "to_unit_range"]

#: Key namespace of the diffusion noise in :class:`NoiseStreams` (0 and 1 belong to the SDE).
DIFFUSION_NOISE = 2
#: Step index of the initial x_T in a diffusion-noise key.
INITIAL = -1


class FrameDenoiser(Protocol):
    """The model's side of the loop. It keeps no per-call state, so one denoiser serves concurrent calls."""

    def condition(self, motion: Tensor) -> Any:
        """The conditioning of one frame from its SPADE input (B, F, h, w): what :meth:`__call__` takes."""

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor, conditioning: Any) -> Tensor:
        """eps (B, C, H, W) float32 for x_t (B, C, H, W), timestep t (0-d long tensor on x's device), the
        conditioning frame ``cond`` (B, C, H, W) in [-1, 1] and the frame's ``conditioning``."""


class SampleOutput(NamedTuple):
    """frames (N, S, T, C, H, W) in [0, 1]; motion (N, S, T, F, h, w): the motion states at the times."""

    frames: Tensor
    motion: Tensor


# ---- ranges ---------------------------------------------------------------------------------------
def to_model_range(frames: Tensor) -> Tensor:
    """Public frames in [0, 1] -> the model's [-1, 1]."""
    return frames * 2 - 1


def to_unit_range(frames: Tensor) -> Tensor:
    """The model's frames in [-1, 1] -> [0, 1] (clamped)."""
    return ((frames + 1) / 2).clamp(0, 1)


# ---- denoisers ------------------------------------------------------------------------------------
def make_denoiser(model: STDiff, exact: bool = False, compile: bool = False, channels_last: bool = False,
                  cuda_graph: bool = True) -> FrameDenoiser:
    """The denoiser of ``model``: ``exact`` the official algorithm (SPADE recomputed at every step),
    else SPADE's maps once per frame, the UNet in its own dtype (``channels_last``: its weights'
    layout; ``compile``: ``torch.compile``-d), on CUDA replayed as a CUDA graph when ``cuda_graph``."""
    if exact:
        return StepwiseDenoiser(model.unet)
    weight = model.unet.conv_in.weight
    kind = GraphedDenoiser if cuda_graph and weight.device.type == "cuda" else CachedDenoiser
    return kind(model.unet, weight.dtype, compile, channels_last)


# ---- the loops ------------------------------------------------------------------------------------
def _check_rows(noise: NoiseStreams, rows: int) -> None:
    if len(noise) != rows:
        raise ValueError(f"noise must have one stream per batch row, videos x samples = {rows}, got {len(noise)}")


def denoise_frames(denoiser: FrameDenoiser, scheduler: Sampler, condition: Tensor, prev: Tensor,
                   noise: NoiseStreams, times: Sequence[float], sources: Sequence[int] | None = None,
                   noise_times: Sequence[float] | None = None, on_frame: Callable[[], None] | None = None,
                   from_target: Callable[[Tensor, Tensor], Tensor] | None = None) -> Tensor:
    """Generate the frames at ``times`` one after the other, each conditioned on an earlier one.

    condition: (T, B, F', h, w) the SPADE input of each frame (the motion states at ``times``, or the
    model's ``frame_condition`` of them); prev: (B, C, H, W) the context frame before the first, in
    [-1, 1]; sources: frame i is conditioned on ``prev`` when ``sources[i] == -1``, else on generated
    frame ``sources[i] < i`` (default: on the frame just before it); noise: B rows. Frame i draws its
    noise under the name n_i = ``frame_key(noise_times[i])`` (default its own time t_i): it starts from
    x_T = ``noise.randn((2, n_i, -1), ...)`` and its denoising step j adds ``noise.randn((2, n_i, j), ...)``
    when the sampler is stochastic there. ``on_frame`` is called after each frame. ``from_target``
    turns the generated clean sample and the conditioning frame into the frame (the model's
    :meth:`~stdiff.models.STDiff.from_target`; default: the sample is the frame). Returns
    (B, T, C, H, W) in [-1, 1].
    """
    _check_rows(noise, prev.shape[0])
    sources = list(range(-1, len(times) - 1)) if sources is None else list(sources)
    noise_times = list(times) if noise_times is None else list(noise_times)
    if len(noise_times) != len(times):
        raise ValueError(f"noise_times must name the noise of each of the {len(times)} frames, got {len(noise_times)}")
    if len(sources) != len(times) or any(not -1 <= j < i for i, j in enumerate(sources)):
        raise ValueError(f"sources must give each of the {len(times)} frames -1 or an earlier frame's index, "
                         f"got {sources}")
    shape = tuple(prev.shape[1:])
    timesteps = scheduler.timesteps.to(prev.device)
    frames: list[Tensor] = []
    for i in range(len(times)):
        frame = frame_key(noise_times[i])
        conditioning = denoiser.condition(condition[i])
        x = noise.randn((DIFFUSION_NOISE, frame, INITIAL), shape).to(prev.device)
        scheduler.reset()
        cond = (prev if sources[i] < 0 else frames[sources[i]]).clamp(-1, 1)
        for j in range(len(timesteps)):
            with torch.profiler.record_function("stdiff.unet"):
                eps = denoiser(x, timesteps[j], cond, conditioning)
            z = noise.randn((DIFFUSION_NOISE, frame, j), shape).to(prev.device) if scheduler.needs_noise_at(j) else None
            x = scheduler.step_at(j, eps, x, z).prev_sample
        frames.append(x.clamp(-1, 1) if from_target is None else from_target(x, cond))
        if on_frame is not None:
            on_frame()
    return torch.stack(frames, 1)


def generate(model: STDiff, context: Tensor, times: Sequence[float], scheduler: Sampler, denoiser: FrameDenoiser,
             noise: NoiseStreams, num_samples: int = 1, t0: float | None = None, motion_state: Tensor | None = None,
             on_frame: Callable[[], None] | None = None) -> tuple[Tensor, Tensor]:
    """One chunk: context -> motion state -> SDE -> :func:`denoise_frames`, in the model's range.

    context: (N, L, C, H, W) in [-1, 1], its last frame at ``t0`` (default L - 1) conditions the
    first frame; motion_state: the Conv-GRU state (N, F, h, w) at t0 (None: encode ``context``);
    noise: N * num_samples rows (video-major), feeding the SDE and the diffusion. Each frame is
    conditioned on the frame ``model.conditioning_sources`` names, through ``model.frame_condition``
    of its motion and time gap, and draws the diffusion noise of the time ``model.noise_times`` names.
    Returns frames (N*S, T, C, H, W) in [-1, 1] and motion (T, N*S, F, h, w).
    """
    rows = context.shape[0] * num_samples
    _check_rows(noise, rows)
    t0 = float(context.shape[1] - 1) if t0 is None else float(t0)
    m = model.encode_context(context) if motion_state is None else motion_state
    with torch.profiler.record_function("stdiff.sde"):
        motion = model.future_motion(m.repeat_interleave(num_samples, dim=0), t0, times, noise=noise)
    prev = context[:, -1].repeat_interleave(num_samples, dim=0)
    sources = model.conditioning_sources(t0, times)
    gaps = [float(t) - (t0 if j < 0 else float(times[j])) for t, j in zip(times, sources)]
    condition = torch.stack([model.frame_condition(motion[i], motion.new_full((rows,), g))
                             for i, g in enumerate(gaps)]) if model.gap_aware else motion
    frames = denoise_frames(denoiser, scheduler, condition, prev, noise, times, sources,
                            model.noise_times(t0, times), on_frame, model.from_target)
    return frames, motion


def autoregress(model: STDiff, context: Tensor, chunks: Sequence[Chunk], query: Sequence[float], scheduler: Sampler,
                denoiser: FrameDenoiser, noise: NoiseStreams, num_samples: int = 1,
                motion_state: Tensor | None = None, on_frame: Callable[[], None] | None = None
                ) -> tuple[Tensor, Tensor]:
    """All ``query`` frames, chunk by chunk (``stdiff.planning.plan_chunks``): the prediction.

    context: (N, L, C, H, W) in [0, 1], consecutive frames, the last at ``chunks[0].t0``;
    motion_state: the Conv-GRU state (N, F, h, w) at ``chunks[0].t0`` (None: encode the context);
    noise: N * num_samples rows. Chunk 0 continues the N videos S times; later chunks continue each
    of the N*S trajectories once, from its own last ``config.num_observed`` frames of the integer
    grid. Returns frames (N*S, T, C, H, W) in [0, 1] and motion (N*S, T, F, h, w) at ``query``
    (rows video-major).
    """
    length = context.shape[1]
    times = [chunks[0].t0 - length + 1 + j for j in range(length)]
    frames, motion = _autoregress(model, to_model_range(context), times, chunks, query, scheduler, denoiser, noise,
                                  num_samples, motion_state, on_frame)
    return to_unit_range(frames), motion


def autoregress_from_chosen_first(model: STDiff, context: Tensor, chunks: Sequence[Chunk], query: Sequence[float],
                                  scheduler: Sampler, denoiser: FrameDenoiser, candidate_noise: NoiseStreams,
                                  noise: NoiseStreams, num_candidates: int, num_samples: int,
                                  choose: Callable[[Tensor], Tensor]) -> Tensor:
    """As :func:`autoregress`, with the first query frame chosen among candidates (the official protocol).

    Draws ``num_candidates`` K first frames per video (``candidate_noise``: N*K rows), each with its
    own motion state; ``choose`` maps them, (N, K, C, H, W) in [0, 1], to one index per video (N,);
    then ``num_samples`` S trajectories (``noise``: N*S rows) continue from the chosen frame, the SDE
    from its motion state. Returns frames (N*S, T, C, H, W) in [0, 1] at ``query``; the first is the
    chosen frame in every trajectory.
    """
    n, length = context.shape[:2]
    x, first = to_model_range(context), query[0]
    cand, cand_motion = generate(model, x, [first], scheduler, denoiser, candidate_noise, num_candidates,
                                 chunks[0].t0)
    cand, cand_motion = cand[:, 0].unflatten(0, (n, num_candidates)), cand_motion[0].unflatten(0, (n, num_candidates))
    rows = torch.arange(n, device=cand.device)
    best = choose(to_unit_range(cand)).to(cand.device)
    frame0, motion0 = cand[rows, best], cand_motion[rows, best]                # (N, C, H, W), (N, F, h, w)
    out = frame0.repeat_interleave(num_samples, 0)[:, None]
    rest = [c for c in [Chunk(first, chunks[0].times[1:]), *chunks[1:]] if c.times]
    if len(query) > 1:
        times = [chunks[0].t0 - length + 1 + j for j in range(length)] + [first]
        later, _ = _autoregress(model, torch.cat([x, frame0[:, None]], 1), times, rest, query[1:], scheduler,
                                denoiser, noise, num_samples, motion0)
        out = torch.cat([out, later], 1)
    return to_unit_range(out)


def _autoregress(model: STDiff, x: Tensor, context_times: Sequence[float], chunks: Sequence[Chunk],
                 query: Sequence[float], scheduler: Sampler, denoiser: FrameDenoiser, noise: NoiseStreams,
                 num_samples: int, motion_state: Tensor | None, on_frame: Callable[[], None] | None = None
                 ) -> tuple[Tensor, Tensor]:
    """:func:`autoregress` in the model's range: x (N, L, C, H, W) in [-1, 1] at ``context_times``."""
    generated = {frame_key(t): x[:, j].repeat_interleave(num_samples, 0)
                 for j, t in enumerate(context_times)}                      # time -> (N*S, C, H, W)
    position = {frame_key(t): i for i, t in enumerate(query)}
    frames: list[Tensor | None] = [None] * len(query)
    motion: list[Tensor | None] = [None] * len(query)
    for k, chunk in enumerate(chunks):
        if k == 0:
            chunk_context, state, repeats = x, motion_state, num_samples
        else:
            grid = [frame_key(chunk.t0 - j) for j in reversed(range(model.config.num_observed))]
            chunk_context = torch.stack([generated[key] for key in grid if key in generated], 1)
            state, repeats = None, 1
        chunk_frames, chunk_motion = generate(model, chunk_context, chunk.times, scheduler, denoiser, noise,
                                              repeats, chunk.t0, state, on_frame)
        for j, t in enumerate(chunk.times):
            key = frame_key(t)
            generated[key] = chunk_frames[:, j]
            if key in position:
                frames[position[key]] = chunk_frames[:, j]
                motion[position[key]] = chunk_motion[j]
    return torch.stack(frames, 1), torch.stack(motion, 1)


def encode_context(model: STDiff, frames: Tensor, state: Tensor | None = None) -> Tensor:
    """The Conv-GRU motion state after ``frames`` (N, L, C, H, W) in [0, 1], L >= 2 (see
    :meth:`STDiff.encode_context`; ``state``: the state at the time of ``frames[:, 0]``)."""
    return model.encode_context(to_model_range(frames), state)


@torch.no_grad()
def sample(model: STDiff, observed: Tensor, times: Sequence[float], num_samples: int = 1, sampler: str = "ddpm",
           steps: int | None = None, *, generator: torch.Generator | None = None, noise: NoiseStreams | None = None,
           exact: bool = False, t0: float | None = None, motion_state: Tensor | None = None,
           progress: bool = False) -> SampleOutput:
    """Sample the frames at ``times`` with ``model`` as it is (its device, dtype and mode), in one chunk.

    observed: (N, To, C, H, W) in [0, 1] (its last frame, at ``t0``, default To - 1, conditions the
    first prediction); times: strictly increasing, after t0, fractions allowed; the context is
    encoded once and the SDE solved once over all times (no autoregressive chunks, no work limits:
    :class:`~stdiff.Predictor` adds those). ``exact``: recompute SPADE at every step (the official
    algorithm) instead of once per frame. ``motion_state``: a precomputed Conv-GRU state (N, F, h, w)
    at t0. Random numbers: ``noise`` (N*S rows, e.g. ``NoiseStreams.for_videos(seed, N, S)``), else
    streams seeded from ``generator`` (the global RNG when None). Returns :class:`SampleOutput`.
    """
    n = observed.shape[0]
    if noise is not None and generator is not None:
        raise ValueError("give either noise or generator, not both")
    if noise is None:
        noise = NoiseStreams.from_generator(generator, n * num_samples, observed.device)
    scheduler = make_sampler(sampler, steps, model.schedule)
    t0 = float(observed.shape[1] - 1) if t0 is None else float(t0)
    times = [float(t) for t in times]
    from tqdm.auto import tqdm

    with tqdm(total=len(times), desc="sample", unit="frame", disable=not progress, leave=False) as bar:
        frames, motion = autoregress(model, observed, [Chunk(t0, times)], times, scheduler,
                                     make_denoiser(model, exact, cuda_graph=False), noise, num_samples,
                                     motion_state=motion_state, on_frame=lambda: bar.update(1))
    return SampleOutput(frames.unflatten(0, (n, num_samples)), motion.unflatten(0, (n, num_samples)))
