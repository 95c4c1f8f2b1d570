"""SPADE-conditioned diffusion UNet of STDiff.

A diffusers-0.15 style ``UNet2DModel`` whose every resnet block modulates its first conv's
output with SPADE maps ``(gamma, beta)`` computed from the motion feature. State-dict keys,
shapes and parameter counts are those of the official ``UNet2DMotionCond`` (the
``diffusion_unet.*`` entries of an official STDiff checkpoint, without that prefix).

Since gamma/beta depend only on the motion feature and the resolution, ``compute_spade``
returns them as a :class:`SpadeCache` that can be reused for every denoising step of a frame.
"""
from __future__ import annotations

import numbers
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .unet_blocks import DownBlock, MidBlock, SpadePair, SpadeResnetBlock, TimestepEmbedding, UpBlock, timestep_embedding

__all__ = ["SpadeCache", "SpadeUNet"]

_DOWN_TYPES = {"DownBlock2D": False, "AttnDownBlock2D": True}  # type -> has attention
_UP_TYPES = {"UpBlock2D": False, "AttnUpBlock2D": True}


class SpadeCache:
    """SPADE maps of every resnet of a :class:`SpadeUNet`, in forward order.

    ``pairs[i] = (gamma_i, beta_i)``, each (N, C_i, H_i, W_i): down blocks' resnets, then the
    mid block's two, then the up blocks'. Built by ``SpadeUNet.compute_spade``; valid for
    samples of the spatial size it was computed for and any diffusion timestep.
    """

    __slots__ = ("pairs",)

    def __init__(self, pairs: Sequence[SpadePair]) -> None:
        if len(pairs) == 0:
            raise ValueError("pairs must hold at least one (gamma, beta) pair")
        self.pairs: tuple[SpadePair, ...] = tuple((g, b) for g, b in pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[SpadePair]:
        return iter(self.pairs)

    def __getitem__(self, index: int) -> SpadePair:
        return self.pairs[index]


class SpadeUNet(nn.Module):
    """Diffusion UNet predicting epsilon, conditioned on a motion feature through SPADE.

    Layout (diffusers ``UNet2DModel``): ``conv_in`` -> down blocks (``layers_per_block``
    resnets each, attention after each resnet in ``AttnDownBlock2D``, stride-2 conv between
    levels) -> mid block (resnet, attention, resnet) -> up blocks (``layers_per_block + 1``
    resnets on ``cat(x, skip)``, nearest x2 + conv between levels) -> GroupNorm -> SiLU ->
    ``conv_out``. Time embedding: sinusoid of width ``block_out_channels[0]`` -> MLP to
    ``4 * block_out_channels[0]``, added per channel in each resnet.

    ``attention_head_dim[i]`` is the head width of block i's attention (heads = channels //
    head dim; None = one head, as in diffusers; ignored for blocks without attention); up
    blocks use the list reversed and the mid block's attention uses ``attention_head_dim[-1]``,
    as in the official code. ``mid_block_scale_factor`` divides the mid block's residual sums.
    ``self.config`` holds the constructor arguments (JSON-serialisable);
    ``SpadeUNet.from_config(model.config)`` re-creates the architecture. ``set_backend`` picks the
    ``stdiff.ops`` backend of the fused SPADE op.
    """

    def __init__(
        self,
        sample_size: int | Sequence[int],
        in_channels: int,
        out_channels: int,
        m_channels: int,
        block_out_channels: Sequence[int],
        down_block_types: Sequence[str],
        up_block_types: Sequence[str],
        attention_head_dim: Sequence[int | None],
        layers_per_block: int = 2,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        flip_sin_to_cos: bool = True,
        freq_shift: float = 0,
        mid_block_scale_factor: float = 1.0,
    ) -> None:
        super().__init__()
        # The arguments are checked before anything is built from them (ValueError naming the argument).
        sizes = [sample_size] if isinstance(sample_size, numbers.Integral) else list(sample_size)
        if len(sizes) not in (1, 2) or not all(_positive_int(s) for s in sizes):
            raise ValueError(f"sample_size must be a positive int or (H, W), got {sample_size!r}")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("m_channels", m_channels), ("layers_per_block", layers_per_block),
                            ("norm_num_groups", norm_num_groups)):
            if not _positive_int(value):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if isinstance(block_out_channels, (str, bytes)) or len(block_out_channels) == 0 or not all(
                _positive_int(c) for c in block_out_channels):
            raise ValueError(f"block_out_channels must be a non-empty list of positive ints, got {block_out_channels!r}")
        n = len(block_out_channels)
        for name, types, allowed in (("down_block_types", down_block_types, _DOWN_TYPES),
                                     ("up_block_types", up_block_types, _UP_TYPES)):
            if isinstance(types, str) or len(types) != n or any(t not in allowed for t in types):
                raise ValueError(f"{name} must list {n} entries (one per block) from {sorted(allowed)}, got {types!r}")
        if isinstance(attention_head_dim, (str, int)) or len(attention_head_dim) != n:
            raise ValueError(f"attention_head_dim must be a list of {n} entries (int or None), got {attention_head_dim!r}")
        for c in block_out_channels:
            if c % norm_num_groups:
                raise ValueError(f"every block_out_channels entry must be divisible by norm_num_groups="
                                 f"{norm_num_groups}, got {list(block_out_channels)}")
        checks = [(c, d) for c, d, t in zip(block_out_channels, attention_head_dim, down_block_types) if _DOWN_TYPES[t]]
        checks += [(c, d) for c, d, t in zip(block_out_channels[::-1], attention_head_dim[::-1], up_block_types)
                   if _UP_TYPES[t]]
        checks.append((block_out_channels[-1], attention_head_dim[-1]))  # mid block
        for c, d in checks:
            if d is not None and (not _positive_int(d) or c % d):
                raise ValueError(f"attention_head_dim entries must be None or positive divisors of the block's "
                                 f"channels, got {d!r} for {c} channels")
        if not (isinstance(norm_eps, numbers.Real) and norm_eps > 0):
            raise ValueError(f"norm_eps must be a positive float, got {norm_eps!r}")
        channels = [int(c) for c in block_out_channels]
        head_dims = [None if d is None else int(d) for d in attention_head_dim]
        self.config: dict[str, Any] = {
            "sample_size": int(sample_size) if isinstance(sample_size, numbers.Integral) else [int(s) for s in sample_size],
            "in_channels": int(in_channels),
            "out_channels": int(out_channels),
            "m_channels": int(m_channels),
            "block_out_channels": channels,
            "down_block_types": list(down_block_types),
            "up_block_types": list(up_block_types),
            "attention_head_dim": head_dims,
            "layers_per_block": int(layers_per_block),
            "norm_num_groups": int(norm_num_groups),
            "norm_eps": float(norm_eps),
            "flip_sin_to_cos": bool(flip_sin_to_cos),
            "freq_shift": float(freq_shift),
            "mid_block_scale_factor": float(mid_block_scale_factor),
        }
        temb = 4 * channels[0]
        common = {"temb_channels": temb, "m_channels": int(m_channels), "num_groups": int(norm_num_groups),
                  "eps": float(norm_eps)}

        self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(channels[0], temb)
        self.down_blocks = nn.ModuleList(
            DownBlock(channels[max(i - 1, 0)], channels[i], num_layers=layers_per_block,
                      attention=_DOWN_TYPES[down_block_types[i]], head_dim=head_dims[i],
                      add_downsample=i < n - 1, **common)
            for i in range(n)
        )
        rev, rev_heads = channels[::-1], head_dims[::-1]
        self.up_blocks = nn.ModuleList(
            UpBlock(rev[max(j - 1, 0)], rev[min(j + 1, n - 1)], rev[j], num_layers=layers_per_block + 1,
                    attention=_UP_TYPES[up_block_types[j]], head_dim=rev_heads[j],
                    add_upsample=j < n - 1, **common)
            for j in range(n)
        )
        # Registered after the up blocks, as in the official state dict.
        self.mid_block = MidBlock(channels[-1], head_dim=head_dims[-1],
                                  output_scale_factor=mid_block_scale_factor, **common)
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, channels[0], eps=norm_eps)
        self.conv_out = nn.Conv2d(channels[0], out_channels, 3, padding=1)
        # Resolution level (0 = full size) of every resnet, in forward order.
        self._levels = ([i for i in range(n) for _ in range(layers_per_block)] + [n - 1, n - 1]
                        + [n - 1 - j for j in range(n) for _ in range(layers_per_block + 1)])

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> SpadeUNet:
        """Build a (randomly initialised) model from a ``config`` dict."""
        if not isinstance(cfg, dict):
            raise TypeError(f"cfg must be a dict of constructor arguments, got {type(cfg).__name__}")
        return cls(**cfg)

    def set_backend(self, backend: str) -> None:
        """Run every resnet's fused SPADE op on ``backend`` ("auto" or a ``stdiff.ops`` backend)."""
        for resnet in self._spade_resnets():
            resnet.backend = backend

    def _spade_resnets(self) -> list[SpadeResnetBlock]:
        """All resnets in forward order (down, mid, up)."""
        blocks = [*self.down_blocks, self.mid_block, *self.up_blocks]
        return [r for b in blocks for r in b.resnets]

    @property
    def num_resnets(self) -> int:
        """Number of SPADE-conditioned resnets (= len of a SpadeCache)."""
        return len(self._levels)

    def _default_size(self) -> tuple[int, int]:
        s = self.config["sample_size"]
        return (s, s) if isinstance(s, int) else (s[0], s[1])

    def _check_size(self, size: Sequence[int], name: str) -> tuple[int, int]:
        factor = 2 ** (len(self.config["block_out_channels"]) - 1)
        if len(size) != 2 or any(int(s) <= 0 or int(s) % factor for s in size):
            raise ValueError(f"{name}: spatial size must be (H, W) with H and W positive multiples of "
                             f"{factor} (2 ** (num_blocks - 1)), got {tuple(size)}")
        return int(size[0]), int(size[1])

    def compute_spade(self, motion: Tensor, size: Sequence[int] | None = None) -> SpadeCache:
        """SPADE maps of every resnet for samples of spatial ``size`` (default: sample_size).

        motion: (N, m_channels, h, w) floating point, any h, w (nearest-resized to each
        resnet's resolution, as in the official code). Returns a SpadeCache whose pair i has
        shape (N, C_i, H / 2**l_i, W / 2**l_i). Differentiable w.r.t. motion and parameters.
        """
        if not isinstance(motion, Tensor) or motion.dim() != 4 or not motion.is_floating_point():
            raise ValueError(f"motion must be a floating (N, {self.config['m_channels']}, h, w) tensor, got "
                             f"{_describe(motion)}")
        if motion.shape[1] != self.config["m_channels"]:
            raise ValueError(f"motion must have {self.config['m_channels']} channels (m_channels), "
                             f"got shape {tuple(motion.shape)}")
        height, width = self._check_size(self._default_size() if size is None else size, "size")
        resized: dict[int, Tensor] = {}
        pairs = []
        for resnet, level in zip(self._spade_resnets(), self._levels):
            if level not in resized:
                target = (height >> level, width >> level)
                resized[level] = F.interpolate(motion, size=target, mode="nearest")
            pairs.append(resnet.motion_cond_layer(resized[level]))
        return SpadeCache(pairs)

    def _check_cache(self, spade: SpadeCache, sample: Tensor) -> None:
        if not isinstance(spade, SpadeCache):
            raise TypeError(f"spade must be a SpadeCache (from compute_spade), got {type(spade).__name__}")
        if len(spade) != self.num_resnets:
            raise ValueError(f"spade must hold {self.num_resnets} (gamma, beta) pairs, got {len(spade)}")
        n, _, height, width = sample.shape
        for i, ((gamma, beta), resnet, level) in enumerate(zip(spade, self._spade_resnets(), self._levels)):
            expected = (n, resnet.out_channels, height >> level, width >> level)
            if tuple(gamma.shape) != expected or tuple(beta.shape) != expected:
                raise ValueError(
                    f"spade pair {i} must have shape {expected} for a sample of shape {tuple(sample.shape)}, got "
                    f"gamma {tuple(gamma.shape)}, beta {tuple(beta.shape)} (compute_spade(motion, size) for "
                    "another resolution)")

    def _check_sample(self, sample: Tensor) -> None:
        c = self.config["in_channels"]
        if not isinstance(sample, Tensor) or sample.dim() != 4 or not sample.is_floating_point():
            raise ValueError(f"sample must be a floating (N, {c}, H, W) tensor, got {_describe(sample)}")
        if sample.shape[1] != c:
            raise ValueError(f"sample must have {c} channels (in_channels), got shape {tuple(sample.shape)}")
        if sample.shape[0] == 0:
            raise ValueError("sample must have a non-empty batch")
        self._check_size(sample.shape[-2:], "sample")

    def _timesteps(self, timestep: Tensor | float | int, sample: Tensor) -> Tensor:
        """timestep -> (N,) tensor on sample's device."""
        n = sample.shape[0]
        if isinstance(timestep, bool) or not isinstance(timestep, (Tensor, numbers.Real)):
            raise TypeError(f"timestep must be an int, float or tensor, got {type(timestep).__name__}")
        if not isinstance(timestep, Tensor):
            return torch.full((n,), float(timestep), dtype=torch.float32, device=sample.device)
        if timestep.dtype == torch.bool or timestep.is_complex():
            raise TypeError(f"timestep tensor must be integer or floating point, got {timestep.dtype}")
        if timestep.dim() > 1 or timestep.numel() not in (1, n):
            raise ValueError(f"timestep tensor must be 0-d, (1,) or (N,) = ({n},), got shape {tuple(timestep.shape)}")
        return timestep.reshape(-1).to(sample.device).expand(n)

    def forward(
        self,
        sample: Tensor,
        timestep: Tensor | float | int,
        motion: Tensor | None = None,
        spade: SpadeCache | None = None,
    ) -> Tensor:
        """Predict epsilon.

        sample: (N, in_channels, H, W), H and W multiples of 2 ** (num_blocks - 1);
        timestep: int, float, 0-d, (1,) or (N,) tensor (diffusion step, may be fractional);
        at most one of motion: (N, m_channels, h, w) or spade: SpadeCache from
        ``compute_spade(motion, (H, W))`` (batch N). With motion, the cache is computed here
        first, so both paths give identical results. With neither, the UNet runs without motion
        conditioning: every resnet skips SPADE, instance norm included (the official
        ``UNet2DMotionCond(m_feat=None)``; the SPADE parameters stay, unused).
        Returns (N, out_channels, H, W).
        """
        self._check_sample(sample)
        if motion is not None and spade is not None:
            raise ValueError("pass at most one of motion (a tensor) or spade (a SpadeCache)")
        if motion is not None:
            spade = self.compute_spade(motion, sample.shape[-2:])
        if spade is not None:
            self._check_cache(spade, sample)

        t = self._timesteps(timestep, sample)
        t_emb = timestep_embedding(t, self.config["block_out_channels"][0], self.config["flip_sin_to_cos"],
                                   self.config["freq_shift"])
        temb_act = F.silu(self.time_embedding(t_emb.to(self.time_embedding.linear_1.weight.dtype)))

        pairs = spade.pairs if spade is not None else ((None, None),) * self.num_resnets
        k = 0
        x = self.conv_in(sample)
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = block(x, temb_act, pairs[k:k + len(block.resnets)])
            skips += block_skips
            k += len(block.resnets)
        x = self.mid_block(x, temb_act, pairs[k:k + 2])
        k += 2
        for block in self.up_blocks:
            x = block(x, skips, temb_act, pairs[k:k + len(block.resnets)])
            k += len(block.resnets)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


def _describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    return type(x).__name__


def _positive_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0
