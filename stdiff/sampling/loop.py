"""The sampling loop: the one place that iterates over frames and denoising steps.

The split follows diffusers: a :class:`FrameDenoiser` computes eps (the model), a
:class:`~stdiff.sampling.Sampler` steps x_t -> x_prev (the scheduler), and
:func:`denoise_frames` owns the iteration and every random number of it.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from torch import Tensor

from ..noise import NoiseStreams
from .base import Sampler

__all__ = ["DIFFUSION_NOISE", "FrameDenoiser", "denoise_frames", "frame_key"]

#: Key namespace of the diffusion noise in :class:`NoiseStreams` (0 and 1 belong to the SDE).
DIFFUSION_NOISE = 2
#: Step index of the initial x_T in a diffusion-noise key.
INITIAL = -1


def frame_key(time: float) -> int:
    """Integer name of the frame at ``time`` in noise keys (times closer than 1e-6 are one frame)."""
    return round(time * 1_000_000)


class FrameDenoiser(Protocol):
    """The model's side of the loop: conditioned on one frame's motion at a time."""

    def set_motion(self, motion: Tensor) -> None:
        """Condition the next calls on the motion state (B, F, h, w) of the frame being generated."""

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        """eps (B, C, H, W) float32 for x_t (B, C, H, W), timestep t (0-d long tensor on x's device) and
        the previous frame ``cond`` (B, C, H, W) in [-1, 1]."""


def denoise_frames(denoiser: FrameDenoiser, scheduler: Sampler, motion: Tensor, prev: Tensor, noise: NoiseStreams,
                   times: Sequence[float], on_frame: Callable[[], None] | None = None,
                   sources: Sequence[int] | None = None, noise_times: Sequence[float] | None = None) -> Tensor:
    """Generate the frames at ``times`` one after the other, each conditioned on an earlier one.

    motion: (T, B, F', h, w) the denoiser's conditioning of each frame (the motion states at ``times``,
    or the model's ``frame_condition`` of them); prev: (B, C, H, W) the context frame before the first,
    in [-1, 1]; sources: frame i is conditioned on ``prev`` when ``sources[i] == -1``, else on generated
    frame ``sources[i] < i`` (default: on the frame just before it); noise: B rows. Frame i draws its noise
    under the name n_i = ``frame_key(noise_times[i])`` (default its own time t_i): it starts from
    x_T = ``noise.randn((2, n_i, -1), ...)`` and its denoising step j adds ``noise.randn((2, n_i, j), ...)``
    when the sampler is stochastic there. ``on_frame`` is called after each frame. Returns (B, T, C, H, W) in [-1, 1].
    """
    if len(noise) != prev.shape[0]:
        raise ValueError(f"noise must have one stream per batch row ({prev.shape[0]}), got {len(noise)}")
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
        denoiser.set_motion(motion[i])
        x = noise.randn((DIFFUSION_NOISE, frame, INITIAL), shape).to(prev.device)
        scheduler.reset()
        cond = (prev if sources[i] < 0 else frames[sources[i]]).clamp(-1, 1)
        for j, t in enumerate(scheduler.timesteps.tolist()):
            eps = denoiser(x, timesteps[j], cond)
            z = noise.randn((DIFFUSION_NOISE, frame, j), shape).to(prev.device) if scheduler.needs_noise(t) else None
            x = scheduler.step(eps, t, x, noise=z)
        frames.append(x)
        if on_frame is not None:
            on_frame()
    return torch.stack(frames, 1).clamp(-1, 1)
