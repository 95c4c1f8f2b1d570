"""Building blocks of the SPADE diffusion UNet (diffusers-0.15 ``UNet2DModel`` semantics).

Module and parameter names follow the official STDiff diffusers fork so that state dicts
load without renaming. Every resnet takes its SPADE modulation ``(gamma, beta)`` as input
(computed by its ``motion_cond_layer`` from the motion feature, see ``SpadeUNet.compute_spade``),
so blocks never see the motion feature itself; ``(None, None)`` runs a resnet without motion.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stdiff.ops import spade_norm

from .attention import AttentionBlock

__all__ = [
    "timestep_embedding",
    "TimestepEmbedding",
    "MotionCondModule",
    "SpadeResnetBlock",
    "Downsample",
    "Upsample",
    "DownBlock",
    "MidBlock",
    "UpBlock",
]

SpadePair = tuple[Tensor, Tensor]
#: a resnet's conditioning: a SpadePair, or (None, None) for no motion conditioning
OptionalPair = tuple[Tensor | None, Tensor | None]


def timestep_embedding(
    timesteps: Tensor, dim: int, flip_sin_to_cos: bool, freq_shift: float, max_period: float = 10000.0
) -> Tensor:
    """Sinusoidal embedding of (N,) (possibly fractional) timesteps -> (N, dim) float32.

    Frequencies ``exp(-ln(max_period) * i / (dim // 2 - freq_shift))``, i < dim // 2; the
    result is ``[sin, cos]`` (``[cos, sin]`` with ``flip_sin_to_cos``), zero-padded to an odd dim.
    """
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device)
    freqs = torch.exp(exponent / (half - freq_shift))
    args = timesteps.float()[:, None] * freqs[None, :]
    first, second = torch.sin(args), torch.cos(args)
    if flip_sin_to_cos:
        first, second = second, first
    emb = torch.cat([first, second], dim=-1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepEmbedding(nn.Module):
    """MLP on the sinusoidal embedding: ``linear_2(silu(linear_1(e)))``, (N, in) -> (N, out)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_features, out_features)
        self.linear_2 = nn.Linear(out_features, out_features)

    def forward(self, emb: Tensor) -> Tensor:
        """emb: (N, in_features) -> (N, out_features)."""
        return self.linear_2(F.silu(self.linear_1(emb)))


class MotionCondModule(nn.Module):
    """SPADE modulation maps from a motion feature already resized to the target resolution.

    ``a = ReLU(conv3x3(m))`` with ``(m_channels + channels) // 2`` hidden channels;
    ``gamma = conv3x3(a)``, ``beta = conv3x3(a)``.
    """

    def __init__(self, m_channels: int, channels: int) -> None:
        super().__init__()
        hidden = (m_channels + channels) // 2
        self.mlp_shared = nn.Sequential(nn.Conv2d(m_channels, hidden, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, motion: Tensor) -> SpadePair:
        """motion: (N, m_channels, H, W) -> gamma, beta: (N, channels, H, W) each."""
        hidden = self.mlp_shared(motion)
        return self.mlp_gamma(hidden), self.mlp_beta(hidden)


class SpadeResnetBlock(nn.Module):
    """Resnet block with SPADE motion conditioning and a time-embedding bias.

    ``h = conv1(silu(norm1(x)))``; ``h = IN(h) * (1 + gamma) + beta + time_emb_proj(silu(temb))``
    (one fused ``stdiff.ops.spade_norm`` call); ``h = conv2(silu(norm2(h)))``;
    ``out = (shortcut(x) + h) / output_scale_factor`` with a 1x1 ``conv_shortcut`` when the
    channel count changes. Without motion (gamma = beta = None) the SPADE line is
    ``h = h + time_emb_proj(silu(temb))`` (no instance norm), as the official code with m_feat=None.
    ``backend``: the ``stdiff.ops`` backend of the fused SPADE op (set by ``SpadeUNet.set_backend``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        m_channels: int,
        num_groups: int,
        eps: float,
        output_scale_factor: float = 1.0,
    ) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.output_scale_factor = float(output_scale_factor)
        self.backend = "auto"
        self.motion_cond_layer = MotionCondModule(m_channels, out_channels)
        self.norm1 = nn.GroupNorm(num_groups, in_channels, eps=eps, affine=True)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = nn.GroupNorm(num_groups, out_channels, eps=eps, affine=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: Tensor, temb_act: Tensor, gamma: Tensor | None, beta: Tensor | None) -> Tensor:
        """x: (N, C_in, H, W); temb_act: silu(temb), (N, T); gamma, beta: (N, C_out, H, W), or both
        None (no motion conditioning). Returns (N, C_out, H, W).
        """
        h = self.conv1(F.silu(self.norm1(x)))
        bias = self.time_emb_proj(temb_act)
        if gamma is None and beta is None:
            h = h + bias[:, :, None, None]
        else:
            h = spade_norm(h, gamma, beta, bias=bias, backend=self.backend)
        h = self.conv2(F.silu(self.norm2(h)))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        out = skip + h
        if self.output_scale_factor != 1.0:
            out = out / self.output_scale_factor
        return out


class Downsample(nn.Module):
    """Stride-2 3x3 conv (padding 1): (N, C, H, W) -> (N, C, H/2, W/2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, C, H, W) -> (N, C, H/2, W/2)."""
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest x2 upsampling then a 3x3 conv: (N, C, H, W) -> (N, C, 2H, 2W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, C, H, W) -> (N, C, 2H, 2W)."""
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _ResnetLevel(nn.Module):
    """SPADE resnets at one resolution, resnet ``i`` taking ``in_channels[i]`` channels to
    ``out_channels``, each followed by self-attention when ``attention``: what :class:`DownBlock`
    and :class:`UpBlock` share."""

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int,
        *,
        temb_channels: int,
        m_channels: int,
        num_groups: int,
        eps: float,
        attention: bool,
        head_dim: int | None,
    ) -> None:
        super().__init__()
        # Registration order (attentions before resnets) mirrors the official state dict.
        self.attentions = (
            nn.ModuleList(AttentionBlock(out_channels, head_dim, num_groups, eps) for _ in in_channels)
            if attention else None
        )
        self.resnets = nn.ModuleList(
            SpadeResnetBlock(c, out_channels, temb_channels, m_channels, num_groups, eps) for c in in_channels
        )

    def _layer(self, i: int, x: Tensor, temb_act: Tensor, pair: OptionalPair) -> Tensor:
        """Resnet ``i`` on ``x`` with SPADE ``pair``, then attention ``i`` when there is attention."""
        x = self.resnets[i](x, temb_act, *pair)
        return x if self.attentions is None else self.attentions[i](x)


class DownBlock(_ResnetLevel):
    """``num_layers`` resnets (each followed by attention when ``attention``), then an optional
    stride-2 downsampler. Returns the output and every intermediate state for the skip path.
    ``level``: the keyword arguments of the resnets and attentions (see :class:`_ResnetLevel`)."""

    def __init__(self, in_channels: int, out_channels: int, num_layers: int, add_downsample: bool,
                 **level: Any) -> None:
        super().__init__([in_channels] + [out_channels] * (num_layers - 1), out_channels, **level)
        self.downsamplers = nn.ModuleList([Downsample(out_channels)]) if add_downsample else None

    def forward(
        self, x: Tensor, temb_act: Tensor, spade: Sequence[OptionalPair]
    ) -> tuple[Tensor, list[Tensor]]:
        """x: (N, C_in, H, W); spade: one (gamma, beta) per resnet, (N, C_out, H, W) each.

        Returns (out, skips): out (N, C_out, H', W') with H' = H/2 when downsampling, and the
        list of states after each resnet(+attention) and after the downsampler.
        """
        skips = []
        for i in range(len(self.resnets)):
            x = self._layer(i, x, temb_act, spade[i])
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class MidBlock(nn.Module):
    """resnet -> self-attention -> resnet at constant channels and resolution."""

    def __init__(
        self,
        channels: int,
        temb_channels: int,
        m_channels: int,
        num_groups: int,
        eps: float,
        head_dim: int | None,
        output_scale_factor: float,
    ) -> None:
        super().__init__()
        self.attentions = nn.ModuleList(
            [AttentionBlock(channels, head_dim, num_groups, eps, rescale_output_factor=output_scale_factor)]
        )
        self.resnets = nn.ModuleList(
            SpadeResnetBlock(channels, channels, temb_channels, m_channels, num_groups, eps,
                             output_scale_factor=output_scale_factor)
            for _ in range(2)
        )

    def forward(self, x: Tensor, temb_act: Tensor, spade: Sequence[OptionalPair]) -> Tensor:
        """x: (N, C, H, W); spade: two (gamma, beta) pairs (N, C, H, W). Returns (N, C, H, W)."""
        x = self.resnets[0](x, temb_act, *spade[0])
        x = self.attentions[0](x)
        return self.resnets[1](x, temb_act, *spade[1])


class UpBlock(_ResnetLevel):
    """``num_layers`` resnets on ``cat(x, skip)`` (each followed by attention when ``attention``),
    then an optional nearest x2 + conv upsampler.

    The first resnet sees ``prev_channels`` from below; the last skip has ``skip_in_channels``
    (the channels of the next-shallower level), the others ``out_channels``. ``level``: the
    keyword arguments of the resnets and attentions (see :class:`_ResnetLevel`).
    """

    def __init__(self, prev_channels: int, skip_in_channels: int, out_channels: int, num_layers: int,
                 add_upsample: bool, **level: Any) -> None:
        in_channels = [(prev_channels if i == 0 else out_channels)
                       + (skip_in_channels if i == num_layers - 1 else out_channels) for i in range(num_layers)]
        super().__init__(in_channels, out_channels, **level)
        self.upsamplers = nn.ModuleList([Upsample(out_channels)]) if add_upsample else None

    def forward(
        self, x: Tensor, skips: list[Tensor], temb_act: Tensor, spade: Sequence[OptionalPair]
    ) -> Tensor:
        """x: (N, C_prev, H, W); skips: the down path's states, consumed from the end (popped);
        spade: one (gamma, beta) per resnet, (N, C_out, H, W). Returns (N, C_out, H', W'),
        H' = 2H when upsampling."""
        for i in range(len(self.resnets)):
            x = self._layer(i, torch.cat([x, skips.pop()], dim=1), temb_act, spade[i])
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x
