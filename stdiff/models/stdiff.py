"""The STDiff model: motion encoder + Conv-GRU + motion SDE + SPADE diffusion UNet."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import STDiffConfig
from ..noise import NoiseStreams
from ..ops import BACKENDS
from ..sampling import FrameDenoiser, NoiseSchedule, Sampler, denoise_frames, make_sampler
from .denoisers import CachedDenoiser, StepwiseDenoiser
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
        its conditioning frame at gap 0. The motion path (encoder, Conv-GRU, SDE state and
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
        with torch.autocast(observed.device.type, enabled=False):  # the motion path stays fp32 under --bf16
            m = self.encode_context(observed.float())
            motion = self.future_motion(m, to - 1, [to + j for j in selected], generator=generator)
        motion = motion.transpose(0, 1).flatten(0, 1)                           # (N*k, F, h, w)
        x0 = targets.flatten(0, 1)
        noise = randn(x0.shape, generator, x0)
        steps = torch.randint(0, self.schedule.num_train_timesteps, (x0.shape[0],), generator=generator,
                              device=device).to(x0.device)
        x_t = self.schedule.add_noise(x0, noise, steps)
        condition = self.frame_condition(motion, gaps.flatten().to(motion.device))
        eps = self.denoise(x_t, steps, prevs.flatten(0, 1), motion=condition)
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

    # ---- sampling -----------------------------------------------------------------------------
    def generate(self, context: Tensor, times: Sequence[float], num_samples: int, scheduler: Sampler,
                 denoiser: FrameDenoiser, noise: NoiseStreams, t0: float | None = None,
                 motion_state: Tensor | None = None, on_frame: Callable[[], None] | None = None
                 ) -> tuple[Tensor, Tensor]:
        """The prediction pipeline: context -> motion state -> SDE -> :func:`~stdiff.sampling.denoise_frames`.

        context: (N, L, C, H, W) in [-1, 1], its last frame at ``t0`` (default L - 1) conditions the
        first frame; motion_state: the Conv-GRU state (N, F, h, w) at t0 (None: encode ``context``);
        noise: N * num_samples rows (video-major), feeding the SDE (``noise=``) and the diffusion.
        Each frame is conditioned on the frame :meth:`conditioning_sources` names, through
        :meth:`frame_condition` of its motion and time gap.
        Returns frames (N, S, T, C, H, W) in [-1, 1] and motion (T, N*S, F, h, w).
        """
        n = context.shape[0]
        rows = n * num_samples
        if len(noise) != rows:
            raise ValueError(f"noise must have N * num_samples = {rows} rows, got {len(noise)}")
        t0 = float(context.shape[1] - 1) if t0 is None else float(t0)
        m = self.encode_context(context) if motion_state is None else motion_state
        m = m.repeat_interleave(num_samples, dim=0)
        motion = self.future_motion(m, t0, times, noise=noise)                 # (T, N*S, F, h, w)
        prev = context[:, -1].repeat_interleave(num_samples, dim=0)
        sources = self.conditioning_sources(t0, times)
        gaps = [float(t) - (t0 if j < 0 else float(times[j])) for t, j in zip(times, sources)]
        condition = torch.stack([self.frame_condition(motion[i], motion.new_full((rows,), g))
                                 for i, g in enumerate(gaps)]) if self.gap_aware else motion
        frames = denoise_frames(denoiser, scheduler, condition, prev, noise, times, on_frame, sources,
                                self.noise_times(t0, times))
        return frames.unflatten(0, (n, num_samples)), motion

    @torch.no_grad()
    def sample(
        self,
        observed: Tensor,
        times: Sequence[float],
        num_samples: int = 1,
        sampler: str = "ddpm",
        steps: int = 100,
        generator: torch.Generator | None = None,
        cache_spade: bool = True,
        t0: float | None = None,
        motion_state: Tensor | None = None,
        return_motion: bool = False,
        progress: bool = False,
        noise: NoiseStreams | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Autoregressive sampling of the frames at ``times``; returns (N, S, T, C, H, W) in [-1, 1].

        observed: (N, To, C, H, W) in [-1, 1] (its last frame conditions the first prediction).
        times: strictly increasing times after ``t0`` (default To - 1, the last observed index),
        fractions allowed. The context is encoded once and the SDE solved once over all times;
        S samples per video run as one batch of N*S. ``cache_spade`` computes SPADE's gamma/beta
        once per frame (exact); False recomputes them at every denoising step (the official code).
        ``motion_state``: a precomputed Conv-GRU state (N, F, h, w) for ``observed`` (streaming).
        Random numbers: ``noise`` (N*S rows, e.g. ``NoiseStreams.for_videos(seed, N, S)``: sample s
        of video v then does not depend on N or S), else streams seeded from ``generator`` (the
        global RNG when None). ``progress``: show a progress bar over the predicted frames.
        With ``return_motion`` also returns the motion states (N, S, T, F, h, w).
        """
        n = observed.shape[0]
        if noise is not None and generator is not None:
            raise ValueError("give either noise or generator, not both")
        if noise is None:
            noise = NoiseStreams.from_generator(generator, n * num_samples, observed.device)
        scheduler = make_sampler(sampler, steps, self.schedule)
        denoiser = CachedDenoiser(self.unet, self.unet.conv_in.weight.dtype) if cache_spade \
            else StepwiseDenoiser(self.unet)
        from tqdm.auto import tqdm

        with tqdm(total=len(times), desc="sample", unit="frame", disable=not progress, leave=False) as bar:
            out, motion = self.generate(observed, times, num_samples, scheduler, denoiser, noise, t0=t0,
                                        motion_state=motion_state, on_frame=lambda: bar.update(1))
        if return_motion:
            return out, motion.transpose(0, 1).unflatten(0, (n, num_samples))
        return out
