"""The STDiff model: motion encoder + Conv-GRU + motion SDE + SPADE diffusion UNet."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import STDiffConfig
from ..noise_schedule import NoiseSchedule
from ..ops import BACKENDS
from .motion import ConvGRU, MotionEncoder
from .sde import MotionSDE
from .unet import SpadeUNet

__all__ = ["STDiff", "randn"]


def randn(shape: Sequence[int], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Standard normal noise drawn on the generator's device, returned on ``like``'s device and dtype."""
    device = generator.device if generator is not None else like.device
    return torch.randn(tuple(shape), generator=generator, device=device, dtype=torch.float32).to(like.device, like.dtype)


class STDiff(nn.Module):
    """Continuous-time stochastic video predictor. Frames inside the model are in [-1, 1].

    The model computes (motion state, future motion, each frame's conditioning, eps through the
    UNet); predicting, i.e. the loops, the schedulers and the [0, 1] frames of the public API,
    is :mod:`stdiff.pipeline`'s.

    Parameter names: ``motion_encoder.*``, ``conv_gru.*``, ``sde.{drift,diffusion}.*``, ``unet.*``
    (the UNet's keys are the official ``diffusion_unet.*`` keys). ``backend``: the ``stdiff.ops``
    backend of every fused op of the model (see :meth:`set_backend`).
    """

    def __init__(self, config: STDiffConfig, backend: str = "auto") -> None:
        super().__init__()
        self.config = config.validate()
        self.motion_encoder = MotionEncoder(config.channels, config.motion.model_channels, config.motion.n_downs,
                                            config.motion.activation)
        channels = self.motion_encoder.out_channels
        self.conv_gru = ConvGRU(channels, standard=config.motion.standard_gru)
        self.sde = MotionSDE(channels, config.sde.n_layers, config.sde.method, config.sde.dt, grid=config.sde.grid)
        self.unet = SpadeUNet(**config.unet_kwargs())
        self.schedule = NoiseSchedule(config.num_train_timesteps, config.beta_start, config.beta_end)
        self.set_backend(backend)

    def set_backend(self, backend: str) -> STDiff:
        """Run every fused op of this model (Conv-GRU, SDE, SPADE) on ``backend``: "auto" or one of
        ``stdiff.ops.BACKENDS``. Per model, so models with different backends can share a process. Returns self."""
        if backend != "auto" and backend not in BACKENDS:
            raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {backend!r}")
        self.backend = backend
        self.conv_gru.backend = backend
        self.sde.backend = backend
        self.unet.set_backend(backend)
        return self

    # ---- motion -------------------------------------------------------------------------------
    def motion_features(self, frames: Tensor) -> Tensor:
        """Encode differences of consecutive frames: (N, T, C, H, W) -> (N, T-1, F, h, w)."""
        diffs = frames[:, 1:] - frames[:, :-1]
        feats = self.motion_encoder(diffs.flatten(0, 1))
        return feats.unflatten(0, diffs.shape[:2])

    def encode_context(self, frames: Tensor, state: Tensor | None = None) -> Tensor:
        """Motion state at the last observed time: (N, To, C, H, W) in [-1, 1] -> (N, F, h, w).

        ``state``: the Conv-GRU state (N, F, h, w) at the time of ``frames[:, 0]`` to continue from
        (streaming: push frames ``[previous, new]`` to advance one frame); None starts from zeros.
        """
        return self.conv_gru(self.motion_features(frames), state)

    def future_motion(self, m: Tensor, t0: float, times: Sequence[float], **solve_kwargs) -> Tensor:
        """Motion states at ``times`` (T, N, F, h, w) from the state ``m`` at time t0 (see MotionSDE.solve)."""
        return self.sde.solve(m, t0, times, **solve_kwargs)

    # ---- conditioning on the time gap -----------------------------------------------------------
    @property
    def gap_aware(self) -> bool:
        """Whether the frame generator is told the time gap to its conditioning frame."""
        return self.config.gap_conditioning != "none"

    def frame_condition(self, motion: Tensor, gap: Tensor) -> Tensor:
        """The UNet's SPADE input for frames ``gap`` (B,) frame units after their conditioning frames:
        motion (B, F, h, w) -> (B, F, h, w). Gap-blind (official): the motion itself; ``scaled_motion``:
        gap * motion (the displacement of a velocity-like state; gap 0 is no motion)."""
        if not self.gap_aware:
            return motion
        return motion * gap.to(motion.device, motion.dtype).view(-1, 1, 1, 1)

    def conditioning_sources(self, t0: float, times: Sequence[float]) -> list[int]:
        """Which frame conditions each frame at ``times`` (increasing, > t0): -1 for the context's last
        frame (at t0), j for the j-th frame generated before it.

        Gap-blind models chain every frame to the one before (the official algorithm). Gap-aware models
        condition a frame on the last frame of the integer grid t0 + k when that is at most one frame
        interval back (so a 4x chain's in-between frames hang off the 1x chain, whose frames equal a 1x
        prediction's), else on the frame before it.
        """
        if not self.gap_aware:
            return list(range(-1, len(times) - 1))
        sources, anchor, anchor_time = [], -1, float(t0)
        for i, t in enumerate(times):
            sources.append(anchor if t - anchor_time <= 1 + 1e-6 else i - 1)
            offset = float(t) - float(t0)
            if abs(offset - round(offset)) <= 1e-6:
                anchor, anchor_time = i, float(t)
        return sources

    def noise_times(self, t0: float, times: Sequence[float]) -> list[float]:
        """The time whose diffusion noise each frame at ``times`` draws (see ``denoise_frames``).

        Gap-blind models: each frame its own. Gap-aware models: a frame between two grid times shares
        the noise of the grid frame that ends its interval (t0 + ceil(t - t0)), so the in-between frames
        of an interval are one smooth function of their gap and end on that grid frame.
        """
        if not self.gap_aware:
            return [float(t) for t in times]
        return [float(t0) + math.ceil(float(t) - float(t0) - 1e-6) for t in times]

    # ---- what the diffusion generates ------------------------------------------------------------
    @property
    def residual(self) -> bool:
        """Whether the diffusion generates the change from the conditioning frame (``diffusion_target``)."""
        return self.config.diffusion_target == "residual"

    def to_target(self, frame: Tensor, cond: Tensor) -> Tensor:
        """The diffusion's clean sample for ``frame`` given its conditioning frame ``cond`` (both (B, C, H, W)
        in [-1, 1]): the frame itself, or ``(frame - cond) / 2`` (in [-1, 1] as well) for a residual model."""
        return (frame - cond) / 2 if self.residual else frame

    def from_target(self, x0: Tensor, cond: Tensor) -> Tensor:
        """Inverse of :meth:`to_target`: the frame (B, C, H, W) in [-1, 1] from a generated clean sample."""
        return (cond + 2 * x0).clamp(-1, 1) if self.residual else x0.clamp(-1, 1)

    # ---- diffusion ----------------------------------------------------------------------------
    def denoise(self, x_t: Tensor, timestep: Tensor | int, prev_frame: Tensor,
                motion: Tensor | None = None, spade=None) -> Tensor:
        """Predicted noise for x_t (B, C, H, W) given the previous frame and the motion (or its SPADE cache)."""
        return self.unet(torch.cat([x_t, prev_frame], dim=1), timestep, motion=motion, spade=spade)

    def training_loss(self, observed: Tensor, future: Tensor, k: int | None = None,
                      generator: torch.Generator | None = None) -> Tensor:
        """Official objective: L1 between predicted and true noise on k random future frames
        (weighted over diffusion steps when ``config.loss_weighting`` says so, see :meth:`loss_weights`).

        observed: (N, To, C, H, W), future: (N, Tp, C, H, W), both in [-1, 1]. Draws a sorted random
        subset of k future integer times (frame j of ``future`` is at time To + j); each target is
        conditioned on the ground truth at the previously selected time (the last observed frame for
        the first), with its own noise and diffusion step. A gap-aware model (``gap_conditioning``)
        sees each target's time gap, and with probability ``gap_zero_prob`` a target is replaced by
        its conditioning frame at gap 0. A residual model (``diffusion_target``) noises the change from the
        conditioning frame instead of the frame (:meth:`to_target`); ``cond_noise`` adds noise to the
        conditioning frames (the targets of gap 0 stay clean). The motion path (encoder, Conv-GRU, SDE state and
        increments) runs in float32 even under autocast: bf16 steps lose a small drift.
        """
        n, to = observed.shape[:2]
        tp = future.shape[1]
        k = self.config.train_future_k if k is None else k
        if not 1 <= k <= tp:
            raise ValueError(f"k must be in [1, {tp}] (the number of future frames), got {k}")
        device = generator.device if generator is not None else torch.device("cpu")
        selected = torch.randperm(tp, generator=generator, device=device)[:k].sort().values.tolist()
        prev_idx = [None] + selected[:-1]
        targets = future[:, selected]                                           # (N, k, C, H, W)
        prevs = torch.stack([observed[:, -1] if j is None else future[:, j] for j in prev_idx], 1)
        gaps = torch.tensor([j - (-1 if p is None else p) for j, p in zip(selected, prev_idx)],
                            dtype=torch.float32).repeat(n, 1)                   # (N, k)
        if self.config.gap_zero_prob > 0:
            anchor = torch.rand((n, k), generator=generator, device=device).cpu() < self.config.gap_zero_prob
            targets = torch.where(anchor.to(targets.device)[..., None, None, None], prevs, targets)
            gaps = gaps.masked_fill(anchor, 0.0)
        if self.config.cond_noise > 0:
            std = torch.rand((n, k, 1, 1, 1), generator=generator, device=device).to(prevs) * self.config.cond_noise
            prevs = (prevs + std * randn(prevs.shape, generator, prevs)).clamp(-1, 1)
        with torch.autocast(observed.device.type, enabled=False):  # the motion path stays fp32 under --bf16
            m = self.encode_context(observed.float())
            motion = self.future_motion(m, to - 1, [to + j for j in selected], generator=generator)
        motion = motion.transpose(0, 1).flatten(0, 1)                           # (N*k, F, h, w)
        cond = prevs.flatten(0, 1)
        x0 = self.to_target(targets.flatten(0, 1), cond)
        noise = randn(x0.shape, generator, x0)
        steps = torch.randint(0, self.schedule.num_train_timesteps, (x0.shape[0],), generator=generator,
                              device=device).to(x0.device)
        x_t = self.schedule.add_noise(x0, noise, steps)
        condition = self.frame_condition(motion, gaps.flatten().to(motion.device))
        eps = self.denoise(x_t, steps, cond, motion=condition)
        if self.config.loss_weighting == "none":
            return F.l1_loss(eps, noise)
        weights = self.loss_weights().to(eps.device)[steps]
        return ((eps - noise).abs().flatten(1).mean(1) * weights).mean()

    def loss_weights(self) -> Tensor:
        """Per diffusion step weight of the L1 noise loss (num_train_timesteps,), mean 1.

        ``truncated_snr``: clamp(sqrt(1 / SNR_t), 1, loss_weight_cap), SNR_t = abar_t / (1 - abar_t):
        in x0 terms the L1 error counts with weight max(sqrt(SNR_t), 1) (capped), so the noisy steps
        that decide where the digits go and what they look like, where the motion and the previous
        frame matter, are not drowned by the nearly clean steps.
        """
        abar = self.schedule.alphas_cumprod.double()
        weights = ((1 - abar) / abar).sqrt().clamp(1.0, self.config.loss_weight_cap)
        return (weights / weights.mean()).float()
